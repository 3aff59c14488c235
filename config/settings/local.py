"""Embedded mode (``make demo``): SQLite, console e-mail, eager tasks, DEBUG on.

Every value can still be overridden from the environment.
"""

from config.settings.base import *  # noqa: F403
from config.settings.base import env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
# A fixed key is acceptable only in the embedded mode; production.py refuses to
# start without DJANGO_SECRET_KEY.
SECRET_KEY = env("DJANGO_SECRET_KEY", default="embedded-demo-key-not-for-production-use-0123456789")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
