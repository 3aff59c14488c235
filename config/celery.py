"""The Celery application.

Production runs workers and beat on Redis (``CELERY_BROKER_URL``). The embedded
default runs tasks eagerly in-process, so ``make demo`` needs no broker.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("infrafi")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
