"""A job's log, followed live or downloaded whole (the job page's "follow" and "download").

``job_log_follow`` yields the current attempt's pod log as the cluster streams it
(``ClusterBackend.logs_stream``, the API server's ``follow=true``), until the
container ends, the cluster stops sending, or ``SCHEDULER_LOG_FOLLOW_SECONDS``
pass (the page then reconnects, or not once the job has finished). It runs
outside any transaction and holds no lock: it only reads the cluster, and its
backend is closed when the stream ends or the client goes away (the iterator
is closed). Under ASGI (uvicorn, what ``make demo`` serves) Django would
collect a synchronous iterator whole before sending it, so
``job_log_follow_async`` runs the same iterator in a thread of its own and
hands each chunk to the event loop as it comes; closing it (the client went
away) stops the thread at its next chunk. ``job_log_download`` is the whole log, cut at
``SCHEDULER_LOG_DOWNLOAD_BYTES`` with a note saying so. Both say in the text,
rather than fail, when there is no attempt yet or the cluster does not answer.
"""

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator

from django.conf import settings
from django.db import connections
from django.utils import timezone

from scheduler.backends import backend_for
from scheduler.backends.base import BackendError
from scheduler.models import Job

NO_ATTEMPT = "(no log yet: the job has not started on a cluster)\n"


def job_log_follow(*, job: Job, follow: bool = True, max_seconds: float | None = None) -> Iterator[bytes]:
    """The current attempt's log in chunks, following it (see the module docstring)."""
    if not job.k8s_name or job.cluster is None:
        yield NO_ATTEMPT.encode()
        return
    limit = settings.SCHEDULER_LOG_FOLLOW_SECONDS if max_seconds is None else max_seconds
    deadline = time.monotonic() + limit
    backend = backend_for(job.cluster, clock=timezone.now)
    stream = None
    try:
        stream = backend.logs_stream(job.namespace, job.k8s_name, follow=follow)
        for chunk in stream:
            if chunk:
                yield chunk
            if time.monotonic() >= deadline:
                yield f"\n(stopped following after {int(limit)} s; reload to go on)\n".encode()
                return
    except BackendError as exc:
        yield f"\n(logs unavailable: {exc})\n".encode()
    finally:
        if stream is not None:
            stream.close()
        backend.close()


def job_log_follow_async(*, job: Job, max_seconds: float | None = None) -> AsyncIterator[bytes]:
    """``job_log_follow`` for an event loop: its chunks, read in a thread of their own."""
    chunks = job_log_follow(job=job, max_seconds=max_seconds)
    return _in_thread(chunks)


async def _in_thread(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                loop.call_soon_threadsafe(queue.put_nowait, chunk)
                if stop.is_set():
                    break
        except Exception as exc:  # handed to the loop, raised there
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            chunks.close()
            connections.close_all()  # this thread's own (the simulated cluster reads the database)
            with contextlib.suppress(RuntimeError):  # the loop may be gone already
                loop.call_soon_threadsafe(queue.put_nowait, done)

    threading.Thread(target=produce, name="job-log-follow", daemon=True).start()
    try:
        while (item := await queue.get()) is not done:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()


def job_log_download(*, job: Job, limit_bytes: int | None = None) -> bytes:
    """The current attempt's whole log, at most ``limit_bytes`` (``SCHEDULER_LOG_DOWNLOAD_BYTES``)."""
    if not job.k8s_name or job.cluster is None:
        return NO_ATTEMPT.encode()
    limit = settings.SCHEDULER_LOG_DOWNLOAD_BYTES if limit_bytes is None else limit_bytes
    backend = backend_for(job.cluster, clock=timezone.now)
    try:
        text = backend.logs_full(job.namespace, job.k8s_name, limit_bytes=limit + 1)
    except BackendError as exc:
        return f"(logs unavailable: {exc})\n".encode()
    finally:
        backend.close()
    if len(text) > limit:
        return text[:limit] + f"\n(cut at {limit} bytes: the log is longer)\n".encode()
    return text
