"""Loss recognition, recoveries and first-loss capital.

What a loan is worth to lenders is its principal less the allowance for its
expected loss. The allowance moves with the loan's condition, and each move
reaches the vault's NAV at the next epoch (``SUSDai.write_down`` for an
increase, ``SUSDai.write_up`` for a decrease, net per epoch; see
``financing.services.epochs``), for deposits and redemptions alike.

- **Non-accrual.** A loan that defaults stops accruing
  (``LoanBook.accrue``) and the interest accrued and unpaid is reversed (Dr
  interest income, Cr the loan's interest receivable): it leaves the NAV at
  the next report, whose accrued interest falls. What a defaulted loan pays
  is principal.
- **Impairment.** The loan's expected loss is what its principal exceeds the
  loss layers ahead of lenders by: its reserve, its first-loss capital, and
  the recovery value of its hardware (the latest appraisal less
  ``LOAN_RECOVERY_HAIRCUT``; for hardware declared lost, the open insurance
  claim instead). The allowance is a share of that loss set by days past due
  (``LOAN_IMPAIRMENT_STEPS``: 25 % from 30 days), all of it from default.
  A loan that becomes current again has its allowance reversed.
- **Foreclosure** applies the loss waterfall: what the reserve still holds,
  then the first-loss capital, pay principal down (cash to the vault); an
  open claim on the lost hardware becomes a receivable (``claim:<loan>``);
  the rest is impaired to the hardware's recovery value. On chain, what is
  left after that is absorbed by locked profit first, then by every sUSDai
  holder pro rata (the vault's NAV falls; nobody is paid first).
- **Recoveries** write the loan back up: re-lease revenue after foreclosure
  (the waterfall sends it all to principal) lowers the expected loss and so
  the allowance; a sale (``loan_write_off``) or a claim payment
  (``claim_settle``) brings cash in, and a claim paid short of its
  receivable is a loss.
- **Write-off** (``loan_write_off``) ends recovery: the sale proceeds pay
  principal, the rest of the principal is charged to the allowance (and
  beyond it to credit losses), and what the allowance held beyond that is
  released.
- **First-loss capital** (USD.AI's FiLo curators; ``first_loss_post``): an
  owner or a curator posts USDai on a loan. It is held by the protocol and
  absorbs the loan's loss at foreclosure before lenders do; in return it
  earns ``premium_share`` of the loan's interest net of the protocol fee
  (``FIRST_LOSS_PREMIUM_APR`` on the capital, as a share of the loan's
  interest at posting). The capital left and the premium earned are paid back
  in USDai when the loan ends.
"""

from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from core import money
from financing import lock_objects
from financing.chain.client import address_for, usd_to_wei
from financing.models import Appraisal, FirstLoss, InsuranceClaim, Loan, Wallet
from financing.services.ledger import Accounts, EntryBatch, Line
from financing.services.outbox import chainop_enqueue
from financing.services.servicing import LoanBook
from financing.services.wallets import usdai_amount, usdai_spendable, wallet_for_user
from marketplace.models import Listing

ZERO = Decimal(0)
LIVE = (Loan.Status.ACTIVE, Loan.Status.DEFAULTED, Loan.Status.FORECLOSED)


# --- What a loan may lose -----------------------------------------------------------


def recovery_values(loans: list[Loan]) -> dict[int, Decimal]:
    """What each loan's hardware would recover: an open claim's amount when the hardware is
    lost (and not yet booked as a receivable), else its latest appraisal less the haircut.
    Three queries for any number of loans."""
    by_collateral = {loan.collateral_id: loan.pk for loan in loans}
    claimed: dict[int, Decimal] = {}
    for collateral_id, status, amount in InsuranceClaim.objects.filter(collateral_id__in=by_collateral).values_list(
        "collateral_id", "status", "amount_claimed"
    ):
        open_amount = amount if status == InsuranceClaim.Status.OPEN else ZERO
        claimed[collateral_id] = claimed.get(collateral_id, ZERO) + open_amount
    latest: dict[int, Decimal] = {}
    # Newest first per collateral; the first row of each is its latest (portable: no DISTINCT ON,
    # which SQLite, the embedded demo's database, does not have).
    for collateral_id, value in (
        Appraisal.objects.filter(collateral_id__in=by_collateral)
        .order_by("collateral_id", "-as_of", "-id")
        .values_list("collateral_id", "value")
    ):
        latest.setdefault(collateral_id, value)
    haircut = 1 - settings.LOAN_RECOVERY_HAIRCUT
    return {
        loan_id: money.usd(claimed[cid] if cid in claimed else (latest.get(cid) or ZERO) * haircut)
        for cid, loan_id in by_collateral.items()
    }


def impairment_stage(loan: Loan) -> Decimal:
    """The share of the expected loss provided for: by days past due, all of it from default."""
    if loan.status in (Loan.Status.DEFAULTED, Loan.Status.FORECLOSED):
        return Decimal(1)
    if loan.status != Loan.Status.ACTIVE:
        return ZERO
    stage = ZERO
    for days, share in settings.LOAN_IMPAIRMENT_STEPS:
        if loan.days_past_due >= days:
            stage = Decimal(share)
    return stage


def expected_loss(book: LoanBook, loan: Loan, recovery: Decimal) -> Decimal:
    state = book.states[loan.pk]
    claim_booked = state.claim > 0  # a booked claim is carried at its own value, beside principal
    recovery = ZERO if claim_booked and loan.status == Loan.Status.FORECLOSED else recovery
    return max(state.principal - state.reserve - state.first_loss - recovery, ZERO)


def impairment_lines(book: LoanBook, loan: Loan, recovery: Decimal) -> list[Line]:
    """Move the loan's allowance to its target (maybe no lines)."""
    state = book.states[loan.pk]
    target = money.usd(impairment_stage(loan) * expected_loss(book, loan, recovery))
    target = min(target, max(state.principal, ZERO))
    delta = target - state.allowance
    if delta == 0:
        return []
    state.allowance = target
    line = "impairment" if delta > 0 else "impairment_reversal"
    return [
        Line(book.accounts.system("credit_losses"), delta, line),
        Line(book.accounts.loan(loan, "allowance"), -delta, line),
    ]


def non_accrual_lines(book: LoanBook, loan: Loan) -> list[Line]:
    """Reverse the interest a loan in default accrued and did not pay."""
    state = book.states[loan.pk]
    if loan.status == Loan.Status.ACTIVE or state.interest <= 0:
        return []
    amount, state.interest = state.interest, ZERO
    return [
        Line(book.accounts.system("interest_income"), amount, "non_accrual"),
        Line(book.accounts.loan(loan, "interest"), -amount, "non_accrual"),
    ]


def _to_vault(book: LoanBook, loan: Loan, amount: Decimal, source: Line, line: str) -> list[Line]:
    """``amount`` of cash (from ``source``'s account) pays principal down: the cash goes to the vault."""
    state = book.states[loan.pk]
    state.principal -= amount
    return [
        source,
        Line(book.accounts.loan(loan, "principal"), -amount, line),
        Line(book.accounts.system("vault_cash"), amount, "to_vault_principal"),
        Line(book.accounts.system("gateway_clearing"), -amount, "to_vault"),
    ]


def foreclosure_lines(book: LoanBook, loan: Loan) -> list[Line]:
    """The loss waterfall at foreclosure: reserve, then first-loss capital, pay principal down;
    an open claim is booked as a receivable; the rest is impaired to the recovery value."""
    state = book.states[loan.pk]
    lines: list[Line] = list(non_accrual_lines(book, loan))
    for layer in ("reserve", "first_loss"):  # the loss layers ahead of lenders, in order
        amount = min(getattr(state, layer), max(state.principal, ZERO))
        if amount <= 0:
            continue
        if layer == "first_loss":
            # The capital is USDai the protocol holds: it is burnt, and the epoch's recall mints
            # as much into the vault (as the principal it repaid).
            chainop_enqueue(
                key=f"loan:{loan.pk}:first-loss-burn", contract="USDai", function="burn", args=[usd_to_wei(amount)]
            )
        setattr(state, layer, getattr(state, layer) - amount)
        line = f"{layer}_applied"
        lines += _to_vault(book, loan, amount, Line(book.accounts.loan(loan, layer), amount, line), line)
    claimed = money.usd(
        money.sum_of(
            InsuranceClaim.objects.filter(collateral_id=loan.collateral_id, status=InsuranceClaim.Status.OPEN),
            "amount_claimed",
        )
    )
    booked = min(claimed, max(state.principal, ZERO))
    if booked > 0:
        state.principal -= booked
        state.claim += booked
        lines += [
            Line(book.accounts.loan(loan, "claim"), booked, "claim_booked"),
            Line(book.accounts.loan(loan, "principal"), -booked, "claim_booked"),
        ]
    return lines + impairment_lines(book, loan, recovery_values([loan])[loan.pk])


# --- Write-off and claims ---------------------------------------------------------------


def loan_write_off(*, loan: Loan, operator: User, sale_proceeds: Decimal = ZERO, now: datetime | None = None) -> Loan:
    """End the recovery of a foreclosed loan: the hardware's sale proceeds pay principal, the
    rest is written off (against the allowance, then as a further loss), first-loss capital
    left is returned with its premium."""
    if not operator.is_staff:
        raise PermissionDenied("Only an operator writes a loan off.")
    sale_proceeds = Decimal(sale_proceeds)
    if sale_proceeds < 0 or sale_proceeds != money.cents(sale_proceeds):
        raise ValidationError({"sale_proceeds": "Enter the sale proceeds in dollars and cents (zero or more)."})
    now = now or timezone.now()
    with transaction.atomic():
        locked = lock_objects.loan_lock(loan.pk)
        if locked.status != Loan.Status.FORECLOSED:
            raise ValidationError({"loan": "Only a foreclosed loan can be written off."})
        book = LoanBook([locked], window_start=now, window_end=now, accounts=Accounts())
        state = book.states[locked.pk]
        entries = EntryBatch()
        recovered = min(sale_proceeds, max(state.principal, ZERO))
        lines: list[Line] = []
        if recovered > 0:
            lines += _to_vault(
                book,
                locked,
                recovered,
                Line(book.accounts.system("gateway_clearing"), recovered, "sale"),
                "recovery",
            )
        surplus = sale_proceeds - recovered
        if surplus > 0:  # the protocol owns the server: what the sale makes beyond the debt is its own
            lines += [
                Line(book.accounts.system("gateway_clearing"), surplus, "sale"),
                Line(book.accounts.system("platform_revenue"), -surplus, "sale_surplus"),
            ]
        left = max(state.principal, ZERO)
        if left > 0:
            charged = min(left, state.allowance)
            lines += [
                Line(book.accounts.loan(locked, "allowance"), charged, "write_off"),
                Line(book.accounts.system("credit_losses"), left - charged, "write_off"),
                Line(book.accounts.loan(locked, "principal"), -left, "write_off"),
            ]
            state.allowance -= charged
            state.principal = ZERO
        if state.allowance > 0:
            lines += [
                Line(book.accounts.loan(locked, "allowance"), state.allowance, "impairment_reversal"),
                Line(book.accounts.system("credit_losses"), -state.allowance, "impairment_reversal"),
            ]
            state.allowance = ZERO
        if lines:
            entries.add(
                key=f"loan:{locked.pk}:write-off", description=f"Loan {locked.public_id} written off", lines=lines
            )
        entries.flush()
        first_loss_close(book=book, loan=locked, now=now)
        locked.status, locked.written_off_at = Loan.Status.WRITTEN_OFF, now
        locked.save(update_fields=["status", "written_off_at"])
        Listing.objects.filter(server_id=locked.collateral.server_id).update(financed=False)
    return locked


def claim_settle(
    *, claim: InsuranceClaim, operator: User, amount_paid: Decimal, now: datetime | None = None
) -> InsuranceClaim:
    """The insurer paid ``amount_paid`` (0: denied). It pays the claim receivable, a shortfall
    is a loss; beyond the receivable it pays what the loan still owes, then the owner."""
    if not operator.is_staff:
        raise PermissionDenied("Only an operator settles a claim.")
    amount_paid = Decimal(amount_paid)
    if amount_paid < 0 or amount_paid != money.cents(amount_paid):
        raise ValidationError({"amount_paid": "Enter the amount paid in dollars and cents (zero if denied)."})
    now = now or timezone.now()
    loan = (
        Loan.objects.filter(
            collateral_id=claim.collateral_id, status__in=[*LIVE, Loan.Status.WRITTEN_OFF, Loan.Status.REPAID]
        )
        .order_by("-applied_at")
        .first()
    )
    with transaction.atomic():
        loan = lock_objects.loan_lock(loan.pk) if loan else None  # the loan before its claim (LOCK_ORDER)
        claim = lock_objects.claim_lock(claim.pk)
        if claim.status != InsuranceClaim.Status.OPEN:
            raise ValidationError({"claim": "This claim is already settled."})
        lines: list[Line] = []
        accounts = Accounts()
        left = amount_paid
        if loan is not None:
            book = LoanBook([loan], window_start=now, window_end=now, accounts=accounts)
            state = book.states[loan.pk]
            if state.claim > 0:
                paid = min(left, state.claim)
                short = state.claim - paid
                left -= paid
                state.claim = ZERO
                lines += [
                    Line(accounts.system("vault_cash"), paid, "to_vault_principal"),
                    Line(accounts.loan(loan, "claim"), -paid, "claim_paid"),
                    Line(accounts.system("credit_losses"), short, "claim_shortfall"),
                    Line(accounts.loan(loan, "claim"), -short, "claim_shortfall"),
                ]
            owed = max(state.principal, ZERO) if loan.status in LIVE else ZERO
            if owed > 0 and left > 0:
                paid = min(left, owed)
                left -= paid
                lines += _to_vault(
                    book, loan, paid, Line(accounts.system("gateway_clearing"), paid, "claim_paid"), "recovery"
                )
        if left > 0:  # the rest is the hardware owner's (the protocol's after foreclosure)
            owner = claim.collateral.server.owner
            lines += [
                Line(accounts.system("gateway_clearing"), left, "claim_paid"),
                Line(accounts.owner_payable(owner.pk, owner.name), -left, "claim_paid"),
            ]
        if lines:
            entries = EntryBatch()
            entries.add(key=f"claim:{claim.pk}:settled", description=f"Insurance claim {claim.pk} settled", lines=lines)
            entries.flush()
        claim.status = InsuranceClaim.Status.PAID if amount_paid > 0 else InsuranceClaim.Status.DENIED
        claim.amount_paid, claim.settled_at = amount_paid, now
        claim.save(update_fields=["status", "amount_paid", "settled_at"])
    return claim


# --- First-loss capital -----------------------------------------------------------------


def first_loss_post(*, user: User, loan: Loan, amount: Decimal) -> FirstLoss:
    """Post ``amount`` of the user's USDai as first-loss capital on a live loan."""
    amount = usdai_amount(amount)
    if amount != money.cents(amount):
        raise ValidationError({"amount": "Enter an amount in dollars and cents."})
    with transaction.atomic():
        locked = lock_objects.loan_lock(loan.pk)
        if locked.status != Loan.Status.ACTIVE:
            raise ValidationError({"loan": "First-loss capital can be posted on an active loan only."})
        account = usdai_spendable(user, amount, verb="post")
        wallet = wallet_for_user(user=user)
        now = timezone.now()
        book = LoanBook([locked], window_start=now, window_end=now, accounts=Accounts())
        state = book.states[locked.pk]
        standing = state.first_loss
        if standing + amount > state.principal:
            room = max(state.principal - standing, ZERO)
            raise ValidationError({"amount": f"First-loss capital on this loan can be at most {room:,.2f}."})
        yearly_interest = state.principal * locked.apr
        share = (amount * settings.FIRST_LOSS_PREMIUM_APR / yearly_interest) if yearly_interest > 0 else ZERO
        share = min(share, Decimal(1) - state.premium_share).quantize(Decimal("0.0001"), rounding="ROUND_DOWN")
        position = FirstLoss.objects.create(loan=locked, provider=user, amount=amount, premium_share=share)
        entries = EntryBatch()
        entries.add(
            key=f"first-loss:{position.pk}:posted",
            description=f"{user} posted {amount} USDai of first-loss capital on loan {locked.public_id}",
            lines=[
                Line(account, amount, "first_loss"),
                Line(book.accounts.loan(locked, "first_loss"), -amount, "first_loss"),
            ],
        )
        entries.flush()
        chainop_enqueue(
            key=f"first-loss:{position.pk}:escrow",
            sender=wallet.index,
            contract="USDai",
            function="transfer",
            args=[address_for(0), usd_to_wei(amount)],  # held by the protocol's operator address
        )
    return position


def first_loss_close(*, book: LoanBook, loan: Loan, now: datetime) -> None:
    """When a loan ends: return each provider's capital left and premium earned, pro rata."""
    positions = lock_objects.first_loss_lock(loan)
    if not positions:
        return
    state = book.states[loan.pk]
    capital, premium = max(state.first_loss, ZERO), max(state.premium, ZERO)
    posted = sum((p.amount for p in positions), ZERO)
    shares = sum((p.premium_share for p in positions), ZERO)
    entries = EntryBatch()
    for i, position in enumerate(positions):
        last = i == len(positions) - 1
        back = capital if last else money.usd(state.first_loss * position.amount / posted)
        earned = premium if last else money.usd(state.premium * position.premium_share / shares) if shares else ZERO
        capital -= back
        premium -= earned
        position.absorbed = money.cents(position.amount - back)
        position.returned = back + earned
        position.status, position.closed_at = FirstLoss.Status.CLOSED, now
        wallet = Wallet.objects.filter(user_id=position.provider_id).first() or wallet_for_user(user=position.provider)
        account = book.accounts.get(f"usdai:{position.provider_id}")
        lines = [
            Line(book.accounts.loan(loan, "first_loss"), back, "first_loss_return"),
            Line(book.accounts.loan(loan, "premium"), earned, "first_loss_premium"),
            Line(account, -(back + earned), "first_loss_return"),
        ]
        if back + earned > 0:
            entries.add(
                key=f"first-loss:{position.pk}:closed",
                description=f"First-loss capital on loan {loan.public_id} returned with its premium",
                lines=lines,
            )
        if back > 0:
            chainop_enqueue(
                key=f"first-loss:{position.pk}:return",
                contract="USDai",
                function="transfer",
                args=[wallet.address, usd_to_wei(back)],
            )
        if earned > 0:
            chainop_enqueue(
                key=f"first-loss:{position.pk}:premium",
                contract="USDai",
                function="mint",
                args=[wallet.address, usd_to_wei(earned)],
            )
    state.first_loss, state.premium = ZERO, ZERO
    entries.flush()
    FirstLoss.objects.bulk_update(positions, ["absorbed", "returned", "status", "closed_at"])
