"""A loan book over years: revenue, defaults, losses and lenders, through the product's services.

A seeded simulation, day by day from a start date, on PostgreSQL and the
embedded chain:

- ``servers`` financed servers (8 GPUs of a current model each) earn revenue
  every day from a utilisation profile derived from the Alibaba GPU trace
  (``bench/_credit_trace.py``; the pod list is a sample of the cluster's
  tasks, so the profile's shape is kept and scaled to a mean of
  ``--utilisation``, then clamped to [0, 1]; looped; each server has its own
  offset and noise). Settlements (gpus × 24 h × utilisation × price) are bulk
  created like ``bench/waterfall.py`` and journaled by ``settlements_journal``.
- Collateral is registered and approved by the services (``collateral_approve``
  mints its title), appraised by an Appraisal row written directly (the
  appraisal engine values a server without history at 0; it has its own
  tests), and each loan is applied for (``loan_apply``) within the LTV and
  DSCR limits (``loan_max_amount``) and approved (``loan_approve``) during the
  first two months, after lenders funded the vault.
- About ``--default-rate`` of the loans stop earning on a random day;
  ``loans_service`` defaults them, the operator forecloses (``loan_foreclose``),
  re-lease revenue follows at a lower utilisation, then ``loan_write_off``
  with partial sale proceeds. A third of them lose their hardware
  (``hardware_loss_declare``), the claim paid short (``claim_settle``). Some
  loans carry first-loss capital (``first_loss_post`` by a curator).
- About 20 lenders deposit and redeem on random days; three "timers" deposit
  just before the daily report and redeem just after, or deposit just after.
- Every day: ``loans_service(now=)``, ``vault_service``, ``vault_daily(today=,
  now=)``; the outbox is sent with the chain clock at the simulated time,
  one row at a time around each epoch's ``report``, so the share price
  (``convertToAssets(1e18)``) is read at the same block time just before and
  just after the report is mined.

Measures: exact conservation (every entry balances; the vault's identity in
the books; ``chain_reconcile`` with nothing in flight; USDai supply), the
largest timing gain of one operation, the largest price drop at a report,
losses by layer (reserve, first loss, locked profit, holders), lender APR from
loans and from T-bills (ledger lines over the simulated calendar).

    DATABASE_URL=postgres://… python -m bench.credit [--servers 200] [--months 24] [--seed 7]
"""

import argparse
import json
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal

E18 = 10**18
ZERO = Decimal(0)
CENT = Decimal("0.01")
MODELS = (
    ("H100 80GB", "2.49", 250_000),
    ("A100 80GB", "1.39", 140_000),
    ("L40S", "0.99", 90_000),
    ("H200", "3.29", 320_000),
)
LENDERS = 20
TIMERS = 3


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.credit")
    parser.add_argument("--servers", type=int, default=200)
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--default-rate", type=float, default=0.10)
    parser.add_argument("--utilisation", type=float, default=0.60, help="mean utilisation the trace is scaled to")
    parser.add_argument("--settle-every", type=int, default=1, help="days per settlement of each server")
    return parser.parse_args()


class Sim:
    def __init__(self, args):
        from bench._credit_trace import daily_utilisation

        self.args = args
        self.rng = random.Random(args.seed)
        raw = daily_utilisation()
        self.trace_mean = sum(raw) / len(raw)
        scale = args.utilisation / self.trace_mean
        self.profile = [min(max(u * scale, 0.0), 1.0) for u in raw]
        self.days = round(args.months * 365 / 12)
        today = datetime.now(UTC).date()
        self.start = datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(days=2)
        self.max_gain = ZERO
        self.max_gain_where = ""
        self.max_drop = ZERO
        self.reports_measured = 0
        self.deposits_after_report = 0
        self.report_loss = ZERO
        self.report_loss_absorbed = ZERO
        self.report_gain_locked = ZERO
        self.largest_losses: list[tuple] = []
        self.events = {"defaulted": 0, "foreclosed": 0, "written_off": 0, "hardware_lost": 0, "claims_settled": 0}

    # --- setup -------------------------------------------------------------------------

    def seed(self) -> None:
        from accounts.services import owner_company_create
        from financing.models import Appraisal, Collateral
        from financing.services.collateral import collateral_approve, collateral_register
        from financing.services.loans import loan_max_amount
        from marketplace.models import Booking, Gpu, GpuModel, Listing, Region, Server
        from tests.factories import UserFactory, make_lender, make_operator, make_renter

        rng, n = self.rng, self.args.servers
        self.operator = make_operator()
        self.renter = make_renter()
        companies = [owner_company_create(user=UserFactory(), name=f"Credit Owner {i}") for i in range(5)]
        region = Region.objects.order_by("code").first()
        models = {m.name: m for m in GpuModel.objects.filter(name__in=[m[0] for m in MODELS])}
        specs = [MODELS[i % len(MODELS)] for i in range(n)]
        servers = Server.objects.bulk_create(
            [
                Server(
                    owner=companies[i % 5],
                    hostname=f"credit-{i:05d}",
                    region=region,
                    cpu_milli=192000,
                    memory_mib=2097152,
                )
                for i in range(n)
            ]
        )
        Gpu.objects.bulk_create(
            [
                Gpu(server=s, slot=k, serial=f"CR{s.pk:06d}{k}", model=models[spec[0]])
                for s, spec in zip(servers, specs, strict=True)
                for k in range(8)
            ],
            batch_size=5000,
        )
        prices = [(Decimal(spec[1]) * Decimal(rng.randint(90, 110)) / 100).quantize(CENT) for spec in specs]
        listings = Listing.objects.bulk_create(
            [
                Listing(
                    server=s,
                    gpu_model=models[spec[0]],
                    vram_gb=models[spec[0]].vram_gb,
                    region=region,
                    gpus_in_service=8,
                    price_per_gpu_hour=price,
                    always_available=True,
                )
                for s, spec, price in zip(servers, specs, prices, strict=True)
            ]
        )
        end = self.start + timedelta(days=self.days + 2)
        self.bookings = Booking.objects.bulk_create(
            [
                Booking(
                    renter=self.renter,
                    listing=listing,
                    server_id=listing.server_id,
                    gpu_count=8,
                    start=self.start - timedelta(days=1),
                    end=end,
                    price_per_gpu_hour=listing.price_per_gpu_hour,
                    amount=listing.price_per_gpu_hour * 8 * 24 * (self.days + 3),
                    status="active",
                    amount_paid=listing.price_per_gpu_hour * 8 * 24 * (self.days + 3),
                )
                for listing in listings
            ]
        )
        keep = 1 - Decimal("0.06")  # platform fee and insurance
        self.servers = []
        for i, (server, spec, price) in enumerate(zip(servers, specs, prices, strict=True)):
            purchase = Decimal(spec[2]) * Decimal(rng.randint(95, 105)) / 100
            record = collateral_register(
                owner=companies[i % 5],
                server=server,
                purchase_price=purchase.quantize(CENT),
                purchase_date=self.start.date() - timedelta(days=60),
                custodian="Equinix FR5",
                custody_receipt=f"EQX-{server.pk}",
                insurer="Lloyd's",
                policy_number=f"P-{server.pk}",
                coverage=purchase.quantize(CENT),
                insurance_expires=self.start.date() + timedelta(days=self.days + 400),
                today=self.start.date(),
            )
            record = collateral_approve(collateral=record, operator=self.operator, now=self.start)
            annual = (Decimal(8 * 24 * 365) * price * Decimal(str(self.args.utilisation)) * keep).quantize(CENT)
            value = (purchase * Decimal("0.8")).quantize(CENT)
            Appraisal.objects.create(
                collateral=record,
                as_of=self.start + timedelta(seconds=1),
                age_years=Decimal("0.16"),
                depreciation_rate=Decimal("0.2"),
                residual_floor=Decimal("0.1"),
                depreciated_value=value,
                trailing_net_revenue=(annual / 4).quantize(CENT),
                trailing_days=90,
                remaining_life_years=Decimal("4.8"),
                discount_rate=Decimal("0.12"),
                income_value=value,
                annual_net_income=annual,
                value=value,
            )
            record = Collateral.objects.get(pk=record.pk)
            tenor = rng.choice((12, 24, 24, 36))
            amount = (loan_max_amount(record, tenor_months=tenor) * Decimal(str(rng.uniform(0.55, 0.7)))).quantize(
                CENT, rounding=ROUND_DOWN
            )
            self.servers.append(
                {
                    "server": server,
                    "booking": self.bookings[i],
                    "collateral": record,
                    "company": companies[i % 5],
                    "price": price,
                    "offset": rng.randrange(len(self.profile)),
                    "tenor": tenor,
                    "amount": amount,
                    "origination": rng.randrange(min(60, max(1, self.days // 3))),
                    "loan": None,
                    "stop": None,  # default plan
                }
            )
        # The loans that fail: revenue stops on a random day; a third lose their hardware.
        failing = rng.sample(range(n), max(1, round(n * self.args.default_rate)))
        for k, i in enumerate(failing):
            s = self.servers[i]
            lo = s["origination"] + 20
            hi = max(lo + 1, int(self.days * 0.45))
            s["stop"] = rng.randrange(lo, hi)
            s["lost"] = k % 3 == 0
            s["foreclose_after"] = rng.randint(2, 6)
            s["relet_days"] = rng.randint(20, 50)
            s["relet_factor"] = rng.uniform(0.3, 0.6)
            s["sale_share"] = Decimal(str(round(rng.uniform(0.3, 0.8), 2)))
            s["claim_share"] = Decimal(str(round(rng.uniform(0.5, 0.9), 2)))
        # First-loss capital on half the failing loans and a few others.
        self.first_loss = set(failing[::2]) | set(rng.sample(range(n), max(1, n // 20)))
        self.lenders = [make_lender() for _ in range(LENDERS)]
        self.timers = [make_lender() for _ in range(TIMERS)]
        self.curator = make_lender()
        self.total_planned = sum(s["amount"] for s in self.servers)

    # --- the chain ---------------------------------------------------------------------

    def send(self, at: datetime) -> None:
        """Send the outbox with the chain clock at ``at``; around each report, read the price
        at the same block time just before and just after it is mined."""
        from financing.chain.node import get_chain
        from financing.models import ChainOp, RevenueEpoch
        from financing.services import outbox

        chain = get_chain()
        base = int(at.timestamp())
        while True:
            open_ops = ChainOp.objects.filter(status__in=["pending", "signed"])
            report = open_ops.filter(contract="SUSDai", function="report").order_by("pk").first()
            if report is None:
                chain.at(base)
                self._drain(outbox)
                return
            number = int(report.key.split(":")[1])
            report_ts = int(RevenueEpoch.objects.get(number=number).closed_at.timestamp())
            before = open_ops.filter(pk__lt=report.pk).count()
            chain.at(max(base, report_ts - before))
            if before:
                done = outbox.chain_send(max_ops=before)
                if done["confirmed"] + done["failed"] != before:
                    raise RuntimeError(f"outbox stalled before {report.key}: {done}")
            chain.at(max(base, report_ts))
            chain._before_send()  # the pending block's time: the report's
            vault = chain.contract("SUSDai").functions
            holders = [w for w in self.timer_wallets() if w]
            price0 = vault.convertToAssets(E18).call(block_identifier="pending")
            locked0 = vault.locked_profit().call(block_identifier="pending")
            held = {a: vault.balanceOf(a).call(block_identifier="pending") for a in holders}
            held["queued"] = self.timers_queued_wei()  # shares in the queue are paid at a later price
            done = outbox.chain_send(max_ops=1)
            report.refresh_from_db()
            if report.status != "confirmed":
                raise RuntimeError(f"{report.key} not confirmed: {report.status} {report.last_error} {done}")
            price1 = vault.convertToAssets(E18).call()
            ev = next(e for e in report.result["events"] if e["event"] == "Reported")["args"]
            loss, gain, locked1 = int(ev["loss"]), int(ev["gain"]), int(ev["locked"])
            if loss:
                self.report_loss += Decimal(loss) / E18
                self.report_loss_absorbed += Decimal(locked0 - locked1) / E18
                self.largest_losses.append((loss, locked0 - locked1, price0 - price1, report.key))
                self.largest_losses = sorted(self.largest_losses, reverse=True)[:5]
            else:
                self.report_gain_locked += Decimal(gain) / E18
            self.reports_measured += 1
            delta = price1 - price0
            if delta < 0:
                self.max_drop = max(self.max_drop, Decimal(-delta) / E18)
            for shares in held.values():
                g = Decimal(shares) * Decimal(max(delta, 0)) / E18 / E18
                if g > self.max_gain:
                    self.max_gain, self.max_gain_where = g, f"{report.key}: {shares} shares held across it"

    def _drain(self, outbox) -> None:
        for _ in range(50):
            done = outbox.chain_send(max_ops=500)
            if done["waiting"]:
                raise RuntimeError(f"outbox waiting: {done}")
            if not done["confirmed"] and not done["failed"]:
                return
        raise RuntimeError("outbox never drained")

    def timers_queued_wei(self) -> int:
        from financing.chain.client import shares_wei
        from financing.models import Redemption

        queued = Redemption.objects.filter(user__in=self.timers, status__in=["requested", "queued"])
        return sum((shares_wei(r.shares_left) for r in queued), 0)

    def timer_wallets(self) -> list[str]:
        from financing.models import Wallet

        return list(Wallet.objects.filter(user__in=self.timers).values_list("address", flat=True))

    # --- lenders -----------------------------------------------------------------------

    def deposit(self, user, amount: Decimal):
        from financing.services.vault import vault_deposit
        from financing.services.wallets import usdai_buy

        amount = amount.quantize(CENT)
        left = amount
        while left > 0:
            part = min(left, Decimal("1000000.00"))
            usdai_buy(user=user, amount=part)
            left -= part
        return vault_deposit(user=user, amount=amount)

    def redeem_share(self, user, share: float):
        from financing.selectors.vault import redemptions_sending, vault_position
        from financing.services.vault import redemption_request

        position = vault_position(user=user)
        available = max((position.shares or ZERO) - redemptions_sending(user=user), ZERO)
        amount = (available * Decimal(str(share))).quantize(Decimal("1E-18"), rounding=ROUND_DOWN)
        if amount < 10:
            amount = available
        if amount <= 0:
            return None
        return redemption_request(user=user, shares_amount=amount)

    # --- the run -----------------------------------------------------------------------

    def util(self, s: dict, day: int) -> float:
        u = self.profile[(s["offset"] + day) % len(self.profile)] * self.rng.uniform(0.8, 1.2)
        stop = s["stop"]
        if stop is not None and day >= stop:
            if s.get("lost") or s.get("foreclosed_day") is None:
                return 0.0
            u *= s["relet_factor"]
        return min(max(u, 0.0), 1.0)

    def settle(self, day: int) -> None:
        """The settlements of the day that ended at ``day``'s start, journaled."""
        from financing.services.revenue import settlements_journal
        from marketplace.models import Settlement

        every = self.args.settle_every
        if day == 0 or day % every:
            return
        end = self.start + timedelta(days=day)
        rows = []
        for s in self.servers:
            u = sum(self.util(s, d) for d in range(day - every, day)) / every
            gross = (Decimal(8 * 24 * every) * Decimal(str(round(u, 4))) * s["price"]).quantize(CENT)
            if gross <= 0:
                continue
            rows.append(
                Settlement(
                    booking=s["booking"],
                    server=s["server"],
                    interval_start=end - timedelta(days=every),
                    interval_end=end,
                    gpu_seconds=int(8 * 86400 * every * u),
                    gross_amount=gross,
                )
            )
        Settlement.objects.bulk_create(rows, batch_size=5000)
        while settlements_journal(batch=2000):
            pass

    def credit_events(self, day: int, now: datetime) -> None:
        """Originations, first-loss posts, hardware losses, foreclosures, claims, write-offs."""
        from financing.models import InsuranceClaim, Loan
        from financing.services.collateral import hardware_loss_declare
        from financing.services.delinquency import loan_foreclose
        from financing.services.loans import loan_apply, loan_approve
        from financing.services.losses import claim_settle, first_loss_post, loan_write_off, recovery_values

        for i, s in enumerate(self.servers):
            if s["loan"] is None:
                if s["origination"] == day:
                    loan = loan_apply(
                        owner=s["company"],
                        collateral=s["collateral"],
                        amount=s["amount"],
                        tenor_months=s["tenor"],
                        now=now,
                    )
                    s["loan"] = loan_approve(loan=loan, operator=self.operator, now=now)
                continue
            loan = s["loan"]
            if i in self.first_loss and day == s["origination"] + 1:
                amount = (s["amount"] * Decimal("0.10")).quantize(CENT)
                self.curator_buy(amount)
                first_loss_post(user=self.curator, loan=loan, amount=amount)
            if s["stop"] is None:
                continue
            if s.get("lost") and day == s["stop"]:
                s["claim"] = hardware_loss_declare(
                    collateral=s["collateral"], operator=self.operator, description="Fire in the hall", now=now
                )
                self.events["hardware_lost"] += 1
            if day < s["stop"]:
                continue
            status = Loan.objects.filter(pk=loan.pk).values_list("status", flat=True).get()
            if status == Loan.Status.DEFAULTED:
                s.setdefault("defaulted_day", day)
                if day >= s["defaulted_day"] + s["foreclose_after"]:
                    loan_foreclose(loan=loan, operator=self.operator, now=now)
                    s["foreclosed_day"] = day
                    self.events["foreclosed"] += 1
            elif status == Loan.Status.FORECLOSED:
                since = day - s["foreclosed_day"]
                claim = s.get("claim")
                if claim is not None and since == 10:
                    claim.refresh_from_db()
                    if claim.status == InsuranceClaim.Status.OPEN:
                        paid = (claim.amount_claimed * s["claim_share"]).quantize(CENT)
                        claim_settle(claim=claim, operator=self.operator, amount_paid=paid, now=now)
                        self.events["claims_settled"] += 1
                if since >= max(s["relet_days"], 11):
                    value = recovery_values([Loan.objects.get(pk=loan.pk)])[loan.pk]
                    proceeds = ZERO if s.get("lost") else (value * s["sale_share"]).quantize(CENT)
                    loan_write_off(loan=loan, operator=self.operator, sale_proceeds=proceeds, now=now)
                    self.events["written_off"] += 1
        for s in self.servers:
            if s["loan"] is not None and s["stop"] is not None and "defaulted_day" in s and not s.get("counted"):
                s["counted"] = True
                self.events["defaulted"] += 1

    def curator_buy(self, amount: Decimal) -> None:
        from financing.services.wallets import usdai_buy

        usdai_buy(user=self.curator, amount=amount)

    def lender_activity(self, day: int) -> None:
        rng = self.rng
        if day == 0:
            # The vault is funded ahead of the loans: the book's principal and a fifth more.
            each = (self.total_planned * Decimal("1.2") / LENDERS).quantize(CENT)
            for lender in self.lenders:
                self.deposit(lender, each)
            return
        for lender in self.lenders:
            p = rng.random()
            if p < 0.02:
                self.deposit(lender, Decimal(rng.randint(10_000, 300_000)))
            elif p < 0.03 and day > 30:
                self.redeem_share(lender, rng.uniform(0.05, 0.3))

    def timers_before(self, day: int) -> None:
        """Timer 0 (every 7th day) and timer 2 (every 7th day, shifted) deposit just before the report."""
        self.pending_before = []
        for k, phase in ((0, 1), (2, 5)):
            if day % 7 == phase:
                amount = Decimal(self.rng.randint(50_000, 500_000))
                self.pending_before.append((self.timers[k], self.deposit(self.timers[k], amount)))

    def timers_after(self, day: int) -> None:
        """Just after the report: the pre-report depositors ask to redeem everything; timer 1
        and timer 2 (on other days) deposit, and redeem a week later."""
        self.pending_after = []
        for user, _ in self.pending_before:
            self.redeem_share(user, 1.0)
        for k, phase in ((1, 3), (2, 6)):
            if day % 7 == phase:
                if day >= 7:
                    self.redeem_share(self.timers[k], 1.0)
                amount = Decimal(self.rng.randint(50_000, 500_000))
                self.pending_after.append(self.deposit(self.timers[k], amount))

    def measure_after_deposits(self) -> None:
        from financing.chain.client import shares_wei
        from financing.chain.node import get_chain

        chain = get_chain()
        for deposit in self.pending_after:
            deposit.refresh_from_db()
            if deposit.shares is None:
                raise RuntimeError(f"deposit {deposit.pk} has no shares: {deposit.op.status}")
            value = chain.call("SUSDai", "convertToAssets", shares_wei(deposit.shares))
            gain = Decimal(value) / E18 - deposit.amount
            self.deposits_after_report += 1
            if gain > self.max_gain:
                self.max_gain, self.max_gain_where = gain, f"deposit {deposit.pk} just after a report"

    def run(self) -> None:
        from financing.services.delinquency import loans_service
        from financing.services.vault import vault_daily, vault_service

        t_start = time.perf_counter()
        self.phase = {}

        def timed(name, fn, *a, **kw):
            t = time.perf_counter()
            out = fn(*a, **kw)
            self.phase[name] = self.phase.get(name, 0.0) + time.perf_counter() - t
            return out

        for day in range(self.days):
            t0 = self.start + timedelta(days=day)
            timed("settle", self.settle, day)
            timed("loans_service", loans_service, now=t0 + timedelta(hours=1))
            timed("lenders", self.lender_activity, day)
            timed("credit", self.credit_events, day, t0 + timedelta(hours=2))
            vault_service()
            timed("send", self.send, t0 + timedelta(hours=4))
            timed("timers", self.timers_before, day)
            timed("send", self.send, t0 + timedelta(hours=11, minutes=59))
            noon = t0 + timedelta(hours=12)
            timed("vault_daily", vault_daily, today=t0.date(), now=noon)
            timed("send", self.send, noon)
            timed("timers", self.timers_after, day)
            timed("send", self.send, noon + timedelta(minutes=1))
            timed("timers", self.measure_after_deposits)
            if (day + 1) % 30 == 0 or day == self.days - 1:
                self.progress(day, time.perf_counter() - t_start)
        end = self.start + timedelta(days=self.days)
        self.settle(self.days)
        loans_service(now=end + timedelta(hours=1))
        vault_daily(today=end.date(), now=end + timedelta(hours=12))
        self.send(end + timedelta(hours=12))

    def progress(self, day: int, seconds: float) -> None:
        from financing.models import Loan
        from financing.selectors.vault import vault_books

        books = vault_books()
        counts = {
            k: Loan.objects.filter(status=k).count()
            for k in ("active", "defaulted", "foreclosed", "repaid", "written_off")
        }
        print(
            f"month {round((day + 1) * 12 / 365):>2} (day {day + 1}): NAV {books.nav:,.2f}, cash {books.cash:,.2f}, "
            f"T-bills {books.tbills:,.2f}, loans {books.loans:,.2f}; {counts}; max timing gain {self.max_gain:.9f}; "
            f"{seconds:.0f} s " + str({k: round(v) for k, v in self.phase.items()}),
            flush=True,
        )


def balance(**filters) -> Decimal:
    from django.db.models import Sum

    from financing.models import Posting

    return Posting.objects.filter(**filters).aggregate(s=Sum("amount"))["s"] or ZERO


def results(sim: Sim, seconds_start: float) -> dict:
    from django.db.models import Sum

    from financing.chain.node import get_chain
    from financing.chart_of_accounts import WRITE_LINES
    from financing.models import ChainOp, Loan, Posting, VaultDay
    from financing.selectors.vault import vault_books
    from financing.services.reconcile import chain_reconcile

    unbalanced = Posting.objects.values("entry_id").annotate(s=Sum("amount")).exclude(s=0).count()
    # The vault's identity: what holders put in, plus the vault's income, less the credit
    # losses charged to the loans' value, is what the vault holds.
    holders_in = -balance(account__code="susdai_holders")
    loan_interest = balance(account__code="vault_cash", line="to_vault_interest")
    tbill_interest = balance(account__code="vault_cash", line="tbill_interest")
    loan_accounts = {"account__code__regex": r"^(principal|claim|allowance):"}
    charged = balance(line__in=WRITE_LINES, **loan_accounts)
    books = vault_books()
    left = holders_in + loan_interest + tbill_interest + charged
    right = books.cash + books.tbills + books.loans
    in_flight = ChainOp.objects.filter(status__in=["pending", "signed"]).count()
    failed = ChainOp.objects.filter(status="failed").count()
    report = chain_reconcile()
    supply = next(c for c in report.checks if c["name"].startswith("USDai total supply"))
    chain = get_chain()
    conserved = (
        unbalanced == 0 and left == right and in_flight == 0 and supply["ok"] and report.mismatches == 0 and failed == 0
    )

    days = list(VaultDay.objects.order_by("date").values_list("nav", flat=True))
    average_nav = sum(days, ZERO) / len(days) if days else ZERO
    years = Decimal(sim.days) / Decimal(365)

    def apr(income: Decimal) -> str:
        return str((income / average_nav / years).quantize(Decimal("0.000001"))) if average_nav > 0 else "0"

    written_down = absorbed = written_up = ZERO
    for op in ChainOp.objects.filter(contract="SUSDai", function__in=["write_down", "write_up"], status="confirmed"):
        for e in op.result.get("events", []):
            if e["event"] == "WrittenDown":
                written_down += Decimal(int(e["args"]["amount"])) / E18
                absorbed += Decimal(int(e["args"]["absorbed_by_locked"])) / E18
            elif e["event"] == "WrittenUp":
                written_up += Decimal(int(e["args"]["amount"])) / E18
    reserve = balance(account__code__startswith="reserve:", line="reserve_applied")
    first_loss = balance(account__code__startswith="first_loss:", line="first_loss_applied")
    losses = {
        "reserve_applied": str(reserve),
        "first_loss_applied": str(first_loss),
        "written_down": str(written_down),
        "written_up": str(written_up),
        "absorbed_by_locked_profit": str(absorbed + sim.report_loss_absorbed),
        "absorbed_by_locked_profit_write_down": str(absorbed),
        "absorbed_by_locked_profit_report": str(sim.report_loss_absorbed),
        "holders": str(written_down - absorbed + sim.report_loss - sim.report_loss_absorbed),
        "holders_net_of_write_ups": str(
            written_down - absorbed - written_up + sim.report_loss - sim.report_loss_absorbed
        ),
        "report_losses": str(sim.report_loss),
        "credit_losses_books": str(balance(account__code="credit_losses")),
    }
    loans = Loan.objects.exclude(status__in=["applied", "rejected"])
    out = {
        "benchmark": "credit",
        "database": "postgresql",
        "servers": sim.args.servers,
        "months": sim.args.months,
        "days": sim.days,
        "seed": sim.args.seed,
        "settle_every_days": sim.args.settle_every,
        "trace_mean_utilisation_raw": round(sim.trace_mean, 6),
        "utilisation_mean_target": sim.args.utilisation,
        "loans": loans.count(),
        "loans_by_status": {
            k: loans.filter(status=k).count() for k in ("active", "defaulted", "foreclosed", "repaid", "written_off")
        },
        "defaults": loans.filter(defaulted_at__isnull=False).count(),
        "credit_events": sim.events,
        "conserved": conserved,
        "conservation": {
            "unbalanced_entries": unbalanced,
            "vault_identity_left": str(left),
            "vault_identity_right": str(right),
            "ops_in_flight": in_flight,
            "ops_failed": failed,
            "usdai_supply_chain": supply["chain"],
            "usdai_supply_books": supply["ledger"],
        },
        "max_timing_gain_usd": str(sim.max_gain),
        "max_timing_gain_at": sim.max_gain_where,
        "max_report_price_drop": str(sim.max_drop),
        "reports_measured": sim.reports_measured,
        "largest_report_losses": [
            {
                "report": key,
                "loss": str(Decimal(loss) / E18),
                "absorbed_by_locked": str(Decimal(ab) / E18),
                "price_drop": str(Decimal(drop) / E18),
            }
            for loss, ab, drop, key in sim.largest_losses
        ],
        "deposits_after_report_measured": sim.deposits_after_report,
        "reconciliation_mismatches": report.mismatches,
        "reconciliation_checks": len(report.checks),
        "lender_apr_from_loans": apr(loan_interest),
        "lender_apr_from_tbills": apr(tbill_interest),
        "average_nav": str(average_nav.quantize(CENT)),
        "final_share_price": str(Decimal(chain.call("SUSDai", "convertToAssets", E18)) / E18),
        "losses_by_layer": losses,
        "chain_ops": ChainOp.objects.count(),
        "seconds": round(time.perf_counter() - seconds_start, 1),
    }
    ops = max(1, sim.reports_measured)
    out["goals"] = {
        "conserved": conserved,
        "timing_gain_le_1e-6": sim.max_gain <= Decimal("0.000001") and ops > 0,
        "zero_mismatches": report.mismatches == 0,
        "apr_from_loans_positive": loan_interest > 0 and average_nav > 0,
    }
    if report.mismatches:
        out["mismatched_checks"] = [c for c in report.checks if not c["ok"]][:10]
    return out


def main() -> None:
    args = parse()
    started = time.perf_counter()
    from bench._django import test_database

    with test_database() as connection:
        if connection.vendor != "postgresql":
            sys.exit("bench.credit needs PostgreSQL: set DATABASE_URL=postgres://…")
        from django.conf import settings

        settings.CHAIN_RPC_URL = ""
        from financing.chain import node

        node.chain_reset()
        sim = Sim(args)
        sim.seed()
        print(
            f"seeded {args.servers} servers, {len(sim.first_loss)} with first-loss capital, "
            f"{sum(1 for s in sim.servers if s['stop'] is not None)} set to fail; "
            f"book {sim.total_planned:,.2f} over {sim.days} days from {sim.start:%Y-%m-%d} "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        error = ""
        try:
            sim.run()
        except Exception:  # report what broke, and the books as they stand
            import traceback

            error = traceback.format_exc()
            print(error, file=sys.stderr, flush=True)
        out = results(sim, started)
        if error:
            out["error"] = error.strip().splitlines()[-1]
            out["goals"]["ran_to_the_end"] = False
    print(json.dumps(out))


if __name__ == "__main__":
    main()
