# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HARDHAT_DIR := contracts/hardhat
# npm ci rewrites this file on every install: newer than the lock means installed from it.
HARDHAT_STAMP := $(HARDHAT_DIR)/node_modules/.package-lock.json

.PHONY: demo serve test venv hardhat lint migrate seed bench clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

## The local Hardhat node the tests start (tests/hardhat_node.py), from its lock.
$(HARDHAT_STAMP): $(HARDHAT_DIR)/package.json $(HARDHAT_DIR)/package-lock.json
	cd $(HARDHAT_DIR) && npm ci --no-audit --no-fund
	touch $(HARDHAT_STAMP)

hardhat: $(HARDHAT_STAMP)

## Run the app on its embedded defaults (SQLite, offline payments, simulated cluster).
demo: $(STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	@# The periodic tasks (expire unpaid holds, start and finish bookings) run
	@# beside the web server; both stop together.
	@# uvicorn serves config.asgi: the site, its static files (DEBUG), and the proxy (/proxy/, /endpoints/).
	trap 'kill 0' EXIT INT TERM; $(PY) manage.py run_scheduler > run_scheduler.log 2>&1 & \
	DJANGO_SETTINGS_MODULE=$${DJANGO_SETTINGS_MODULE:-config.settings.local} \
	$(PY) -m uvicorn config.asgi:application --host 127.0.0.1 --port 8000

## Production on PostgreSQL and Redis: migrate, collectstatic, then Procfile.prod under honcho (gunicorn on
## $$PORT, default 8000; a Celery worker; Celery beat). config.settings.production refuses to start until its
## variables are set, in the environment or in .env (the README's production table): DJANGO_SECRET_KEY,
## DJANGO_ALLOWED_HOSTS, DATABASE_URL, REDIS_URL, CELERY_BROKER_URL, TRUSTED_PROXY_COUNT,
## SCHEDULER_ENCRYPTION_KEYS, CHAIN_RPC_URL, CHAIN_SIGNER_KEY, CHAIN_CUSTODY_SEED.
serve: export DJANGO_SETTINGS_MODULE = config.settings.production
serve: export PATH := $(abspath $(VENV))/bin:$(PATH)
serve: $(STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput
	PORT=$${PORT:-8000} honcho -f Procfile.prod start

## Run the whole test suite (PostgreSQL when DATABASE_URL is set, SQLite otherwise).
test: $(STAMP) $(HARDHAT_STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf $(VENV) $(HARDHAT_DIR)/node_modules db.sqlite3 staticfiles artifacts .pytest_cache
