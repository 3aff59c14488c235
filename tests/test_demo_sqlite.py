"""`make demo` on its embedded defaults: SQLite, no environment. CI runs the suite on
PostgreSQL, so a query only PostgreSQL understands (DISTINCT ON, say) would pass every
other test and still break the newcomer's first command. This runs the demo's own steps
(migrate, seed_demo) in a child process on a fresh SQLite file, then signs in as each demo
user and opens the pages a newcomer clicks first; every one must answer 200 (after its redirects)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PAGES = textwrap.dedent(
    """
    import django, os
    django.setup()
    from django.test import Client
    from django.test.utils import setup_test_environment
    setup_test_environment()
    from core.management.commands.seed_demo import DEMO_PASSWORD
    pages = {
        None: ["/", "/search/", "/proof/"],
        "renter@infrafi.test": ["/dashboard/", "/bookings/", "/wallet/", "/renter/cards/", "/account/billing/"],
        "owner@infrafi.test": ["/dashboard/", "/owner/servers/", "/owner/earnings/", "/owner/financing/",
                               "/owner/payouts/", "/wallet/"],
        "lender@infrafi.test": ["/dashboard/", "/lender/", "/lender/loans/", "/lender/vault/", "/wallet/"],
        "operator@infrafi.test": ["/operator/chain/", "/operator/money/", "/operator/payouts/"],
    }
    bad = []
    for email, urls in pages.items():
        client = Client()
        if email:
            assert client.login(username=email, password=DEMO_PASSWORD), email
        for url in urls:
            status = client.get(url, follow=True).status_code
            if status != 200:
                bad.append(f"{email or 'anonymous'} {url} {status}")
    print("BAD:" + "|".join(bad))
    """
)


def _run(args: list[str], env: dict, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_the_demo_migrates_seeds_and_serves_its_pages_on_sqlite(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env |= {"DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}", "DJANGO_SETTINGS_MODULE": "config.settings.local"}

    for step in (["manage.py", "migrate", "--noinput"], ["manage.py", "seed_demo"]):
        done = _run(step, env)
        assert done.returncode == 0, f"{' '.join(step)} failed:\n{done.stderr[-3000:]}"

    pages = _run(["-c", PAGES], env)
    assert pages.returncode == 0, pages.stderr[-3000:]
    bad = pages.stdout.strip().rsplit("BAD:", 1)[-1]
    assert bad == "", f"pages that did not answer 200 on SQLite: {bad}"
