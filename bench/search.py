"""Search at scale: 10k servers / 60k GPUs; filtered search latency vs a trivial endpoint.

Seeds 10,000 servers holding 60,000 GPUs (the Alibaba trace's nodes, cycled,
plus 8-GPU current-generation servers), lists them all (10 % on a weekly
schedule), holds 3,000 bookings in the next three days, then times, through
Django's full request stack with token authentication, 300 filtered searches
(varied filters, a window, sort, page) and 300 calls of the trivial
authenticated endpoint ``/api/v1/me/``. Goal: search p95 ≤ 2 × trivial p95.

    python -m bench.search                 # SQLite; DATABASE_URL=postgres://… for PostgreSQL
"""

import json
import random
import statistics
import time
from datetime import timedelta

REQUESTS = 300


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def main() -> None:
    from bench._django import test_database

    with test_database() as connection:
        from django.test import Client
        from django.utils import timezone

        from accounts.services import api_token_issue
        from bench._seed import seed_market
        from marketplace.models import GpuModel
        from tests.factories import make_renter

        started = time.perf_counter()
        seeded = seed_market(servers=10_000, gpus=60_000, bookings=3_000)
        seed_seconds = time.perf_counter() - started
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
        token = api_token_issue(user=make_renter(), name="bench", expires_in_days=1).key
        client = Client(HTTP_AUTHORIZATION=f"Token {token}")
        rng = random.Random(42)
        models = list(GpuModel.objects.exclude(vram_gb=None).values_list("pk", flat=True))
        base = timezone.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)

        def search_params() -> dict:
            start = base + timedelta(hours=rng.randrange(0, 72))
            params = {
                "gpu_count": rng.choice([1, 2, 4, 8]),
                "start": start.strftime("%Y-%m-%dT%H:%M"),
                "end": (start + timedelta(hours=rng.choice([1, 4, 12]))).strftime("%Y-%m-%dT%H:%M"),
                "sort": rng.choice(["price", "reliability"]),
                "page": 1,
            }
            if rng.random() < 0.5:
                params["gpu_model"] = rng.choice(models)
            if rng.random() < 0.5:
                params["min_vram_gb"] = rng.choice([16, 24, 48, 80])
            if rng.random() < 0.5:
                params["region"] = rng.choice(
                    ["us-east", "us-west", "eu-central", "eu-north", "ap-southeast", "ap-east"]
                )
            if rng.random() < 0.5:
                params["max_price"] = rng.choice(["0.50", "1.00", "3.00"])
            if rng.random() < 0.3:
                params["min_reliability"] = "0.97"
            return params

        def timed(path: str, params: dict | None = None) -> float:
            t0 = time.perf_counter()
            response = client.get(path, params or {})
            elapsed = (time.perf_counter() - t0) * 1000
            assert response.status_code == 200, response.content[:300]
            return elapsed

        for _ in range(20):  # warm-up
            timed("/api/v1/me/")
            timed("/api/v1/search/", search_params())
        trivial, search, matches = [], [], []
        for _ in range(REQUESTS):
            trivial.append(timed("/api/v1/me/"))
            params = search_params()
            search.append(timed("/api/v1/search/", params))
        for _ in range(20):
            matches.append(client.get("/api/v1/search/", search_params()).json()["count"])
        result = {
            "benchmark": "search",
            "database": connection.vendor,
            **seeded,
            "seed_seconds": round(seed_seconds, 1),
            "requests_each": REQUESTS,
            "trivial_p50_ms": pct(trivial, 0.50),
            "trivial_p95_ms": pct(trivial, 0.95),
            "search_p50_ms": pct(search, 0.50),
            "search_p95_ms": pct(search, 0.95),
            "search_mean_ms": round(statistics.mean(search), 2),
            "median_matches_per_search": statistics.median(matches),
            "p95_ratio_search_to_trivial": round(pct(search, 0.95) / pct(trivial, 0.95), 2),
            "goal_p95_ratio_at_most": 2.0,
        }
        result["goals"] = {
            "p95_ratio_at_most_2": result["p95_ratio_search_to_trivial"] <= 2.0,
            "searches_find_listings": result["median_matches_per_search"] > 0,
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
