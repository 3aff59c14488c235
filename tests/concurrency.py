"""Real races on PostgreSQL: threads started at once, each with its own database connection."""

import threading

from django.core.exceptions import ValidationError
from django.db import connections


def race(threads: int, attempt) -> list[str]:
    """Start ``threads`` threads at once (a barrier), each calling ``attempt(i)``:
    "ok", "refused: <messages>" for a ValidationError, or "error: <type>" for
    anything else (what the view would answer with a 500)."""
    barrier = threading.Barrier(threads)
    outcomes: list[str] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        try:
            barrier.wait()
            attempt(i)
            result = "ok"
        except ValidationError as exc:
            result = "refused: " + " ".join(exc.messages)
        except Exception as exc:  # the outcome under test: what a view would answer with a 500
            result = f"error: {type(exc).__name__}: {exc}"
        finally:
            connections.close_all()
        with lock:
            outcomes.append(result)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return outcomes
