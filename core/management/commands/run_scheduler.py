"""The embedded mode's stand-in for Celery beat: run the periodic tasks in a loop.

``make demo`` starts it beside the web server. Production runs Celery beat
and workers on Redis with ``CELERY_BEAT_SCHEDULE`` instead.
"""

import logging
import time

from django.conf import settings
from django.core.management.base import BaseCommand
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
                    try:
                        result = import_string(task).run()
                        self.stdout.write(f"{name}: {result}")
                    except Exception:
                        logger.exception("periodic task %s failed", name)
                    due[name] = now + every
            if once:
                return
            time.sleep(tick)
