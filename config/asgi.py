"""ASGI entry point, and the way the site is served where the platform's proxy is needed.

``application`` is the platform's proxy (``scheduler.proxy.app.ProxyApp``: ``/proxy/`` and
``/endpoints/``, raw ASGI, streamed) in front of Django's ASGI application for everything else.
Serve it with uvicorn: ``uvicorn config.asgi:application`` (``make demo`` does, on
127.0.0.1:8000); ``manage.py runserver`` (WSGI) serves the site but not the proxy.
Like ``config.wsgi`` it requires ``DJANGO_SETTINGS_MODULE``: a server never falls back to DEBUG.

Static files: production serves them with WhiteNoise (its middleware, in Django's stack, works
under ASGI too). With DEBUG on (the demo), Django's ``ASGIStaticFilesHandler`` serves them from
the finders as ``runserver`` does, so the demo under uvicorn looks the same.
"""

import os

from django.core.asgi import get_asgi_application
from django.core.exceptions import ImproperlyConfigured

if not os.environ.get("DJANGO_SETTINGS_MODULE"):
    raise ImproperlyConfigured(
        "DJANGO_SETTINGS_MODULE is not set: a server process must name its settings "
        "(config.settings.production in production, config.settings.local for the demo)."
    )
django_application = get_asgi_application()  # sets Django up: models can be imported from here

from django.conf import settings  # noqa: E402

if settings.DEBUG and "django.contrib.staticfiles" in settings.INSTALLED_APPS:
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    django_application = ASGIStaticFilesHandler(django_application)

from scheduler.proxy.app import ProxyApp  # noqa: E402

application = ProxyApp(django_application)
