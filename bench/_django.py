"""Set Django up on a throw-away test database for a benchmark run."""

import os
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager


@contextmanager
def test_database():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    # One client at machine speed on purpose: the code path is measured, not the API throttle.
    os.environ.setdefault("API_THROTTLE_USER", "1000000/min")
    os.environ.setdefault("API_THROTTLE_ANON", "1000000/min")
    import django

    django.setup()
    from django.db import connection
    from django.test.utils import setup_test_environment, teardown_test_environment

    setup_test_environment()
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        yield connection
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        teardown_test_environment()


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(samples), 2)
