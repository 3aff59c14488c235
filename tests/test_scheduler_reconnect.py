"""The embedded scheduler survives the database dropping its connection (a restart, a failover,
an idle timeout): the next round opens a fresh connection instead of failing every task."""

import io
import logging

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection


@pytest.mark.django_db(transaction=True)
def test_run_scheduler_reconnects_after_the_database_drops_its_connection(catalogue, caplog):
    # given the scheduler's connection, terminated by the server
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"] or None, port=db["PORT"] or None, user=db["USER"], dbname=db["NAME"], autocommit=True
    ) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])

    # when it runs its periodic tasks
    out = io.StringIO()
    with caplog.at_level(logging.ERROR, logger="core.management.commands.run_scheduler"):
        call_command("run_scheduler", "--once", stdout=out)

    # then none failed: the dropped connection was replaced before the first task
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert "marketplace-expire-pending:" in out.getvalue()
    # … and the terminated connection is gone (the last task, the cache-only heartbeat, may leave none open)
    assert connection.connection is None or connection.connection.info.backend_pid != pid
