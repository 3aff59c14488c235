"""``make serve``'s processes (Procfile.prod under honcho) on production settings, and entry points that
refuse to guess their settings module."""

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from celery import Celery
from cryptography.fernet import Fernet
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
REDIS = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def production_env(port: int, tmp_path: Path) -> dict[str, str]:
    """Production settings on the test database, with throw-away secrets made for this run."""
    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CELERY_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        DJANGO_SETTINGS_MODULE="config.settings.production",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        REDIS_URL=REDIS,
        CELERY_BROKER_URL=REDIS,
        TRUSTED_PROXY_COUNT="0",
        SCHEDULER_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        CHAIN_RPC_URL="",  # the embedded chain
        CHAIN_SIGNER_KEY="0x" + secrets.token_hex(32),
        CHAIN_CUSTODY_SEED=secrets.token_urlsafe(32),
        PORT=str(port),
        WEB_CONCURRENCY="1",
        CELERY_CONCURRENCY="1",
        CELERY_BEAT_SCHEDULE_FILE=str(tmp_path / "celerybeat-schedule"),
        PYTHONWARNINGS="ignore:No directory at",  # no collectstatic here: WhiteNoise's warning is expected
    )
    return env


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_procfile_prod_serves_with_a_worker_and_beat(tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL): the processes are separate")
    port = free_port()
    honcho = subprocess.Popen(
        [sys.executable, "-m", "honcho", "-f", "Procfile.prod", "start", "--no-colour"],
        cwd=ROOT,
        env=production_env(port, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the finally stops honcho and every child
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(honcho.stdout), daemon=True).start()
    try:
        deadline = time.monotonic() + 45
        answered = None
        while answered is None and time.monotonic() < deadline:
            assert honcho.poll() is None, "honcho stopped:\n" + "".join(lines)
            try:
                # The proxy's header, as production expects: otherwise the answer is a redirect to https.
                answered = requests.get(
                    f"http://127.0.0.1:{port}/api/v1/inventory/regions/",
                    headers={"X-Forwarded-Proto": "https"},
                    timeout=5,
                )
            except requests.ConnectionError:
                time.sleep(0.5)
        assert answered is not None, "gunicorn did not answer:\n" + "".join(lines)
        assert answered.status_code == 200, answered.text

        replies = []
        while not replies and time.monotonic() < deadline:
            replies = Celery(broker=REDIS).control.ping(timeout=1)
        assert replies, "the Celery worker did not answer a ping:\n" + "".join(lines)
        while not any("beat: Starting" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert any("beat: Starting" in line for line in lines), "".join(lines)
        assert honcho.poll() is None, "".join(lines)
    finally:
        os.killpg(honcho.pid, signal.SIGTERM)
        try:
            honcho.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait(timeout=10)


@pytest.mark.parametrize("module", ["config.wsgi", "config.asgi", "config.celery"])
def test_a_server_entry_point_requires_its_settings_module(module):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured: DJANGO_SETTINGS_MODULE is not set" in result.stderr
