"""Booking race over real HTTP: gunicorn on PostgreSQL, 64 concurrent clients.

Creates a throw-away PostgreSQL database, migrates it, seeds 40 listed servers
of 8 GPUs and 64 renters with API tokens, and serves the app with gunicorn.
Then 64 client threads, each with its own keep-alive connection, race to book
1–2 GPUs for overlapping windows (12 start hours, 2–3 h long) on those
servers, and afterwards call the trivial authenticated endpoint
``/api/v1/me/`` for the same number of requests. Prints double bookings
(held GPU rows that overlap; must be 0), booking requests/s (201 booked +
409 conflict), successful bookings/s, the trivial endpoint's requests/s and
the ratio (goal ≥ 0.5).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test python -m bench.booking_race [--smoke]

``--smoke`` runs 8 clients against 2 servers, a few seconds: CI's check that the bench still runs.
"""

import argparse
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import requests
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 64
BOOKINGS_PER_CLIENT = 25
SERVERS = 40
WORKERS = int(os.environ.get("BENCH_WORKERS", "4"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_database_url() -> str:
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
    if not base.startswith("postgres"):
        sys.exit("booking_race needs PostgreSQL: set DATABASE_URL=postgres://…")
    return base.rsplit("/", 1)[0] + "/infrafi_bench_race"


def recreate_database(url: str) -> None:
    import psycopg

    parsed = urlparse(url)
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parsed.path.lstrip("/")}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{parsed.path.lstrip("/")}"')


def env_for(url: str) -> dict:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=url,
        DJANGO_SETTINGS_MODULE="config.settings.production",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        CELERY_BROKER_URL="memory://",
        DJANGO_SECURE_SSL_REDIRECT="false",
        DJANGO_LOG_LEVEL="ERROR",
        CONN_MAX_AGE="60",
        # Production requires the shared cache and the proxy count: the clients connect directly.
        REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        TRUSTED_PROXY_COUNT="0",
        # 64 clients hammering on purpose: the race is measured, not the per-user throttle.
        API_THROTTLE_USER="1000000/min",
        # Production's other required settings (booking never reaches a cluster or the chain):
        # throw-away values made fresh for each run, and the embedded chain (an empty RPC URL).
        SCHEDULER_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        CHAIN_RPC_URL="",
        CHAIN_SIGNER_KEY="0x" + secrets.token_hex(32),
        CHAIN_CUSTODY_SEED=secrets.token_urlsafe(32),
        # WhiteNoise warns on every worker that collectstatic was not run: the bench serves no static files.
        PYTHONWARNINGS="ignore:No directory at",
    )
    return env


SEED = """
from decimal import Decimal
from accounts.services import api_token_issue
from marketplace.models import GpuModel, Region
from marketplace.services.inventory import server_create
from marketplace.services.listings import listing_create
from tests.factories import make_owner, make_renter
owner = make_owner(company_name="Race Owner")
company = owner.owner_membership.company
region = Region.objects.get(code="us-east")
model = GpuModel.objects.get(name="H100 80GB")
ids = []
for i in range({servers}):
    server = server_create(owner=company, hostname=f"race-{{i:03d}}", region=region, cpu_milli=192000,
                           memory_mib=2097152, gpu_model=model, gpu_count=8)
    ids.append(listing_create(server=server, price_per_gpu_hour=Decimal("2.49")).pk)
tokens = [api_token_issue(user=make_renter(), scope="book", expires_in_days=1).key for _ in range({clients})]
import json; print(json.dumps({{"listings": ids, "tokens": tokens}}))
"""

DOUBLE_BOOKINGS = """
SELECT count(*) FROM marketplace_bookinggpu a JOIN marketplace_bookinggpu b
  ON a.gpu_id = b.gpu_id AND a.id < b.id AND a.held AND b.held AND a.start < b."end" AND b.start < a."end"
"""


def main(clients: int = CLIENTS, per_client: int = BOOKINGS_PER_CLIENT, servers: int = SERVERS) -> None:
    url = bench_database_url()
    recreate_database(url)
    env = env_for(url)
    py = sys.executable
    subprocess.run([py, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    seeded = subprocess.run(
        [py, "manage.py", "shell", "-c", SEED.format(servers=servers, clients=clients)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    data = json.loads(seeded.stdout.strip().splitlines()[-1])
    port = free_port()
    server = subprocess.Popen(
        [
            py,
            "-m",
            "gunicorn",
            "config.wsgi:application",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            str(WORKERS),
            "--worker-class",
            "gthread",
            "--threads",
            "4",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if requests.get(base + "/api/v1/inventory/regions/", timeout=5).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(0.2)
        result = race(base, data["listings"], data["tokens"], per_client)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    import psycopg

    with psycopg.connect(url) as conn:
        double = conn.execute(DOUBLE_BOOKINGS).fetchone()[0]
        held = conn.execute("SELECT count(*) FROM marketplace_bookinggpu WHERE held").fetchone()[0]
        booked = conn.execute("SELECT count(*) FROM marketplace_booking").fetchone()[0]
    recreate_database(url)  # leave nothing behind but an empty database
    ratio = round(result["booking_requests_per_s"] / result["trivial_requests_per_s"], 3)
    answered = sum(result["status_counts"].get(code, 0) for code in ("201", "409"))
    print(
        json.dumps(
            {
                "benchmark": "booking_race",
                "database": "postgresql",
                "server": f"gunicorn gthread {WORKERS}x4",
                "clients": clients,
                **result,
                "bookings_in_db": booked,
                "held_gpu_rows": held,
                "double_bookings": double,
                "ratio_booking_to_trivial": ratio,
                "goal_ratio_at_least": 0.5,
                "goals": {
                    "no_double_booking": double == 0,
                    "every_request_booked_or_refused": answered == result["booking_requests"],
                    "every_201_is_a_booking": result["status_counts"].get("201", 0) == booked,
                    "ratio_at_least_0_5": ratio >= 0.5,
                },
            }
        )
    )


def run_clients(fn, clients: int) -> float:
    barrier = threading.Barrier(clients + 1)
    threads = [threading.Thread(target=fn, args=(i, barrier)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def race(base: str, listings: list[int], tokens: list[str], per_client: int) -> dict:
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    first = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)

    def book(i: int, barrier) -> None:
        rng = random.Random(i)
        session = requests.Session()
        session.headers["Authorization"] = f"Token {tokens[i]}"
        barrier.wait()
        for _ in range(per_client):
            start = first + timedelta(hours=rng.randrange(12))
            body = {
                "listing": rng.choice(listings),
                "gpu_count": rng.choice([1, 2]),
                "start": start.isoformat(),
                "end": (start + timedelta(hours=rng.choice([2, 3]))).isoformat(),
            }
            code = session.post(base + "/api/v1/bookings/", json=body, timeout=60).status_code
            with lock:
                statuses[code] = statuses.get(code, 0) + 1

    def trivial(i: int, barrier) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Token {tokens[i]}"
        barrier.wait()
        for _ in range(per_client):
            code = session.get(base + "/api/v1/me/", timeout=60).status_code
            assert code == 200, code

    booking_seconds = run_clients(book, len(tokens))
    trivial_seconds = run_clients(trivial, len(tokens))
    total = len(tokens) * per_client
    return {
        "booking_requests": total,
        "status_counts": {str(k): v for k, v in sorted(statuses.items())},
        "booking_requests_per_s": round(total / booking_seconds, 1),
        "successful_bookings_per_s": round(statuses.get(201, 0) / booking_seconds, 1),
        "trivial_requests_per_s": round(total / trivial_seconds, 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Booking race over real HTTP (gunicorn, production settings).")
    parser.add_argument("--smoke", action="store_true", help="8 clients, 5 bookings each, 2 servers: a CI check")
    if parser.parse_args().smoke:
        main(clients=8, per_client=5, servers=2)
    else:
        main()
