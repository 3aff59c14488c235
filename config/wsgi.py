"""WSGI entry point (gunicorn in production: ``Procfile.prod``).

A server process names its settings module: without ``DJANGO_SETTINGS_MODULE`` it refuses to start rather than
serve the local (DEBUG) settings to the world. ``manage.py`` alone defaults to them, for developer commands.
"""

import os

from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

if not os.environ.get("DJANGO_SETTINGS_MODULE"):
    raise ImproperlyConfigured(
        "DJANGO_SETTINGS_MODULE is not set: a server process must name its settings "
        "(config.settings.production in production, config.settings.local for the demo)."
    )
application = get_wsgi_application()
