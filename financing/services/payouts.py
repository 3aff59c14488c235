"""Owner payouts: what each owner company has earned (its ``owner_payable:<id>`` account,
credited by the waterfall, reserve releases and insurance claims) paid out in runs, exactly
once, on one of two rails.

A run covers a half-open UTC period ``[period_start, period_end)``: weekly (the last complete
ISO week, ``payouts_weekly``, unique per period) or on demand by an operator (up to now).
Each company is owed what it earned before ``period_end`` less everything paid to it so
far (never more than its balance). Per company, one ``Payout`` row says what happened:

- withheld (a reason, nothing moves) while one of its loans is past due or in default;
- failed (a reason, nothing moves) when its stored IBAN is not a valid one;
- carried forward when below ``PAYOUT_MINIMUM_USD`` (paid by a later run);
- otherwise sent: whole cents of what is owed (the sub-cent rest is carried), as one ledger
  entry ``payout:<id>`` (debit the owner's payable; credit ``usdai_external`` for USDai,
  ``payouts_in_transit`` for SEPA) and its rail's row: the outbox mint ``payout:<id>:mint``
  to the company's payout wallet (else its custodial wallet), or a line (end-to-end id
  ``PAYOUT-<id>``) in an open SEPA file of the run.

The row, the entry and the rail's row are written in one transaction per company, under
the company's payable account row lock (``lock_objects.ledger_account_lock``; the wallet,
if one must be created, before it, as ``core.locks`` orders), so two runs at once pay a
company once, and a crash at any step leaves nothing of that payout.

Rail: SEPA when the company has an IBAN and prefers SEPA or has no payout wallet; USDai
otherwise. SEPA pays EUR: each line is converted at ``PAYOUT_USD_EUR_RATE`` (half-up to the
cent), and both amounts are kept; the books stay in USD.

Recovery: a run is written (committed) before its payouts, and marked done after its SEPA
files are built. Running the same period again (the weekly task runs hourly) resumes a run
a crash stopped: companies already paid are skipped, the rest are paid, the open SEPA files
built. A done run writes nothing more. A USDai payout is confirmed once its mint is confirmed
on chain (``payouts_confirm``); a SEPA payout once an operator marks its file sent
(``sepa_file_mark_sent``, which clears ``payouts_in_transit`` against the platform's cash).
"""

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max, Min, Q
from django.utils import timezone

from accounts.models import OwnerCompany, User
from accounts.validators import iban_problem
from core import money
from financing import lock_objects, sepa
from financing.chain.client import usd_to_wei
from financing.models import ChainOp, LedgerAccount, Loan, Payout, PayoutRun, Posting, SepaFile, Wallet
from financing.services.ledger import Line, journal_post, system_account
from financing.services.outbox import chainop_enqueue
from financing.services.wallets import wallet_for_company

logger = logging.getLogger(__name__)

PAYABLE_PREFIX = "owner_payable:"
PAYOUT_KEY_PREFIX = "payout:"
SEPA_SENT_KEY_PREFIX = "sepa:sent:"
LIVE_LOANS = (Loan.Status.ACTIVE, Loan.Status.DEFAULTED, Loan.Status.FORECLOSED)


def week_start(at: datetime) -> datetime:
    """Monday 00:00 UTC of the ISO week holding ``at``."""
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, at.day, tzinfo=UTC) - timedelta(days=at.weekday())


def payouts_weekly(*, now: datetime | None = None) -> PayoutRun | None:
    """Periodic: the run of the last complete ISO week (once; later calls resume or return it)."""
    return payout_run_create(period_end=week_start(now or timezone.now()), trigger=PayoutRun.Trigger.SCHEDULE)


def payout_run_create(*, period_end: datetime, trigger: str, created_by: User | None = None) -> PayoutRun | None:
    """Create (or resume) the run ending at ``period_end`` and pay every owner company in it.

    Scheduled runs are unique per period: the same period again resumes or returns that run;
    a period another run already reaches past returns ``None`` (nothing left to pay in it).
    An operator's run starts where the last run ended. See the module docstring.
    """
    if trigger not in PayoutRun.Trigger.values:
        raise ValidationError({"trigger": "Unknown trigger."})
    # A run a crash or a bad SEPA file left unfinished is finished first, whoever asks next:
    # a new period never starts while an earlier one still owes its files.
    for unfinished in PayoutRun.objects.filter(status=PayoutRun.Status.RUNNING, period_end__lt=period_end):
        _run_pay(unfinished)
    run = _run_open(period_end=period_end, trigger=trigger, created_by=created_by)
    if run is None or run.status == PayoutRun.Status.DONE:
        return run
    return _run_pay(run)


def _run_pay(run: PayoutRun) -> PayoutRun:
    """Pay every owner company in ``run`` (those paid already are skipped), build its SEPA files,
    mark it done. Safe to run again, and beside another caller doing the same."""
    accounts = LedgerAccount.objects.filter(code__startswith=PAYABLE_PREFIX, owner__isnull=False).order_by("owner_id")
    for account in accounts.select_related("owner"):
        _company_pay(run, account)
    for file_id in SepaFile.objects.filter(run=run, xml="").order_by("pk").values_list("pk", flat=True):
        try:
            sepa_file_build(file_id=file_id)
        except sepa.SepaError as exc:
            # Creditor text is cleaned to the SEPA set, so this is the debtor's configuration
            # (PAYOUT_DEBTOR_*): the payouts stay booked, the file open, the run running; running
            # again once it is fixed builds the file and finishes the run.
            logger.error("payout run %s: SEPA file %s cannot be built: %s", run.pk, file_id, exc)
            raise ValidationError(
                f"The SEPA file could not be built ({exc}). Check the platform's bank details "
                "(PAYOUT_DEBTOR_*) and run the payouts again: nothing is paid twice."
            ) from exc
    PayoutRun.objects.filter(pk=run.pk, status=PayoutRun.Status.RUNNING).update(
        status=PayoutRun.Status.DONE, finished_at=timezone.now()
    )
    run.refresh_from_db()
    return run


def _run_open(*, period_end: datetime, trigger: str, created_by: User | None) -> PayoutRun | None:
    if trigger == PayoutRun.Trigger.SCHEDULE:
        existing = PayoutRun.objects.filter(trigger=trigger, period_end=period_end).first()
        if existing is not None:
            return existing
        latest = PayoutRun.objects.aggregate(end=Max("period_end"))["end"]
        if latest is not None and latest >= period_end:
            return None  # an operator's run already paid past this period
        start = max(period_end - timedelta(days=7), latest) if latest else period_end - timedelta(days=7)
    else:
        latest = PayoutRun.objects.filter(period_end__lt=period_end).aggregate(end=Max("period_end"))["end"]
        start = latest or _first_earning(period_end) or period_end - timedelta(days=7)
    try:
        with transaction.atomic():
            return PayoutRun.objects.create(
                period_start=start, period_end=period_end, trigger=trigger, created_by=created_by
            )
    except IntegrityError:
        # A concurrent scheduler created this period's run first: that run is the one.
        return PayoutRun.objects.get(trigger=trigger, period_end=period_end)


def _first_earning(before: datetime) -> datetime | None:
    postings = Posting.objects.filter(account__code__startswith=PAYABLE_PREFIX, entry__created_at__lt=before)
    return postings.aggregate(at=Min("entry__created_at"))["at"]


def payable_owed(account: LedgerAccount, *, before: datetime) -> Decimal:
    """What ``account``'s company is owed for earnings journaled before ``before``: those
    earnings less every payout so far, never more than the account's balance."""
    postings = Posting.objects.filter(account=account)
    is_payout = Q(entry__key__startswith=PAYOUT_KEY_PREFIX)
    earned = -money.sum_of(postings.filter(entry__created_at__lt=before).exclude(is_payout))
    paid = money.sum_of(postings.filter(is_payout))
    balance = -money.sum_of(postings)
    return money.usd(max(min(earned - paid, balance), Decimal(0)))


def company_past_due(company: OwnerCompany) -> Loan | None:
    """The company's first loan past due or in default (its payouts are withheld meanwhile)."""
    return (
        Loan.objects.filter(owner=company)
        .filter(Q(status__in=LIVE_LOANS, days_past_due__gt=0) | Q(status=Loan.Status.DEFAULTED))
        .order_by("pk")
        .first()
    )


def payout_rail(company: OwnerCompany) -> str:
    """SEPA with an IBAN (unless the company prefers USDai and has a payout wallet), else USDai."""
    if company.payout_iban and (company.payout_rail == Payout.Rail.SEPA or not company.payout_wallet_address):
        return Payout.Rail.SEPA
    return Payout.Rail.USDAI


def _company_pay(run: PayoutRun, account: LedgerAccount) -> Payout | None:
    """The company's payout in ``run`` (or its reason for none), once; see the module docstring."""
    company = account.owner
    existing = Payout.objects.filter(run=run, company=company).first()
    if existing is not None:
        return existing
    rail = payout_rail(company)
    with transaction.atomic():
        address = company.payout_wallet_address if rail == Payout.Rail.USDAI else ""
        if rail == Payout.Rail.USDAI and not address and _would_pay(account, run, company):
            # Wallet before LedgerAccount (core.locks): creating the custodial wallet locks it.
            address = wallet_for_company(company=company).address
        account = lock_objects.ledger_account_lock(account.pk)
        existing = Payout.objects.filter(run=run, company=company).first()
        if existing is not None:
            return existing  # a concurrent run of this period paid it while this one waited
        owed = payable_owed(account, before=run.period_end)
        amount = money.cents_down(owed)
        if amount <= 0:
            return None  # nothing, or only a sub-cent rest: no payout to speak of
        unpaid = {"run": run, "company": company, "amount": owed, "rail": rail}
        if loan := company_past_due(company):
            return Payout.objects.create(
                **unpaid,
                status=Payout.Status.WITHHELD,
                reason=f"Loan {loan.public_id} is {loan.days_past_due} days past due ({loan.get_status_display()}).",
            )
        if rail == Payout.Rail.SEPA and (problem := iban_problem(company.payout_iban)):
            return Payout.objects.create(
                **unpaid, status=Payout.Status.FAILED, reason=f"The stored IBAN is refused: {problem}"
            )
        if amount < settings.PAYOUT_MINIMUM_USD:
            return Payout.objects.create(
                **unpaid,
                status=Payout.Status.CARRIED,
                reason=f"Below the ${settings.PAYOUT_MINIMUM_USD:,} minimum: carried to the next run.",
            )
        if rail == Payout.Rail.USDAI and not address:
            # Became payable after the look before the lock, and no wallet yet: the next run pays it.
            wallet = Wallet.objects.filter(company=company).first()
            if wallet is None:
                return None
            address = wallet.address
        # Pending only inside this transaction: it commits sent, with its entry and rail row.
        payout = Payout.objects.create(**unpaid | {"amount": amount}, status=Payout.Status.PENDING)
        if rail == Payout.Rail.USDAI:
            return _usdai_send(payout, account, address)
        return _sepa_line(payout, account)


def _would_pay(account: LedgerAccount, run: PayoutRun, company: OwnerCompany) -> bool:
    """A look without the lock: is this company about to be paid (so its wallet is needed)?"""
    amount = money.cents_down(payable_owed(account, before=run.period_end))
    return amount >= settings.PAYOUT_MINIMUM_USD and company_past_due(company) is None


def _usdai_send(payout: Payout, account: LedgerAccount, address: str) -> Payout:
    key = f"{PAYOUT_KEY_PREFIX}{payout.pk}"
    journal_post(
        key=key,
        description=f"Payout {payout.pk} to {payout.company}: {payout.amount} USDai to {address}",
        lines=[
            Line(account, payout.amount, "payout"),
            Line(system_account("usdai_external"), -payout.amount, "payout"),
        ],
    )
    op = chainop_enqueue(
        key=f"{key}:mint", contract="USDai", function="mint", args=[address, usd_to_wei(payout.amount)]
    )
    Payout.objects.filter(pk=payout.pk).update(status=Payout.Status.SENT, entry_key=key, op=op, address=address)
    payout.refresh_from_db()
    return payout


def _sepa_line(payout: Payout, account: LedgerAccount) -> Payout:
    company = payout.company
    rate = settings.PAYOUT_USD_EUR_RATE
    key = f"{PAYOUT_KEY_PREFIX}{payout.pk}"
    journal_post(
        key=key,
        description=f"Payout {payout.pk} to {company}: {payout.amount} USD by SEPA transfer",
        lines=[
            Line(account, payout.amount, "payout"),
            Line(system_account("payouts_in_transit"), -payout.amount, "payout"),
        ],
    )
    Payout.objects.filter(pk=payout.pk).update(
        status=Payout.Status.SENT,
        entry_key=key,
        sepa_file=_open_sepa_file(payout.run),
        end_to_end_id=f"PAYOUT-{payout.pk}",
        iban=sepa.account_id(company.payout_iban),
        bic=sepa.account_id(company.payout_bic),
        amount_eur=money.cents(payout.amount * rate),
        usd_eur_rate=rate,
    )
    payout.refresh_from_db()
    return payout


def _open_sepa_file(run: PayoutRun) -> SepaFile:
    """The run's file that still takes lines (locked), or a new one."""
    for file_id in SepaFile.objects.filter(run=run, xml="").order_by("pk").values_list("pk", flat=True):
        locked = lock_objects.sepa_file_lock(file_id)
        if not locked.xml:
            return locked
    return SepaFile.objects.create(run=run)


def _debtor() -> sepa.Party:
    return sepa.Party(
        name=settings.PAYOUT_DEBTOR_NAME,
        iban=settings.PAYOUT_DEBTOR_IBAN,
        bic=settings.PAYOUT_DEBTOR_BIC,
        country=settings.PAYOUT_DEBTOR_COUNTRY,
    )


def sepa_file_build(*, file_id: int) -> SepaFile:
    """Build an open file's pain.001 XML from its lines and close it (once; under its lock)."""
    with transaction.atomic():
        sepa_file = lock_objects.sepa_file_lock(file_id)
        if sepa_file.xml:
            return sepa_file
        payouts = list(sepa_file.payouts.select_related("company").order_by("pk"))
        if not payouts:
            return sepa_file
        transfers = [
            sepa.CreditTransfer(
                creditor=sepa.Party(
                    name=p.company.payout_account_holder or p.company.name,
                    iban=p.iban,
                    bic=p.bic,
                    country=p.company.country,
                    address_lines=(p.company.address_line1, p.company.address_line2),
                ),
                amount_eur=p.amount_eur,
                end_to_end_id=p.end_to_end_id,
                description=(
                    f"InfraFi payout {p.pk}, {p.run.period_start:%Y-%m-%d} to {p.run.period_end:%Y-%m-%d}: "
                    f"{p.amount:.2f} USD at {p.usd_eur_rate} EUR/USD"
                ),
            )
            for p in payouts
        ]
        document = sepa.pain001_build(debtor=_debtor(), transfers=transfers, execution_date=timezone.now().date())
        sepa_file.message_id = document.message_id
        sepa_file.xml = document.xml
        sepa_file.total_eur = document.total_eur
        sepa_file.total_usd = sum((p.amount for p in payouts), Decimal(0))
        sepa_file.save(update_fields=["message_id", "xml", "total_eur", "total_usd"])
    return sepa_file


def sepa_file_mark_sent(*, sepa_file: SepaFile, by: User) -> SepaFile:
    """Operator: the file was uploaded to the bank. Its payouts are confirmed and the money in
    transit leaves the platform's cash (``gateway_clearing``), once."""
    with transaction.atomic():
        locked = lock_objects.sepa_file_lock(sepa_file.pk)
        if locked.sent_at is not None:
            return locked
        if not locked.xml:
            raise ValidationError("This file is not built yet; run the payouts again to build it.")
        total = money.usd(locked.total_usd)
        journal_post(
            key=f"{SEPA_SENT_KEY_PREFIX}{locked.pk}",
            description=f"SEPA file {locked.message_id} sent to the bank ({locked.total_eur} EUR)",
            lines=[
                Line(system_account("payouts_in_transit"), total, "payout_sent"),
                Line(system_account("gateway_clearing"), -total, "payout_sent"),
            ],
        )
        now = timezone.now()
        locked.sent_at, locked.sent_by = now, by
        locked.save(update_fields=["sent_at", "sent_by"])
        locked.payouts.filter(status=Payout.Status.SENT).update(status=Payout.Status.CONFIRMED, confirmed_at=now)
    return locked


def payouts_confirm() -> int:
    """Periodic: USDai payouts whose mint is confirmed on chain are confirmed."""
    with transaction.atomic():
        return Payout.objects.filter(
            rail=Payout.Rail.USDAI, status=Payout.Status.SENT, op__status=ChainOp.Status.CONFIRMED
        ).update(status=Payout.Status.CONFIRMED, confirmed_at=timezone.now())
