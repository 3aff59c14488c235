"""Inventory at trace scale: import the whole Alibaba node list, then read it.

Imports all 1,213 nodes (6,212 GPUs) of the trace through the same CSV
service owners use (validation included, one transaction), then measures the
platform supply summary and the owner dashboard and server list pages.

    python -m bench.inventory          # SQLite, or PostgreSQL with DATABASE_URL
"""

import json
import time
from pathlib import Path


def main() -> None:
    from bench._django import median_ms, test_database

    with test_database() as connection:
        from django.conf import settings
        from django.test import Client
        from django.urls import reverse

        from marketplace.models import Gpu, Region, Server
        from marketplace.selectors.inventory import supply_summary
        from marketplace.services.inventory import servers_import_csv
        from tests.factories import make_owner

        owner = make_owner(company_name="Bench Compute")
        company = owner.owner_membership.company
        content = Path(settings.DEMO_NODE_LIST).read_text()

        start = time.perf_counter()
        servers = servers_import_csv(owner=company, content=content, default_region=Region.objects.get(code="us-east"))
        import_s = time.perf_counter() - start

        client = Client()
        client.force_login(owner)
        result = {
            "benchmark": "inventory",
            "database": connection.vendor,
            "servers_imported": len(servers),
            "gpus_imported": Gpu.objects.count(),
            "import_seconds": round(import_s, 3),
            "import_gpus_per_second": round(Gpu.objects.count() / import_s),
            "supply_summary_ms_median": median_ms(supply_summary, 20),
            "owner_dashboard_ms_median": median_ms(lambda: client.get(reverse("marketplace:owner_dashboard")), 20),
            "server_list_page_ms_median": median_ms(lambda: client.get(reverse("marketplace:server_list")), 10),
            "servers_in_db": Server.objects.count(),
        }
        result["goals"] = {
            "every_node_imported": result["servers_imported"] == result["servers_in_db"] > 0,
            "dashboard_under_a_second": result["owner_dashboard_ms_median"] < 1000,
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
