"""Collateral records and their appraisals."""

from datetime import date, datetime
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.models import OwnerCompany, User
from core import money
from financing import appraisal, lock_objects
from financing.models import Appraisal, Collateral, InsuranceClaim
from financing.selectors.loans import TRAILING_DAYS, trailing_net_revenue
from financing.services.titles import title_mint
from marketplace.models import Gpu, Listing, Server


def collateral_register(
    *,
    owner: OwnerCompany,
    server: Server,
    purchase_price: Decimal,
    purchase_date: date,
    custodian: str,
    custody_receipt: str,
    insurer: str,
    policy_number: str,
    coverage: Decimal,
    insurance_expires: date,
    today: date | None = None,
) -> Collateral:
    """Record a server as collateral (pending an operator's approval)."""
    today = today or timezone.now().date()
    if server.owner_id != owner.pk:
        raise PermissionDenied("This server is not yours.")
    errors = {}
    if purchase_price is None or purchase_price <= 0:
        errors["purchase_price"] = "The purchase price must be more than zero."
    if purchase_date > today:
        errors["purchase_date"] = "The purchase date cannot be in the future."
    if coverage is None or coverage <= 0:
        errors["coverage"] = "The insurance coverage must be more than zero."
    if insurance_expires <= today:
        errors["insurance_expires"] = "This insurance has lapsed; collateral needs a policy in force."
    for name, value in (
        ("custodian", custodian),
        ("custody_receipt", custody_receipt),
        ("insurer", insurer),
        ("policy_number", policy_number),
    ):
        if not (value or "").strip():
            errors[name] = "Required for a collateral record."
    if Collateral.objects.filter(server=server).exists():
        errors["server"] = "This server already has a collateral record."
    if errors:
        raise ValidationError(errors)
    return Collateral.objects.create(
        server=server,
        purchase_price=purchase_price,
        purchase_date=purchase_date,
        custodian=custodian.strip(),
        custody_receipt=custody_receipt.strip(),
        insurer=insurer.strip(),
        policy_number=policy_number.strip(),
        coverage=coverage,
        insurance_expires=insurance_expires,
    )


def collateral_approve(*, collateral: Collateral, operator: User, now: datetime | None = None) -> Collateral:
    """An operator's approval, followed by a first appraisal."""
    if not operator.is_staff:
        raise PermissionDenied("Only an operator approves collateral.")
    now = now or timezone.now()
    with transaction.atomic():
        locked = lock_objects.collateral_lock(collateral.pk)
        first = locked.approved_at is None
        if first:
            locked.approved_at = now
            locked.approved_by = operator
            locked.save(update_fields=["approved_at", "approved_by"])
        appraisal_run(collateral=locked, now=now, trigger="approval")
        if first:
            title_mint(collateral=locked)
    return locked


def appraisal_run(*, collateral: Collateral, now: datetime | None = None, trigger: str = "on_demand") -> Appraisal:
    now = now or timezone.now()
    inputs = appraisal.Inputs(
        purchase_price=collateral.purchase_price,
        age_years=(Decimal((now.date() - collateral.purchase_date).days) / Decimal("365.25")).quantize(
            Decimal("0.0001")
        ),
        depreciation_rate=settings.APPRAISAL_DEPRECIATION_RATE,
        residual_floor=settings.APPRAISAL_RESIDUAL_FLOOR,
        trailing_net_revenue=trailing_net_revenue(server=collateral.server, until=now),
        trailing_days=TRAILING_DAYS,
        useful_life_years=settings.APPRAISAL_USEFUL_LIFE_YEARS,
        discount_rate=settings.APPRAISAL_DISCOUNT_RATE,
    )
    result = appraisal.appraise(inputs)
    return Appraisal.objects.create(
        collateral=collateral,
        as_of=now,
        age_years=inputs.age_years,
        depreciation_rate=inputs.depreciation_rate,
        residual_floor=inputs.residual_floor,
        depreciated_value=result.depreciated_value,
        trailing_net_revenue=inputs.trailing_net_revenue.quantize(money.MICRO),
        trailing_days=inputs.trailing_days,
        remaining_life_years=result.remaining_life_years.quantize(Decimal("0.0001")),
        discount_rate=inputs.discount_rate,
        income_value=result.income_value,
        value=result.value,
        trigger=trigger,
    )


def appraisals_daily(*, now: datetime | None = None) -> int:
    """Periodic: appraise every approved collateral record."""
    count = 0
    for collateral in Collateral.objects.filter(approved_at__isnull=False).select_related("server"):
        appraisal_run(collateral=collateral, now=now, trigger="daily")
        count += 1
    return count


def hardware_loss_declare(
    *, collateral: Collateral, operator: User, description: str, now: datetime | None = None
) -> InsuranceClaim:
    """Record lost hardware: a claim on the policy for the lower of the coverage and
    the latest appraisal; the server's GPUs are marked failed and its listing paused."""
    if not operator.is_staff:
        raise PermissionDenied("Only an operator declares hardware lost.")
    if not (description or "").strip():
        raise ValidationError({"description": "Say what happened."})
    now = now or timezone.now()
    latest = collateral.appraisals.order_by("-as_of", "-id").first()
    amount = min(collateral.coverage, latest.value) if latest and latest.value > 0 else collateral.coverage
    with transaction.atomic():
        claim = InsuranceClaim.objects.create(
            collateral=collateral,
            declared_at=now,
            declared_by=operator,
            description=description.strip(),
            amount_claimed=amount,
            policy_number=collateral.policy_number,
            insurer=collateral.insurer,
        )
        Gpu.objects.filter(server=collateral.server).update(status=Gpu.Status.FAILED)
        Listing.objects.filter(server=collateral.server).update(status=Listing.Status.PAUSED, gpus_in_service=0)
    return claim
