"""A loss on the chain and in the books together: the finding of the credit audit, replayed.

Two lenders deposit $10,000 each; a $12,000 loan's hardware is lost on day 2; the loan
defaults and is foreclosed; the insurer pays the claim short. The loss must reach the vault's
one price for everyone at once (after the locked profit), a lender who arrives later must pay
the written-down price, and when all three redeem each gets their share: nobody first come,
first served, and the queue empties.
"""

from datetime import timedelta
from decimal import Decimal

import pytest

from financing.chain import node
from financing.chain.client import usd_to_wei, wei_to_usd
from financing.models import ChainOp, Loan, Posting
from financing.selectors.ledger import balances
from financing.selectors.vault import vault_position
from financing.services.collateral import hardware_loss_declare
from financing.services.delinquency import loan_foreclose, loans_service
from financing.services.epochs import epoch_close
from financing.services.losses import claim_settle
from financing.services.reconcile import chain_reconcile
from financing.services.vault import redemption_request, vault_service
from tests.chain_fixtures import drain
from tests.factories import make_lender
from tests.financing_fixtures import T0
from tests.test_onchain import financed_loan, fund, titled_collateral

pytestmark = pytest.mark.django_db


def step(chain, at) -> None:
    """Close the epoch at ``at`` and send the outbox with the chain's clock at ``at``."""
    epoch_close(now=at)
    chain.at(int(at.timestamp()))
    drain()
    chain.at(None)


def value_of(user) -> Decimal:
    position = vault_position(user=user)
    return position.value


def test_a_lost_server_is_written_down_for_every_lender_alike_and_the_queue_empties(chain, owner, operator, renter):
    lost_server(owner, operator, step=lambda at: step(chain, at), dead_shares=10**6)


def lost_server(owner, operator, *, step, dead_shares: int) -> None:
    """The scenario, on whichever chain ``step(at)`` closes epochs and sends the outbox to."""
    chain = node.get_chain()
    first, second, late = make_lender(), make_lender(), make_lender()
    fund(first, "10000.00")
    fund(second, "10000.00")
    drain()
    loan = financed_loan(owner, operator, titled_collateral(owner, operator))
    drain()
    assert chain.call("SUSDai", "deployed") == 12000 * 10**18

    # the hardware is lost on day 2: a claim for $20,000 (its appraisal); it covers the loan,
    # so no impairment yet
    claim = hardware_loss_declare(
        collateral=loan.collateral, operator=operator, description="Rack fire", now=T0 + timedelta(days=2)
    )
    # the server earns nothing; the reserve pays while it lasts, then the loan defaults
    moments = sorted(
        at
        for due in loan.instalments.values_list("due", flat=True)
        for at in (due + timedelta(days=6), due + timedelta(days=60))
    )
    for at in moments:
        loans_service(now=at)
        step(at)
        loan.refresh_from_db()
        if loan.status == Loan.Status.DEFAULTED:
            break
    defaulted_at = at
    books = balances()
    assert books[f"interest:{loan.pk}"] == 0  # non-accrual: what it did not pay left the books
    assert books.get(f"allowance:{loan.pk}", 0) == 0  # the claim covers what is owed
    assert value_of(first) == value_of(second)

    # foreclosure: the claim becomes a receivable for what is owed
    loan_foreclose(loan=loan, operator=operator, now=defaulted_at + timedelta(days=1))
    step(defaulted_at + timedelta(days=1))
    owed = balances()[f"claim:{loan.pk}"]
    assert owed > Decimal("8000") and balances()[f"principal:{loan.pk}"] == 0
    before = {who: value_of(who) for who in (first, second)}

    # the insurer pays $5,000: the rest of what was owed is lost
    claim_settle(claim=claim, operator=operator, amount_paid=Decimal("5000.00"))
    at = defaulted_at + timedelta(days=2)
    step(at)
    loss = owed - Decimal("5000.00")
    revalue = ChainOp.objects.get(function="write_down")
    assert revalue.args == [str(usd_to_wei(loss))] and revalue.status == "confirmed"
    written = revalue.result["events"]
    absorbed = wei_to_usd(int(next(e for e in written if e["event"] == "WrittenDown")["args"]["absorbed_by_locked"]))
    assert Posting.objects.get(line="claim_shortfall", account__code=f"claim:{loan.pk}").amount == -loss

    # both lenders lost the same, together the loss less what locked profit absorbed (to the cent)
    after = {who: value_of(who) for who in (first, second)}
    assert after[first] == after[second]
    lost = (before[first] - after[first]) + (before[second] - after[second])
    assert abs(lost - (loss - absorbed)) < Decimal("0.05")  # accrual between the reads, a few cents

    # a lender who arrives now pays the written-down price: $5,000 is worth $5,000 at once
    fund(late, "5000.00")
    drain()
    assert Decimal("4999.999999") <= value_of(late) <= Decimal("5000.000000")

    # all three redeem everything; the queue pays everyone their share and empties
    shares = {who: vault_position(user=who).shares for who in (first, second, late)}
    values = {who: value_of(who) for who in shares}
    for who, amount in shares.items():
        redemption_request(user=who, shares_amount=amount)
    drain()
    for _ in range(3):
        vault_service()
        drain()
    assert chain.call("SUSDai", "queue_head") == chain.call("SUSDai", "queue_tail") == 3
    paid = {who: sum(r.paid for r in who.redemptions.all()) for who in shares}
    assert paid[first] == paid[second]
    for who in shares:  # each within a cent of the value shown just before (time passes between)
        assert abs(paid[who] - values[who]) < Decimal("0.01"), (who, paid[who], values[who])
    assert chain.call("SUSDai", "totalSupply") == dead_shares  # only the dead shares are left
    report = chain_reconcile()
    assert report.mismatches == 0, [c for c in report.checks if not c["ok"]]
