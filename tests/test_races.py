"""Concurrent writers on PostgreSQL: the database, not luck, keeps serials unique."""

import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, connections

from marketplace.models import Gpu, Server
from tests.factories import make_owner, make_server

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

THREADS = 8


@pytest.fixture(autouse=True)
def _needs_postgres():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL); CI runs it there")


def test_racing_owners_registering_the_same_serial_exactly_one_wins(catalogue):
    owners = [make_owner() for _ in range(THREADS)]
    barrier = threading.Barrier(THREADS)
    outcomes: list[str] = []
    lock = threading.Lock()

    def register(i: int) -> None:
        try:
            barrier.wait()
            make_server(owners[i], hostname=f"race-{i}", gpu_count=2, serials=[f"UNIQ-{i}", "CONTESTED-SERIAL"])
            result = "ok"
        except ValidationError as exc:
            result = "refused: " + " ".join(exc.messages)
        finally:
            connections.close_all()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert outcomes.count("ok") == 1
    assert all("CONTESTED-SERIAL" in o or "registered by someone else" in o for o in outcomes if o != "ok")
    # the winner's server has both its GPUs; the losers left nothing behind
    assert Gpu.objects.filter(serial="CONTESTED-SERIAL").count() == 1
    assert Server.objects.count() == 1
    assert Gpu.objects.count() == 2
