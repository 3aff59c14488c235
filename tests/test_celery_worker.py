"""The periodic booking task run by a real Celery worker through Redis, on PostgreSQL."""

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery
from django.db import connection

from marketplace.models import Booking
from marketplace.services import bookings
from tests.factories import make_listing, make_owner, make_renter, next_hour

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parent.parent
REDIS = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0] + "/14"


@pytest.fixture
def worker():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL): the worker is another process")
    settings = connection.settings_dict
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=f"postgres://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/{settings['NAME']}",
        CELERY_BROKER_URL=REDIS,
        CELERY_RESULT_BACKEND=REDIS,
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "--loglevel=WARNING",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=ROOT,
        env=env,
    )
    client = Celery(broker=REDIS, backend=REDIS)
    try:
        yield client
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_worker_expires_an_unpaid_hold(catalogue, worker):
    listing = make_listing(make_owner(), gpu_count=2)
    start = next_hour(2)
    booking = bookings.booking_create(
        renter=make_renter(), listing=listing, gpu_count=2, start=start, end=start + timedelta(hours=1)
    )
    Booking.objects.filter(pk=booking.pk).update(expires_at=booking.created_at - timedelta(minutes=1))

    result = worker.send_task("marketplace.tasks.bookings_tick").get(timeout=60)

    assert result == {"expired": 1, "started": 0, "completed": 0}
    booking.refresh_from_db()
    assert booking.status == Booking.Status.EXPIRED
    assert not booking.allocations.filter(held=True).exists()
