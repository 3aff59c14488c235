"""Property tests through the services, the ledger and the in-process EVM together: any
interleaving of deposits, redemption requests, cancels, revenue, the passing of time (servicing,
impairment and default of a loan that stops earning, the daily vault run), T-bills and queue
service.

After every operation, with the outbox sent and the chain's clock at the simulated time:

- every dollar is accounted for, exactly: every journal entry balances, and the vault's books
  add up (deposits − redemptions paid + income − credit losses = cash + T-bills + loans' value);
- the books equal the chain: reconciliation finds no mismatch;
- two lenders who hold the same shares are worth the same, to the wei, whatever happened
  (a loss is shared pro rata, never first come first served).

(The timing properties — no lender's value moves because another acted, or around a report —
are checked at exact block times on the contract itself, in tests/test_vault_properties.py.)
"""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.db.models import Sum
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from financing.chain import node
from financing.chain.client import shares_wei, wei_to_usd
from financing.models import Appraisal, JournalEntry, Loan, Posting, Redemption
from financing.selectors.ledger import balances, usdai_balance
from financing.selectors.vault import loans_value, vault_position
from financing.services.delinquency import loan_foreclose, loans_service
from financing.services.epochs import epoch_close
from financing.services.losses import loan_write_off
from financing.services.reconcile import chain_reconcile
from financing.services.revenue import settlements_journal
from financing.services.vault import redemption_cancel, redemption_request, vault_daily, vault_deposit, vault_service
from financing.services.wallets import usdai_buy
from tests.chain_fixtures import drain
from tests.factories import make_lender
from tests.financing_fixtures import T0, settle
from tests.test_onchain import financed_loan, titled_collateral

pytestmark = pytest.mark.django_db

lender = st.integers(0, 2)
FULL_LOSS = [("redeem", 0, 30), ("days", 70), ("days", 70), ("days", 30), ("foreclose",), ("write_off", 250_000)]
operation = st.one_of(
    st.tuples(st.just("deposit"), st.integers(1, 2), st.integers(1_000, 500_000)),  # cents (not the twins)
    st.tuples(st.just("redeem"), lender, st.integers(1, 100)),  # percent of what is free
    st.tuples(st.just("cancel"), lender),
    st.tuples(st.just("revenue"), st.integers(0, 600_000)),  # cents of gross rent
    st.tuples(st.just("days"), st.integers(1, 70)),
    st.tuples(
        st.just("service"),
    ),
)


class World:
    def __init__(self, owner, operator, renter):
        self.chain = node.get_chain()
        self.operator = operator
        self.renter = renter
        self.now = T0
        self.lenders = [make_lender() for _ in range(3)]
        self.twin = make_lender()  # holds exactly what lender 0 holds, always
        seed = make_lender()  # the first deposit pays for the dead shares
        for who in [*self.lenders, self.twin, seed]:
            usdai_buy(user=who, amount=Decimal("100000.00"))
        vault_deposit(user=seed, amount=Decimal("1.00"))
        for who in (self.lenders[0], self.twin):
            vault_deposit(user=who, amount=Decimal("20000.00"))
        self.send()
        self.loan = financed_loan(owner, operator, titled_collateral(owner, operator))
        # the hardware is worth less than it was: a default would lose money
        latest = Appraisal.objects.filter(collateral_id=self.loan.collateral_id).latest("as_of")
        latest.pk, latest.value, latest.as_of = None, Decimal("8000"), T0 + timedelta(minutes=1)
        latest.save()
        self.send()

    def send(self) -> None:
        epoch_close(now=self.now)
        self.chain.at(max(int(self.now.timestamp()), self.chain.block_timestamp() + 1))
        drain()
        self.chain.at(None)

    ops = 1

    def apply(self, op: tuple) -> None:
        self.ops += 1
        kind = op[0]
        if kind == "deposit":
            who = self.lenders[op[1]]
            vault_deposit(user=who, amount=Decimal(op[2]) / 100)
        elif kind == "redeem":
            who = self.lenders[op[1]]
            position = vault_position(user=who)
            shares = (position.available * op[2] / 100).quantize(Decimal("1e-18"), rounding="ROUND_DOWN")
            if shares >= 10 or (shares > 0 and shares == position.available):
                redemption_request(user=who, shares_amount=shares)
                if op[1] == 0:  # the twin does exactly the same
                    redemption_request(user=self.twin, shares_amount=shares)
        elif kind == "cancel":
            who = self.lenders[op[1]]
            queued = Redemption.objects.filter(user=who, status=Redemption.Status.QUEUED).order_by("-pk").first()
            if queued is not None:
                redemption_cancel(user=who, redemption=queued)
                if op[1] == 0:
                    twin = Redemption.objects.filter(user=self.twin, status=Redemption.Status.QUEUED)
                    redemption_cancel(user=self.twin, redemption=twin.order_by("-pk").first())
        elif kind == "revenue":
            if op[1]:
                self.now += timedelta(hours=1)
                settle(self.loan, self.renter, str(Decimal(op[1]) / 100), self.now)
                settlements_journal()
        elif kind == "days":
            for _ in range(op[1]):
                self.now += timedelta(days=1)
                loans_service(now=self.now)
                vault_daily(now=self.now)
                self.send()
        elif kind == "service":
            vault_service()
        elif kind == "foreclose":
            self.loan.refresh_from_db()
            if self.loan.status == Loan.Status.DEFAULTED:
                loan_foreclose(loan=self.loan, operator=self.operator, now=self.now)
        elif kind == "write_off":
            self.loan.refresh_from_db()
            if self.loan.status == Loan.Status.FORECLOSED:
                loan_write_off(loan=self.loan, operator=self.operator, sale_proceeds=Decimal(op[1]) / 100, now=self.now)
        self.send()
        if kind == "service":
            self.send()  # the payouts' receipts

    def check(self) -> None:
        # every entry balances (the database refuses one that does not; check the sum anyway)
        assert Posting.objects.aggregate(s=Sum("amount"))["s"] == 0
        unbalanced = JournalEntry.objects.annotate(s=Sum("postings__amount")).exclude(s=0).count()
        assert unbalanced == 0
        # the vault's books: what lenders put in, less what they took out, plus income, less losses,
        # is what the vault holds
        books = balances()
        holders = -books.get("susdai_holders", 0)
        income = -books.get("tbill_income", 0) + sum(
            Posting.objects.filter(account__code="vault_cash", line="to_vault_interest").values_list(
                "amount", flat=True
            ),
            Decimal(0),
        )
        losses = -sum(
            Posting.objects.filter(line__in=("impairment", "impairment_reversal", "write_off", "claim_shortfall"))
            .exclude(account__code="credit_losses")
            .values_list("amount", flat=True),
            Decimal(0),
        )
        # (principal repaid, by revenue, the reserve, first-loss capital or a claim, comes back as
        # vault cash: moving between loans and cash changes neither side)
        held = books.get("vault_cash", 0) + books.get("tbill_holdings", 0) + loans_value()
        assert held == holders + income - losses
        # the books equal the chain
        report = chain_reconcile()
        assert report.in_flight == 0 and report.mismatches == 0, [c for c in report.checks if not c["ok"]]
        # twins are worth the same: their shares, in the wallet or queued, at the one price, and what
        # was paid out to them (a loss is shared, not left to whoever is still queued). Only while
        # the queue has paid them alike: a request still waiting behind a payout keeps earning
        # (and bearing losses) until it is paid, as it should.
        paid = [
            sum(Redemption.objects.filter(user=u).values_list("paid", flat=True), Decimal(0))
            for u in (self.lenders[0], self.twin)
        ]
        if paid[0] == paid[1]:
            assert abs(self.worth(self.lenders[0]) - self.worth(self.twin)) <= Decimal("0.000001") * self.ops

    def worth(self, user) -> Decimal:
        position = vault_position(user=user)
        held = shares_wei(position.shares + position.queued)
        return usdai_balance(user=user) + wei_to_usd(self.chain.call("SUSDai", "convertToAssets", held))


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(ops=st.lists(operation, min_size=3, max_size=14))
# always: a loan that stops earning, defaults, is foreclosed and written off, with lenders queued
@example(ops=FULL_LOSS)
def test_any_interleaving_keeps_every_dollar_and_the_chain_in_step(chain, owner, operator, renter, ops):
    snapshot = chain.snapshot()
    try:
        with transaction.atomic():
            world = World(owner, operator, renter)
            world.check()
            for op in ops:
                world.apply(op)
                world.check()
            if ops == FULL_LOSS:  # the example reaches what it is there for
                world.loan.refresh_from_db()
                assert world.loan.status == Loan.Status.WRITTEN_OFF
                assert Posting.objects.filter(line="write_off").exists()
            transaction.set_rollback(True)
    finally:
        chain.revert(snapshot)
