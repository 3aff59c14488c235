"""Production: every secret comes from the environment, with no default.

Importing this module without ``DJANGO_SECRET_KEY``, ``DATABASE_URL``,
``REDIS_URL`` or ``TRUSTED_PROXY_COUNT`` raises ``ImproperlyConfigured``, so a
misconfigured deployment refuses to start: without the shared cache every worker
counts lockouts, throttles and used TOTP codes on its own; without the proxy
count the per-address limits see the proxy's address (one bucket for everyone)
or trust a forged X-Forwarded-For.
"""

from config.settings.base import *  # noqa: F403
from config.settings.base import env

DEBUG = False
SECRET_KEY = env("DJANGO_SECRET_KEY")
DATABASES = {"default": env.db("DATABASE_URL")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS")

# Required: base.py builds the shared Redis cache from it.
REDIS_URL = env("REDIS_URL")
ALLAUTH_TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT")
REST_FRAMEWORK = {**REST_FRAMEWORK, "NUM_PROXIES": ALLAUTH_TRUSTED_PROXY_COUNT}  # noqa: F405

CELERY_BROKER_URL = env("CELERY_BROKER_URL")
SCHEDULER_ENCRYPTION_KEYS = env.list("SCHEDULER_ENCRYPTION_KEYS")
CHAIN_RPC_URL = env("CHAIN_RPC_URL")
CHAIN_SIGNER_KEY = env("CHAIN_SIGNER_KEY")
CHAIN_CUSTODY_SEED = env("CHAIN_CUSTODY_SEED")
CELERY_TASK_ALWAYS_EAGER = False

EMAIL_BACKEND = env("DJANGO_EMAIL_BACKEND", default="django.core.mail.backends.smtp.EmailBackend")
EMAIL_URL = env.email_url("EMAIL_URL", default="smtp://localhost:25")
EMAIL_HOST = EMAIL_URL["EMAIL_HOST"]
EMAIL_PORT = EMAIL_URL["EMAIL_PORT"]
EMAIL_HOST_USER = EMAIL_URL["EMAIL_HOST_USER"]
EMAIL_HOST_PASSWORD = EMAIL_URL["EMAIL_HOST_PASSWORD"]
EMAIL_USE_TLS = EMAIL_URL.get("EMAIL_USE_TLS", False)

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
# Load balancers and Prometheus probe these over plain HTTP inside the network (config.health).
SECURE_REDIRECT_EXEMPT = [r"^(healthz|readyz|metrics)$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=60)
SECURE_CONTENT_TYPE_NOSNIFF = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# Static files are served by the app itself behind the proxy.
MIDDLEWARE = [MIDDLEWARE[0], "whitenoise.middleware.WhiteNoiseMiddleware", *MIDDLEWARE[1:]]  # noqa: F405
