"""Settings shared by every mode, read from the environment (12-factor).

Each setting has a safe default for the embedded mode (``make demo``) except
production secrets, which ``production.py`` requires without a default.
"""

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import environ
from csp.constants import NONE, SELF, UNSAFE_INLINE

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
# An optional .env file for local overrides; never committed.
env_file = BASE_DIR / ".env"
if env_file.exists():
    environ.Env.read_env(str(env_file))

DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# --- Database: SQLite file by default, PostgreSQL through DATABASE_URL.
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE transactions take SQLite's write lock at BEGIN, so the booking
    # service's overlap check and its insert cannot interleave with another writer.
    DATABASES["default"].setdefault("OPTIONS", {})["transaction_mode"] = "IMMEDIATE"
    DATABASES["default"]["OPTIONS"].setdefault("timeout", 20)
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache: login lockouts, API throttles and used TOTP codes live here, so every
# worker must see the same one: Redis through REDIS_URL. Without it (the embedded
# demo, one process) a per-process LocMem cache.
REDIS_URL = env("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "infrafi",
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "rest_framework",
    "knox",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "drf_standardized_errors",
    "django_prometheus",
    "core",
    "accounts",
    "marketplace",
    "financing",
    "scheduler",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "core.middleware.RejectNulBytesMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "core.middleware.NoStoreForSignedInMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

# Content-Security-Policy (django-csp) on every response. No inline script anywhere (event
# handlers are in static/js/site.js); style="" attributes stay (progress bars, spacing), so
# style-src-attr alone allows them. With the Stripe gateway, the card pages (checkout, billing,
# the USDai wallet) load Stripe.js, the one outside script: those responses alone add its origin
# to script-src and frame-src and Stripe's API to connect-src (marketplace.payments.stripe_js);
# the offline gateway loads none and every page keeps this policy. The API docs (Swagger UI,
# Redoc) run their inline script and style under a per-response nonce (config/urls.py,
# templates/drf_spectacular/).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "style-src-attr": [UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "frame-ancestors": [NONE],
    },
}

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.roles",
            ],
        },
    },
]

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]

# --- Accounts (django-allauth): e-mail login, mandatory verification, TOTP.
SITE_NAME = "InfraFi"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "home"
LOGIN_URL = "account_login"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = env("ACCOUNT_EMAIL_VERIFICATION", default="mandatory")
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_SIGNUP_FORM_CLASS = "accounts.forms.SignupRolesForm"
ACCOUNT_ADAPTER = "accounts.adapter.AccountAdapter"
ACCOUNT_LOGOUT_ON_GET = False
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = "InfraFi"
# Accept one 30-second step of clock drift either way (RFC 6238 §6).
MFA_TOTP_TOLERANCE = 1
# Failed logins: wrong passwords on the login form and on the API token endpoint, and
# wrong TOTP codes on the endpoint, share one count per account (allauth's form counts
# its TOTP step per user, apart). At most 10 a minute from one address and 5 per account
# in 5 minutes; then the account is locked (429 on the API) until the window passes.
ACCOUNT_RATE_LIMITS = {"login_failed": env("ACCOUNT_LOGIN_FAILED_RATE", default="10/m/ip,5/5m/key")}
# How many reverse proxies set X-Forwarded-For in front of the app: 0 (embedded) takes
# REMOTE_ADDR; behind one proxy, 1. allauth's and DRF's per-address limits both use it.
ALLAUTH_TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)

EMAIL_BACKEND = env("DJANGO_EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env("DJANGO_DEFAULT_FROM_EMAIL", default="InfraFi <noreply@infrafi.local>")

# --- REST API.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first, so an anonymous request gets 401 with a WWW-Authenticate header.
        "accounts.permissions.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # TokenScope: a token changes something only with the view's ``token_scope``; a session is unaffected.
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated", "accounts.permissions.TokenScope"],
    # JSON nested deeper than core.parsers.JSON_MAX_DEPTH is a 400, before it reaches the decoder.
    # JSON only (the CSV import view takes multipart itself); no browsable API.
    "DEFAULT_PARSER_CLASSES": ["core.parsers.BoundedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    # Errors in one shape, documented per operation (DRF_STANDARDIZED_ERRORS below).
    "DEFAULT_SCHEMA_CLASS": "core.api.AutoSchema",
    "EXCEPTION_HANDLER": "drf_standardized_errors.handler.exception_handler",
    # Per address (anonymous) or per user, in the shared cache; the token endpoint
    # (a password guess per request) has its own, stricter scope.
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env("API_THROTTLE_ANON", default="60/min"),
        "user": env("API_THROTTLE_USER", default="600/min"),
        "token": env("API_THROTTLE_TOKEN", default="10/min"),
    },
    "NUM_PROXIES": env.int("TRUSTED_PROXY_COUNT", default=0),
}
# One error body for every status the API documents (core.api.ErrorResponseSerializer).
API_ERROR_STATUS_CODES = ["400", "401", "403", "404", "405", "406", "415", "429", "500"]
DRF_STANDARDIZED_ERRORS = {
    "EXCEPTION_HANDLER_CLASS": "core.api.ExceptionHandler",
    "EXCEPTION_FORMATTER_CLASS": "core.api.ExceptionFormatter",
    "ALLOWED_ERROR_STATUS_CODES": API_ERROR_STATUS_CODES,
    "ERROR_SCHEMAS": dict.fromkeys(API_ERROR_STATUS_CODES, "core.api.ErrorResponseSerializer"),
}
# API tokens (django-rest-knox, model accounts.ApiToken): only a digest is stored; each
# expires within API_TOKEN_TTL_DAYS (the user may choose fewer); at most
# API_TOKEN_LIMIT_PER_USER live tokens per user. Clients send "Authorization: Token <token>".
API_TOKEN_TTL_DAYS = env.int("API_TOKEN_TTL_DAYS", default=90)
API_TOKEN_LIMIT_PER_USER = env.int("API_TOKEN_LIMIT_PER_USER", default=20)
KNOX_TOKEN_MODEL = "accounts.ApiToken"
REST_KNOX = {
    "TOKEN_MODEL": KNOX_TOKEN_MODEL,
    "TOKEN_TTL": timedelta(days=API_TOKEN_TTL_DAYS),
    "AUTH_HEADER_PREFIX": "Token",
    # Recognisable by secret scanners; knox keeps prefix + 11 characters as token_key.
    "TOKEN_PREFIX": "ifi_",
    "AUTO_REFRESH": False,
}
# knox's own migrations create its stock token table even when the model is swapped out
# (they predate ``swappable``): a table nobody uses, with a foreign key that stops the
# test database's flush. The swapped model needs no table, so knox runs no migrations.
MIGRATION_MODULES = {"knox": None}
SPECTACULAR_SETTINGS = {
    "TITLE": "InfraFi API",
    "DESCRIPTION": "GPU compute marketplace, GPU-collateralised loans and the sUSDai vault.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Operation ids without the version ("bookings_list"), so a generated client's names read well.
    "SCHEMA_PATH_PREFIX": r"/api/v[0-9]+",
    "ENUM_NAME_OVERRIDES": {
        "GpuStatusEnum": "marketplace.models.Gpu.Status",
        "ListingStatusEnum": "marketplace.models.Listing.Status",
        "BookingStatusEnum": "marketplace.models.Booking.Status",
        "ClusterKindEnum": "scheduler.models.Cluster.Kind",
        "ClusterHealthEnum": "scheduler.models.Cluster.Health",
        "ErrorTypeEnum": "core.api.ErrorType",
        "WalletOperationKindEnum": "financing.models.WalletOperation.Kind",
        "WalletOperationStatusEnum": "financing.models.WalletOperation.Status",
        "OwnWalletCallKindEnum": "financing.api_wallets.CALL_KINDS",
    },
    "TAGS": [
        {"name": "auth", "description": "Who you are; API tokens."},
        {"name": "inventory", "description": "The GPU catalogue and regions; an owner's servers and GPUs."},
        {"name": "listings", "description": "Search, public listings and calendars; an owner's listings."},
        {"name": "bookings", "description": "A renter's bookings, usage reports, an owner's earnings."},
        {"name": "jobs", "description": "A renter's jobs on their bookings."},
        {"name": "clusters", "description": "An owner's Kubernetes clusters and their nodes."},
        {"name": "wallet", "description": "The USDai wallet."},
        {"name": "vault", "description": "The sUSDai vault: deposits, redemptions, history."},
        {"name": "loans", "description": "GPU-collateralised loans: borrowing limits, applications."},
        {"name": "proofs", "description": "Proof of revenue for settlements (public)."},
    ],
}

# --- Background work (Celery). Embedded default: eager, in-process.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="memory://")
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default=None)
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=True)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1

# --- Domain settings.
# Where seed_demo reads the Alibaba node list; a copy ships with the project.
DEMO_NODE_LIST = env.path(
    "DEMO_NODE_LIST", default=str(BASE_DIR / "marketplace" / "data" / "openb_node_list_gpu_node.csv")
)
# Largest CSV import accepted, in rows.
INVENTORY_IMPORT_MAX_ROWS = env.int("INVENTORY_IMPORT_MAX_ROWS", default=5000)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("DJANGO_LOG_LEVEL", default="INFO")},
    # The Stripe SDK logs every request at INFO.
    "loggers": {
        "stripe": {"level": "WARNING"},
        "django.request": {"level": env("DJANGO_LOG_LEVEL", default="INFO")},
    },
}

# The admin lives at a configurable path (operators only).
ADMIN_URL = env("DJANGO_ADMIN_URL", default="admin/")

# --- Payments. "offline" settles at once (embedded demo, labelled as test
# payments); "stripe" needs STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET.
PAYMENT_GATEWAY = env("PAYMENT_GATEWAY", default="offline")
PAYMENT_GATEWAYS = {
    "offline": "marketplace.payments.offline.OfflineGateway",
    "stripe": "marketplace.payments.stripe_gateway.StripeGateway",
    "usdai": "marketplace.payments.usdai.UsdaiGateway",
}
STRIPE_SECRET_KEY = env("STRIPE_SECRET_KEY", default="")
STRIPE_WEBHOOK_SECRET = env("STRIPE_WEBHOOK_SECRET", default="")
# A Stripe-compatible server (e.g. localstripe in tests); empty means Stripe itself.
STRIPE_API_BASE = env("STRIPE_API_BASE", default="")
# Stripe.js in the browser (card Elements, 3-D Secure): the publishable key, and where the script
# is loaded from (Stripe requires js.stripe.com; tests load localstripe's own copy). The pages that
# load it add its origin, and the API's, to their Content-Security-Policy (marketplace.payments.stripe_js).
STRIPE_PUBLISHABLE_KEY = env("STRIPE_PUBLISHABLE_KEY", default="")
STRIPE_JS_URL = env("STRIPE_JS_URL", default="https://js.stripe.com/v3/")
STRIPE_TIMEOUT_SECONDS = env.int("STRIPE_TIMEOUT_SECONDS", default=20)
# The payments sweep reads back from the gateway a payment still pending after this long (a worker
# that died after the charge), and stops at the maximum age (the hold has expired by then).
PAYMENT_SWEEP_AFTER_MINUTES = env.int("PAYMENT_SWEEP_AFTER_MINUTES", default=10)
PAYMENT_SWEEP_MAX_AGE_HOURS = env.int("PAYMENT_SWEEP_MAX_AGE_HOURS", default=24)
# The money reconciler (hourly): a refund still pending after this long is a mismatch, and the
# charges captured at the gateway over this many hours back are matched to bookings and purchases.
MONEY_RECONCILE_REFUND_PENDING_MINUTES = env.int("MONEY_RECONCILE_REFUND_PENDING_MINUTES", default=60)
MONEY_RECONCILE_CHARGES_HOURS = env.int("MONEY_RECONCILE_CHARGES_HOURS", default=48)

# --- Invoices. The seller named on renters' invoices, and VAT. Prices are VAT-inclusive: what a
# renter pays for a booking never changes; the invoice shows the VAT contained in it
# (marketplace.selectors.bookings.booking_invoice documents the rule). Rates in percent by
# ISO country code; a buyer in an EU country other than the seller's with a VAT id is reverse
# charged, one outside the EU is outside the scope of EU VAT.
INVOICE_SELLER_NAME = env("INVOICE_SELLER_NAME", default="InfraFi Demo Ltd")
INVOICE_SELLER_ADDRESS = env("INVOICE_SELLER_ADDRESS", default="1 Example Street\nDublin D02 XY00\nIreland")
INVOICE_SELLER_COUNTRY = env("INVOICE_SELLER_COUNTRY", default="IE")
INVOICE_SELLER_VAT_ID = env("INVOICE_SELLER_VAT_ID", default="IE1234567T")
INVOICE_VAT_RATES = {
    "AT": "20", "BE": "21", "BG": "20", "CY": "19", "CZ": "21", "DE": "19", "DK": "25", "EE": "24",
    "ES": "21", "FI": "25.5", "FR": "20", "GR": "24", "HR": "25", "HU": "27", "IE": "23", "IT": "22",
    "LT": "21", "LU": "17", "LV": "21", "MT": "18", "NL": "21", "PL": "23", "PT": "23", "RO": "19",
    "SE": "25", "SI": "22", "SK": "23",
}  # fmt: skip

# --- Bookings.
BOOKING_PAYMENT_HOLD_MINUTES = env.int("BOOKING_PAYMENT_HOLD_MINUTES", default=15)
# How far ahead a booking may end, and how far ahead weekly availability is expanded.
BOOKING_HORIZON_DAYS = env.int("BOOKING_HORIZON_DAYS", default=90)
# A booking is closed (undelivered time refunded) this long after its end, so
# that the scheduler's last usage report for it arrives first.
BOOKING_USAGE_GRACE_SECONDS = env.int("BOOKING_USAGE_GRACE_SECONDS", default=120)
# --- API: how long an Idempotency-Key is remembered (Stripe keeps them 24 h); then it is new.
IDEMPOTENCY_KEY_TTL_HOURS = env.int("IDEMPOTENCY_KEY_TTL_HOURS", default=24)
CELERY_BEAT_SCHEDULE = {
    "financing-ledger-pull": {"task": "financing.tasks.ledger_pull", "schedule": 60.0},
    "financing-appraisals": {"task": "financing.tasks.appraisals_daily", "schedule": 24 * 3600.0},
    "financing-loans-service": {"task": "financing.tasks.loans_service", "schedule": 3600.0},
    "marketplace-expire-pending": {"task": "marketplace.tasks.bookings_tick", "schedule": 60.0},
    "marketplace-extend-availability": {"task": "marketplace.tasks.availability_extend", "schedule": 24 * 3600.0},
    "marketplace-retry-refunds": {"task": "marketplace.tasks.refunds_retry", "schedule": 300.0},
    "marketplace-retry-webhooks": {"task": "marketplace.tasks.webhooks_retry", "schedule": 300.0},
    "marketplace-sweep-payments": {"task": "marketplace.tasks.payments_sweep", "schedule": 180.0},
    "scheduler-tick": {
        "task": "scheduler.tasks.jobs_tick",  # fans out one task per cluster
        "schedule": env.float("SCHEDULER_TICK_SECONDS", default=15.0),
        "options": {"expires": env.int("SCHEDULER_TICK_EXPIRES_SECONDS", default=15)},
    },
    "scheduler-node-sync": {"task": "scheduler.tasks.clusters_sync", "schedule": 300.0},
    "financing-chain-send": {"task": "financing.tasks.chain_send", "schedule": 5.0},
    "financing-vault-service": {"task": "financing.tasks.vault_service", "schedule": 60.0},
    "financing-epoch-close": {"task": "financing.tasks.epoch_close", "schedule": 3600.0},
    "financing-vault-daily": {"task": "financing.tasks.vault_daily", "schedule": 24 * 3600.0},
    "financing-chain-reconcile": {"task": "financing.tasks.chain_reconcile", "schedule": 3600.0},
    "financing-money-reconcile": {"task": "financing.tasks.money_reconcile", "schedule": 3600.0},
    "financing-usdai-purchases-sweep": {"task": "financing.tasks.usdai_purchases_sweep", "schedule": 120.0},
    "financing-chain-watch": {"task": "financing.tasks.chain_watch", "schedule": 15.0},
    # Creates the run of the last complete ISO week once (idempotent), so hourly is enough.
    "financing-payouts-weekly": {"task": "financing.tasks.payouts_weekly", "schedule": 3600.0},
    "core-idempotency-keys-purge": {"task": "core.tasks.idempotency_keys_purge_expired", "schedule": 3600.0},
    "core-celery-heartbeat": {"task": "core.tasks.celery_heartbeat", "schedule": 30.0, "options": {"expires": 25}},
}
# /readyz (config.health) fails once the heartbeat above is older than this; /metrics asks for
# "Authorization: Bearer <METRICS_TOKEN>" when it is set (empty: open, as in the embedded demo).
READINESS_HEARTBEAT_SECONDS = env.int("READINESS_HEARTBEAT_SECONDS", default=180)
METRICS_TOKEN = env("METRICS_TOKEN", default="")

# --- Financing: the waterfall's rates (fractions of each settlement's gross).
WATERFALL_PLATFORM_FEE = Decimal(env("WATERFALL_PLATFORM_FEE", default="0.05"))
WATERFALL_INSURANCE = Decimal(env("WATERFALL_INSURANCE", default="0.01"))
WATERFALL_SWEEP_SHARE = Decimal(env("WATERFALL_SWEEP_SHARE", default="0.50"))
WATERFALL_DSCR_TARGET = Decimal(env("WATERFALL_DSCR_TARGET", default="1.25"))
# The placement engine (scheduler/engine.py): a full rebuild from the database this often, as a safety
# net beside the change feed; the loans' collateral needs re-read this often.
PLACEMENT_REBUILD_SECONDS = env.int("PLACEMENT_REBUILD_SECONDS", default=300)
PLACEMENT_NEEDS_REFRESH_SECONDS = env.int("PLACEMENT_NEEDS_REFRESH_SECONDS", default=60)

# --- Financing: owner payouts (weekly runs; SEPA pain.001 files or USDai on chain).
# Below the minimum a balance is carried to a later run. SEPA pays EUR: the books are USD,
# so each SEPA line is converted at PAYOUT_USD_EUR_RATE (EUR per USD, rounded half-up to the
# cent) and both amounts are shown. The debtor defaults are a public test account (embedded demo).
PAYOUT_MINIMUM_USD = Decimal(env("PAYOUT_MINIMUM_USD", default="50"))
PAYOUT_USD_EUR_RATE = Decimal(env("PAYOUT_USD_EUR_RATE", default="0.92"))
PAYOUT_DEBTOR_NAME = env("PAYOUT_DEBTOR_NAME", default="InfraFi Test Platform")
PAYOUT_DEBTOR_IBAN = env("PAYOUT_DEBTOR_IBAN", default="DE02120300000000202051")
PAYOUT_DEBTOR_BIC = env("PAYOUT_DEBTOR_BIC", default="BYLADEM1001")
PAYOUT_DEBTOR_COUNTRY = env("PAYOUT_DEBTOR_COUNTRY", default="DE")

# --- Financing: appraisal and loan limits.
APPRAISAL_DEPRECIATION_RATE = Decimal(env("APPRAISAL_DEPRECIATION_RATE", default="0.20"))  # a year, declining balance
APPRAISAL_RESIDUAL_FLOOR = Decimal(env("APPRAISAL_RESIDUAL_FLOOR", default="0.10"))  # of the purchase price
APPRAISAL_USEFUL_LIFE_YEARS = Decimal(env("APPRAISAL_USEFUL_LIFE_YEARS", default="5"))
APPRAISAL_DISCOUNT_RATE = Decimal(env("APPRAISAL_DISCOUNT_RATE", default="0.12"))  # a year
# Depreciation per GPU model (a key matches a model whose name contains it; the rate above is
# the default): flagship training parts lose value fastest as each generation arrives, the
# previous generation and inference parts have had their steepest fall already.
APPRAISAL_DEPRECIATION_RATES = env.dict(
    "APPRAISAL_DEPRECIATION_RATES",
    cast={"value": Decimal},
    default={
        "B200": Decimal("0.20"),
        "H200": Decimal("0.20"),
        "H100": Decimal("0.20"),
        "A100": Decimal("0.15"),
        "L40S": Decimal("0.15"),
    },
)
# The forward income of hardware without a rental record (financing.appraisal): the model's
# going rate on the marketplace (these reference rates per GPU-hour when no other owner lists
# the model), × the platform's trailing utilisation for the model, at most the cap (the default
# when the model has fewer GPU-hours on the market than the minimum), net of the platform fee,
# insurance and the operating cost of every hour.
APPRAISAL_REFERENCE_RATES = env.dict(
    "APPRAISAL_REFERENCE_RATES",
    cast={"value": Decimal},
    default={
        "B200": Decimal("4.50"),
        "H200": Decimal("3.00"),
        "H100": Decimal("2.20"),
        "A100": Decimal("1.30"),
        "L40S": Decimal("0.85"),
    },
)
APPRAISAL_UTILISATION_CAP = Decimal(env("APPRAISAL_UTILISATION_CAP", default="0.60"))
APPRAISAL_UTILISATION_DEFAULT = Decimal(env("APPRAISAL_UTILISATION_DEFAULT", default="0.40"))
APPRAISAL_UTILISATION_MIN_GPU_HOURS = Decimal(env("APPRAISAL_UTILISATION_MIN_GPU_HOURS", default="2160"))
# Power (with cooling) and hosting per GPU-hour, by model: a T4 draws a tenth of a B200. Models
# not in the table take the default, a flagship's cost.
APPRAISAL_OPEX_PER_GPU_HOUR = Decimal(env("APPRAISAL_OPEX_PER_GPU_HOUR", default="0.25"))
APPRAISAL_OPEX_RATES = env.dict(
    "APPRAISAL_OPEX_RATES",
    cast={"value": Decimal},
    default={
        "B200": Decimal("0.35"),
        "H200": Decimal("0.25"),
        "H100": Decimal("0.25"),
        "A100": Decimal("0.15"),
        "L40S": Decimal("0.12"),
        "V100": Decimal("0.10"),
        "P100": Decimal("0.09"),
        "A10": Decimal("0.06"),
        "T4": Decimal("0.04"),
    },
)
LOAN_MAX_LTV = Decimal(env("LOAN_MAX_LTV", default="0.75"))  # at origination
LOAN_MAINTENANCE_LTV = Decimal(env("LOAN_MAINTENANCE_LTV", default="0.85"))  # margin call above this
LOAN_APR = Decimal(env("LOAN_APR", default="0.15"))
LOAN_MIN_PRINCIPAL = Decimal(env("LOAN_MIN_PRINCIPAL", default="1000.00"))
# Projected DSCR at application: the appraisal's net income a month over the schedule's largest
# payment. Refused below the minimum, warned below the warning level.
LOAN_MIN_DSCR = Decimal(env("LOAN_MIN_DSCR", default="1.00"))
LOAN_WARN_DSCR = Decimal(env("LOAN_WARN_DSCR", default="1.25"))
LOAN_PROTOCOL_FEE = Decimal(env("LOAN_PROTOCOL_FEE", default="0.10"))  # of interest collected
LOAN_RESERVE_MONTHS = env.int("LOAN_RESERVE_MONTHS", default=3)
LOAN_GRACE_DAYS = env.int("LOAN_GRACE_DAYS", default=5)
LOAN_GRACE_APR = Decimal(env("LOAN_GRACE_APR", default="0.05"))  # extra, on principal overdue past the grace period
LOAN_DEFAULT_DPD = env.int("LOAN_DEFAULT_DPD", default=60)
# Loss recognition (financing.services.losses): the share of a loan's expected loss provided
# for from so many days past due (all of it from default), and the haircut on the hardware's
# appraised value that gives its recovery value.
LOAN_IMPAIRMENT_STEPS = ((30, Decimal("0.25")),)
LOAN_RECOVERY_HAIRCUT = Decimal(env("LOAN_RECOVERY_HAIRCUT", default="0.30"))
# First-loss capital earns this a year on what was posted, as a share of the loan's interest.
FIRST_LOSS_PREMIUM_APR = Decimal(env("FIRST_LOSS_PREMIUM_APR", default="0.20"))
PROTOCOL_OWNER_NAME = env("PROTOCOL_OWNER_NAME", default="InfraFi Protocol")

# --- Scheduler.
# Fernet keys (comma-separated, newest first) encrypting kubeconfigs and job
# environments at rest. Empty: a key derived from SECRET_KEY (embedded mode
# only; production requires SCHEDULER_ENCRYPTION_KEYS).
SCHEDULER_ENCRYPTION_KEYS = env.list("SCHEDULER_ENCRYPTION_KEYS", default=[])
SCHEDULER_KUBE_TIMEOUT_SECONDS = env.float("SCHEDULER_KUBE_TIMEOUT_SECONDS", default=10.0)
SCHEDULER_KUBE_RETRIES = env.int("SCHEDULER_KUBE_RETRIES", default=3)
# How long a tick reads a watch of Jobs or pods once it has gone quiet (what comes later is the next
# tick's, from the newest resourceVersion read): scheduler.services.cluster_tick.
SCHEDULER_WATCH_SECONDS = env.float("SCHEDULER_WATCH_SECONDS", default=0.5)
# Hosts (names or addresses) whose API servers may be private, loopback or link-local. Empty in
# production: an operator allows one cluster at a time in the admin (Cluster.private_network_allowed).
SCHEDULER_ALLOWED_PRIVATE_HOSTS = env.list("SCHEDULER_ALLOWED_PRIVATE_HOSTS", default=[])
SCHEDULER_JOB_TTL_SECONDS = env.int("SCHEDULER_JOB_TTL_SECONDS", default=3600)
# Pods on clusters without user namespaces run as this user and group (and fsGroup), with runAsNonRoot.
SCHEDULER_RUN_AS_USER = env.int("SCHEDULER_RUN_AS_USER", default=1000)
# The first Kubernetes version (major.minor) whose pods get user namespaces (hostUsers: false); on by
# default from 1.33. A deployment whose clusters enable the UserNamespacesSupport gate may lower it to 1.30.
SCHEDULER_USER_NAMESPACES_FROM = tuple(
    int(part) for part in env("SCHEDULER_USER_NAMESPACES_FROM", default="1.33").split(".")[:2]
)
# The simulated cluster: seconds from creation until a pod runs.
SCHEDULER_SIM_START_SECONDS = env.int("SCHEDULER_SIM_START_SECONDS", default=5)
# Usage of a running job is reported at most this often (and at its end).
SCHEDULER_METER_SECONDS = env.int("SCHEDULER_METER_SECONDS", default=300)
# Each interruption moves a listing's reliability this share of the way to 0;
# each job that runs to its end moves it this share of the way to 1.
SCHEDULER_RELIABILITY_PENALTY = Decimal(env("SCHEDULER_RELIABILITY_PENALTY", default="0.05"))
SCHEDULER_RELIABILITY_RECOVERY = Decimal(env("SCHEDULER_RELIABILITY_RECOVERY", default="0.01"))
# The platform's proxy (scheduler.proxy, served by config.asgi): a verified API token, and an
# endpoint's route or a session's job/port decision, are cached in-process this long; endpoint
# statistics are written every PROXY_STATS_FLUSH_SECONDS; a cluster's pooled client is rebuilt
# (its API server's address resolved and checked again) after PROXY_CLIENT_TTL_SECONDS.
PROXY_TOKEN_CACHE_SECONDS = env.float("PROXY_TOKEN_CACHE_SECONDS", default=30.0)
PROXY_ROUTE_CACHE_SECONDS = env.float("PROXY_ROUTE_CACHE_SECONDS", default=2.0)
PROXY_STATS_FLUSH_SECONDS = env.float("PROXY_STATS_FLUSH_SECONDS", default=5.0)
PROXY_CLIENT_TTL_SECONDS = env.float("PROXY_CLIENT_TTL_SECONDS", default=300.0)
PROXY_CONNECT_TIMEOUT_SECONDS = env.float("PROXY_CONNECT_TIMEOUT_SECONDS", default=5.0)
PROXY_CONNECTIONS_PER_CLUSTER = env.int("PROXY_CONNECTIONS_PER_CLUSTER", default=200)
# The scheduler's tick (scheduler.tasks): beat fans out one task per cluster every TICK seconds; a task
# still queued after EXPIRES is dropped; a cluster's tick is stopped after SOFT (then killed at HARD).
SCHEDULER_TICK_SECONDS = env.float("SCHEDULER_TICK_SECONDS", default=15.0)
SCHEDULER_TICK_EXPIRES_SECONDS = env.int("SCHEDULER_TICK_EXPIRES_SECONDS", default=15)
SCHEDULER_CLUSTER_TICK_SOFT_SECONDS = env.int("SCHEDULER_CLUSTER_TICK_SOFT_SECONDS", default=60)
SCHEDULER_CLUSTER_TICK_HARD_SECONDS = env.int("SCHEDULER_CLUSTER_TICK_HARD_SECONDS", default=90)
# A followed job log (/jobs/<id>/logs/stream) ends after this long (the page reconnects); a
# downloaded one (/jobs/<id>/logs.txt) is cut at this many bytes, with a note.
SCHEDULER_LOG_FOLLOW_SECONDS = env.int("SCHEDULER_LOG_FOLLOW_SECONDS", default=600)
SCHEDULER_LOG_DOWNLOAD_BYTES = env.int("SCHEDULER_LOG_DOWNLOAD_BYTES", default=10 * 1024 * 1024)

# The ledger's covering index (INCLUDE amount) serves balances on PostgreSQL;
# SQLite builds it without the included column, which is fine for the demo.
SILENCED_SYSTEM_CHECKS = ["models.W040"]

# --- Chain: the embedded in-process EVM by default, or any JSON-RPC endpoint.
CHAIN_RPC_URL = env("CHAIN_RPC_URL", default="")
CHAIN_RPC_TIMEOUT_SECONDS = env.float("CHAIN_RPC_TIMEOUT_SECONDS", default=10.0)
# The protocol operator's key (deployer, minter, registrar, loan manager, vault operator).
# The embedded default is a throwaway development key; production requires its own.
CHAIN_SIGNER_KEY = env("CHAIN_SIGNER_KEY", default="0x" + "4f" * 32)
# Custodial wallets' keys derive from this seed and the wallet's index.
CHAIN_CUSTODY_SEED = env("CHAIN_CUSTODY_SEED", default="infrafi-embedded-custody-seed")
CHAIN_RECEIPT_TIMEOUT_SECONDS = env.float("CHAIN_RECEIPT_TIMEOUT_SECONDS", default=30.0)
CHAIN_RETRY_BASE_SECONDS = env.int("CHAIN_RETRY_BASE_SECONDS", default=5)
CHAIN_ALERT_AFTER_ATTEMPTS = env.int("CHAIN_ALERT_AFTER_ATTEMPTS", default=3)
CHAIN_WALLET_GAS_WEI = env.int("CHAIN_WALLET_GAS_WEI", default=10**17)  # ETH a new custodial wallet gets for gas
# A row mined in block N is confirmed (its receipt recorded) once the head is N + depth - 1 and
# block N is still the one it was mined in. 1 suits the embedded automine chain; production: 12+.
CHAIN_CONFIRMATIONS = env.int("CHAIN_CONFIRMATIONS", default=1)
# A signed row not mined after this many seconds is re-signed at its nonce with fees +12.5 %,
# up to CHAIN_MAX_FEE_GWEI (maxFeePerGas); past the cap, one "stuck" alert instead.
CHAIN_FEE_BUMP_AFTER = env.int("CHAIN_FEE_BUMP_AFTER", default=120)
CHAIN_MAX_FEE_GWEI = Decimal(env("CHAIN_MAX_FEE_GWEI", default="500"))
CALIBER_BASE_URI = env("CALIBER_BASE_URI", default="http://localhost:8000/caliber/")
# Users' own wallets (financing.services.wallet_links, chain_watch): a Sign-In with Ethereum
# message is good for this long; the watcher reads events from this block, this many a call.
SIWE_NONCE_TTL_SECONDS = env.int("SIWE_NONCE_TTL_SECONDS", default=300)
CHAIN_WATCH_START_BLOCK = env.int("CHAIN_WATCH_START_BLOCK", default=0)
CHAIN_WATCH_BATCH_BLOCKS = env.int("CHAIN_WATCH_BATCH_BLOCKS", default=2000)

# --- The sUSDai vault.
VAULT_UNLOCK_SECONDS = env.int("VAULT_UNLOCK_SECONDS", default=7 * 24 * 3600)  # profit streams in over this
VAULT_MIN_REDEMPTION = Decimal(env("VAULT_MIN_REDEMPTION", default="10"))  # sUSDai
VAULT_LIQUIDITY_BUFFER = Decimal(env("VAULT_LIQUIDITY_BUFFER", default="0.10"))  # of NAV kept as cash
TBILL_RATE = Decimal(env("TBILL_RATE", default="0.045"))  # a year, accrued daily
USDAI_MIN_PURCHASE = Decimal(env("USDAI_MIN_PURCHASE", default="1.00"))
USDAI_MAX_PURCHASE = Decimal(env("USDAI_MAX_PURCHASE", default="1000000.00"))
