"""Writes about users, roles and profiles.

Granting a role creates the profile behind it; the operations are idempotent
(granting a role twice changes nothing) and validate with ``full_clean`` so
the API and the pages report the same field messages.
"""

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from rest_framework.authtoken.models import Token

from accounts.lock_objects import lender_profile_lock, renter_profile_lock
from accounts.models import LenderProfile, OwnerCompany, OwnerMembership, RenterProfile, Role, User
from accounts.selectors import user_roles_forget


def renter_role_grant(*, user: User) -> RenterProfile:
    profile, _ = RenterProfile.objects.get_or_create(user=user)
    user_roles_forget(user)
    return profile


def renter_billing_update(
    *, user: User, billing_name: str, billing_address: str, billing_country: str, vat_id: str = ""
) -> RenterProfile:
    with transaction.atomic():
        profile = renter_profile_lock(user)
        profile.billing_name = billing_name.strip()
        profile.billing_address = billing_address.strip()
        profile.billing_country = billing_country.strip().upper()
        profile.vat_id = vat_id.strip()
        profile.full_clean()
        profile.save()
    user_roles_forget(user)
    return profile


def owner_company_create(*, user: User, name: str) -> OwnerCompany:
    """Create a company with ``user`` as its administrator (grants the owner role)."""
    name = (name or "").strip()
    if not name:
        raise ValidationError({"company_name": "Enter the name of your company."})
    if OwnerMembership.objects.filter(user=user).exists():
        raise ValidationError({"company_name": "You already belong to a company."})
    if OwnerCompany.objects.filter(name__iexact=name).exists():
        raise ValidationError({"company_name": "A company with this name already exists."})
    try:
        with transaction.atomic():
            company = OwnerCompany.objects.create(name=name)
            OwnerMembership.objects.create(company=company, user=user, level=OwnerMembership.Level.ADMIN)
    except IntegrityError as exc:
        raise ValidationError({"company_name": "A company with this name already exists."}) from exc
    user_roles_forget(user)
    return company


def owner_company_update(
    *,
    company: OwnerCompany,
    name: str,
    payout_account_holder: str = "",
    payout_iban: str = "",
    payout_bic: str = "",
    payout_wallet_address: str = "",
) -> OwnerCompany:
    name = name.strip()
    if OwnerCompany.objects.filter(name__iexact=name).exclude(pk=company.pk).exists():
        raise ValidationError({"name": "A company with this name already exists."})
    company.name = name
    company.payout_account_holder = payout_account_holder.strip()
    company.payout_iban = payout_iban.replace(" ", "").upper()
    company.payout_bic = payout_bic.strip().upper()
    company.payout_wallet_address = payout_wallet_address.strip()
    company.full_clean()
    company.save()
    return company


def owner_company_member_add(*, company: OwnerCompany, email: str) -> OwnerMembership:
    """Add an existing user to the company as a member (grants the owner role)."""
    user = User.objects.filter(email__iexact=email.strip()).first()
    if user is None:
        raise ValidationError({"email": "No user has this e-mail address; ask them to sign up first."})
    existing = OwnerMembership.objects.filter(user=user).select_related("company").first()
    if existing is not None:
        if existing.company_id == company.pk:
            return existing
        raise ValidationError({"email": "This user already belongs to another company."})
    membership = OwnerMembership.objects.create(company=company, user=user)
    user_roles_forget(user)
    return membership


def lender_role_grant(*, user: User, wallet_address: str = "") -> LenderProfile:
    with transaction.atomic():
        profile = lender_profile_lock(user)
        if wallet_address:
            _lender_wallet_assign(profile=profile, wallet_address=wallet_address)
    user_roles_forget(user)
    return profile


def lender_wallet_set(*, user: User, wallet_address: str) -> LenderProfile:
    with transaction.atomic():
        profile = lender_profile_lock(user)
        _lender_wallet_assign(profile=profile, wallet_address=wallet_address)
    user_roles_forget(user)
    return profile


def _lender_wallet_assign(*, profile: LenderProfile, wallet_address: str) -> None:
    profile.wallet_address = wallet_address.strip()
    profile.full_clean()
    if LenderProfile.objects.filter(wallet_address=profile.wallet_address).exclude(pk=profile.pk).exists():
        raise ValidationError({"wallet_address": "This wallet is already registered to another lender."})
    profile.save()


def user_roles_grant(*, user: User, roles: list[str], company_name: str = "", wallet_address: str = "") -> None:
    """Grant the roles chosen at sign-up, all or none."""
    with transaction.atomic():
        if Role.RENTER in roles:
            renter_role_grant(user=user)
        if Role.OWNER in roles:
            owner_company_create(user=user, name=company_name)
        if Role.LENDER in roles:
            lender_role_grant(user=user, wallet_address=wallet_address)


def api_token_rotate(*, user: User) -> Token:
    """Replace the user's API token; the old one stops working at once."""
    with transaction.atomic():
        Token.objects.filter(user=user).delete()
        return Token.objects.create(user=user)
