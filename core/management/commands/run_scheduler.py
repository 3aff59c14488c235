"""The embedded mode's stand-in for Celery beat: run the periodic tasks in a loop.

``make demo`` starts it beside the web server. Production runs Celery beat
and workers on Redis with ``CELERY_BEAT_SCHEDULE`` instead.
"""

import logging
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connections
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run the periodic tasks (CELERY_BEAT_SCHEDULE) in-process, forever or --once."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="Run every task once and exit.")
        parser.add_argument("--tick", type=float, default=5.0, help="Seconds between checks.")

    def handle(self, *args, once=False, tick=5.0, **options):
        # name -> (task path, period in seconds)
        schedule = {name: (entry["task"], entry["schedule"]) for name, entry in settings.CELERY_BEAT_SCHEDULE.items()}
        due = dict.fromkeys(schedule, 0.0)
        while True:
            now = time.monotonic()
            for name, (task, every) in schedule.items():
                if once or now >= due[name]:
                    reconnect()
                    try:
                        result = import_string(task).run()
                        self.stdout.write(f"{name}: {result}")
                    except Exception:
                        logger.exception("periodic task %s failed", name)
                    due[name] = now + every
            if once:
                return
            time.sleep(tick)


def reconnect() -> None:
    """What a request cycle does for a web worker: drop database connections that a restart, a
    failover or an idle timeout closed (or that an earlier task left broken), so the next query
    opens a fresh one. Without it one dropped connection fails every task for ever."""
    for connection in connections.all(initialized_only=True):
        if connection.in_atomic_block:  # inside a caller's transaction (a test): not ours to close
            continue
        if connection.connection is not None and not connection.is_usable():
            connection.close()
        connection.close_if_unusable_or_obsolete()  # what close_old_connections() does, per connection
