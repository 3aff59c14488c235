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
from financing.selectors.underwriting import market_facts
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
    """Appraise the collateral now and store the result with every input it used:
    the market's figures (``financing.selectors.underwriting``), the settings they
    were read with and the assumptions made from them (``financing.appraisal``)."""
    now = now or timezone.now()
    facts = market_facts(server=collateral.server, until=now)
    model = facts.gpu_model
    depreciation_rate, depreciation_source = appraisal.model_rate(
        model, settings.APPRAISAL_DEPRECIATION_RATES, settings.APPRAISAL_DEPRECIATION_RATE
    )
    reference = appraisal.model_entry(model, settings.APPRAISAL_REFERENCE_RATES)
    opex, opex_source = appraisal.model_rate(model, settings.APPRAISAL_OPEX_RATES, settings.APPRAISAL_OPEX_PER_GPU_HOUR)
    market_rate, rate, rate_source = appraisal.rate_assumption(
        model=model,
        market_prices=list(facts.market_prices),
        reference_rate=reference[1] if reference else None,
        listed_rate=facts.listed_rate,
    )
    trailing_utilisation, utilisation, utilisation_source = appraisal.utilisation_assumption(
        model=model,
        booked_gpu_hours=facts.booked_gpu_hours,
        available_gpu_hours=facts.available_gpu_hours,
        minimum_gpu_hours=settings.APPRAISAL_UTILISATION_MIN_GPU_HOURS,
        cap=settings.APPRAISAL_UTILISATION_CAP,
        default=settings.APPRAISAL_UTILISATION_DEFAULT,
        days=facts.window_days,
    )
    inputs = appraisal.Inputs(
        purchase_price=collateral.purchase_price,
        age_years=(Decimal((now.date() - collateral.purchase_date).days) / Decimal("365.25")).quantize(
            Decimal("0.0001")
        ),
        depreciation_rate=depreciation_rate,
        residual_floor=settings.APPRAISAL_RESIDUAL_FLOOR,
        useful_life_years=settings.APPRAISAL_USEFUL_LIFE_YEARS,
        discount_rate=settings.APPRAISAL_DISCOUNT_RATE,
        gpu_count=facts.gpu_count,
        trailing_gross_revenue=facts.trailing_gross_revenue,
        trailing_days=facts.window_days,
        history_days=facts.history_days,
        rate=rate,
        utilisation=utilisation,
        platform_fee=settings.WATERFALL_PLATFORM_FEE,
        insurance_rate=settings.WATERFALL_INSURANCE,
        opex_per_gpu_hour=opex,
    )
    result = appraisal.appraise(inputs)
    return Appraisal.objects.create(
        collateral=collateral,
        as_of=now,
        age_years=inputs.age_years,
        depreciation_rate=inputs.depreciation_rate,
        depreciation_rate_source=depreciation_source,
        residual_floor=inputs.residual_floor,
        depreciated_value=result.depreciated_value,
        gpu_model=model,
        gpu_count=inputs.gpu_count,
        trailing_gross_revenue=money.usd(inputs.trailing_gross_revenue),
        trailing_net_revenue=money.usd(inputs.trailing_gross_revenue * (1 - inputs.platform_fee)),
        trailing_days=inputs.trailing_days,
        history_days=inputs.history_days,
        trailing_weight=result.trailing_weight,
        trailing_income_value=result.trailing_income_value,
        market_rate=market_rate,
        market_rate_source=rate_source,
        market_listings=len(facts.market_prices),
        listed_rate=facts.listed_rate,
        rate=rate,
        market_booked_gpu_hours=facts.booked_gpu_hours,
        market_available_gpu_hours=facts.available_gpu_hours,
        trailing_utilisation=trailing_utilisation,
        utilisation=utilisation,
        utilisation_source=utilisation_source,
        platform_fee=inputs.platform_fee,
        insurance_rate=inputs.insurance_rate,
        opex_per_gpu_hour=inputs.opex_per_gpu_hour,
        opex_source=opex_source,
        net_per_gpu_hour=result.net_per_gpu_hour.quantize(appraisal.RATE, rounding=money.ROUNDING),
        forward_income_value=result.forward_income_value,
        annual_net_income=result.annual_net_income,
        income_approach=result.income_approach,
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
