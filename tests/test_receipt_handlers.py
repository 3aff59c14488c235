"""Receipt handlers are registered in every process, and a missing one loses nothing.

The books learn what the chain decided (shares minted, a queue id, USDai paid
out) only through the outbox's receipt handlers. They are registered by
``FinancingConfig.ready()``, not by whatever module happens to import them; a
receipt whose handler is missing is not confirmed: the operator is alerted
and the row retries until the handler is there.
"""

import json
import os
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from django.utils import timezone

from financing.models import ChainAlert, ChainOp, VaultDeposit
from financing.services import outbox
from financing.services.vault import vault_deposit
from financing.services.wallets import usdai_buy
from tests.chain_fixtures import drain

ROOT = Path(__file__).resolve().parent.parent

NO_ADMIN_SETTINGS = """
from config.settings.test import *  # noqa: F403

INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "django.contrib.admin"]  # noqa: F405
"""


def test_handlers_are_registered_in_a_process_without_the_admin(tmp_path):
    # given a process whose settings leave out django.contrib.admin (no admin autodiscovery)
    (tmp_path / "no_admin_settings.py").write_text(NO_ADMIN_SETTINGS)
    script = (
        "import django, json; django.setup(); "
        "from django.apps import apps; from financing.services import outbox; "
        "print(json.dumps({'admin': apps.is_installed('django.contrib.admin'), "
        "'handlers': sorted(outbox.HANDLERS), 'recorded': sorted(outbox.RECORDED_CALLS)}))"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "no_admin_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
    }

    # when it starts Django and looks at the outbox's handlers
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=120
    )

    # then every call whose receipt the books record has its handler
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["admin"] is False
    assert seen["recorded"] == ["SUSDai.cancel_redeem", "SUSDai.deposit", "SUSDai.request_redeem", "SUSDai.service"]
    assert seen["handlers"] == seen["recorded"]


def test_a_receipt_without_its_handler_is_alerted_and_recorded_once_the_handler_is_back(chain, lender, monkeypatch):
    # given a deposit whose receipt handler is missing in this process
    usdai_buy(user=lender, amount=Decimal("100.00"))
    deposit = vault_deposit(user=lender, amount=Decimal("100.00"))
    handler = outbox.HANDLERS["SUSDai.deposit"]
    monkeypatch.delitem(outbox.HANDLERS, "SUSDai.deposit")

    # when the outbox sends it and the transaction is mined
    drain()

    # then the row is not confirmed, the shares are not recorded, and the operator is alerted
    op = ChainOp.objects.get(pk=deposit.op_id)
    assert op.status == ChainOp.Status.SIGNED and op.confirmed_at is None and op.block_number is None
    assert "no receipt handler registered for SUSDai.deposit" in op.last_error
    assert VaultDeposit.objects.get(pk=deposit.pk).shares is None
    (alert,) = ChainAlert.objects.filter(kind="handler")
    assert alert.op_id == op.pk and "mined but not recorded" in alert.message
    # the shares exist on chain: the transaction went out once
    wallet_address = deposit.user.wallet.address
    assert chain.call("SUSDai", "balanceOf", wallet_address) == 100 * 10**18 - 10**6

    # when the handler is registered again and the row's retry is due
    monkeypatch.setitem(outbox.HANDLERS, "SUSDai.deposit", handler)
    ChainOp.objects.filter(pk=op.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    drain()

    # then the same transaction is confirmed and the shares recorded exactly once
    op.refresh_from_db()
    assert op.status == ChainOp.Status.CONFIRMED
    assert VaultDeposit.objects.get(pk=deposit.pk).shares == Decimal("99.999999999999000000")
    assert chain.call("SUSDai", "balanceOf", wallet_address) == 100 * 10**18 - 10**6
    assert ChainOp.objects.filter(contract="SUSDai", function="deposit").count() == 1
    assert ChainAlert.objects.filter(kind="handler").count() == 1


def test_a_handler_for_a_call_the_outbox_does_not_record_is_refused():
    try:
        outbox.handles("SUSDai.report")
    except ValueError as exc:
        assert "not a recorded call" in str(exc)
    else:
        raise AssertionError("registering a handler for an unrecorded call must fail")
