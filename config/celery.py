"""The Celery application.

Production runs workers and beat on Redis (``CELERY_BROKER_URL``). The embedded
default runs tasks eagerly in-process, so ``make demo`` needs no broker.

A worker or beat names its settings module: without ``DJANGO_SETTINGS_MODULE``
this refuses to load rather than run on the local (DEBUG) settings. Django
itself imports this module (``config/__init__.py``) only once the variable is set.
"""

import os

from celery import Celery
from django.core.exceptions import ImproperlyConfigured

if not os.environ.get("DJANGO_SETTINGS_MODULE"):
    raise ImproperlyConfigured(
        "DJANGO_SETTINGS_MODULE is not set: a server process (web, Celery worker or beat) must name its settings "
        "(config.settings.production in production, config.settings.local for the demo)."
    )

app = Celery("infrafi")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
