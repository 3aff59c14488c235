"""Writes about users, roles and profiles.

Granting a role creates the profile behind it; the operations are idempotent
(granting a role twice changes nothing) and validate with ``full_clean`` so
the API and the pages report the same field messages.

A company is joined only by accepting an invitation: an administrator invites
an e-mail address (the answer is the same whether or not the address has an
account), and the membership exists once the invitee accepts. Only an
administrator changes the company's details (its payout account) or invites.

API tokens (``ApiToken``, django-rest-knox) are issued for the same proof as a
login (password, and a TOTP code when the account has one) and under the same
lockout as the login form; a signed-in user makes one on the page with a current
TOTP code when the account has TOTP. Each is named, scoped and expires; only its
digest is stored and the clear token is handed back once.
"""

from dataclasses import dataclass
from datetime import timedelta

from allauth.account.adapter import get_adapter as get_account_adapter
from allauth.core import ratelimit
from allauth.core.internal.ratelimit import get_rates
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import TOTP
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone
from knox.models import get_digest_token
from knox.settings import CONSTANTS

from accounts.lock_objects import company_invitation_lock, lender_profile_lock, renter_profile_lock
from accounts.models import (
    ApiToken,
    CompanyInvitation,
    LenderProfile,
    OwnerCompany,
    OwnerMembership,
    RenterProfile,
    Role,
    User,
)
from accounts.selectors import INVITATION_TTL, owner_company_is_admin, user_roles_forget
from accounts.validators import (
    bic_iban_mismatch,
    control_character_problem,
    iban_problem,
    validate_bic,
    validate_vat_id,
)

NOT_AN_ADMIN = "Only an administrator of the company can do this."
INVITATION_INVALID = "This invitation is no longer valid."


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


def _admin_required(*, company: OwnerCompany, user: User) -> None:
    if not owner_company_is_admin(company=company, user=user):
        raise PermissionDenied(NOT_AN_ADMIN)


def owner_company_update(
    *,
    company: OwnerCompany,
    by: User,
    name: str,
    payout_account_holder: str = "",
    payout_iban: str = "",
    payout_bic: str = "",
    payout_wallet_address: str = "",
    vat_id: str = "",
    country: str = "",
    address_line1: str = "",
    address_line2: str = "",
    payout_rail: str = "sepa",
) -> OwnerCompany:
    """Change the company's name and payout details; ``by`` must be an administrator
    (``PermissionDenied`` otherwise): the payout account decides where money goes.
    The IBAN, BIC (and that its country is the IBAN's) and VAT id are checked here too, so
    nothing invalid is saved whoever calls (field errors; nothing saved)."""
    _admin_required(company=company, user=by)
    name = name.strip()
    if OwnerCompany.objects.filter(name__iexact=name).exclude(pk=company.pk).exists():
        raise ValidationError({"name": "A company with this name already exists."})
    company.name = name
    company.payout_account_holder = payout_account_holder.strip()
    company.payout_iban = "".join(payout_iban.split()).upper()
    company.payout_bic = payout_bic.strip().upper()
    company.payout_wallet_address = payout_wallet_address.strip()
    company.vat_id = "".join(vat_id.split()).upper()
    company.country = country.strip().upper()
    company.address_line1 = address_line1.strip()
    company.address_line2 = address_line2.strip()
    company.payout_rail = payout_rail or "sepa"
    _payout_details_check(company)
    company.full_clean()
    company.save()
    return company


def _payout_details_check(company: OwnerCompany) -> None:
    errors: dict[str, str] = {}
    for field in ("name", "payout_account_holder", "address_line1", "address_line2"):
        if problem := control_character_problem(getattr(company, field)):
            errors[field] = problem
    if company.payout_iban and (problem := iban_problem(company.payout_iban)):
        errors["payout_iban"] = problem
    if company.payout_bic:
        try:
            validate_bic(company.payout_bic)
        except ValidationError as exc:
            errors["payout_bic"] = exc.messages[0]
    both = company.payout_iban and company.payout_bic and not errors
    if both and (mismatch := bic_iban_mismatch(company.payout_bic, company.payout_iban)):
        errors["payout_bic"] = mismatch
    if company.vat_id:
        try:
            validate_vat_id(company.vat_id)
        except ValidationError as exc:
            errors["vat_id"] = exc.messages[0]
    if errors:
        raise ValidationError(errors)


def company_invitation_send(*, company: OwnerCompany, invited_by: User, email: str, link: str) -> CompanyInvitation:
    """Invite ``email`` into ``company``; ``invited_by`` must be an administrator.

    Never looks the address up among users, and does the same whether or not it
    has an account (or already belongs to a company): the inviter learns
    nothing about who is registered. Inviting an address twice keeps the one
    pending invitation and sends it again. ``link`` is the page where the
    invitee accepts or declines (``accounts:invitations``, absolute).
    """
    _admin_required(company=company, user=invited_by)
    email = email.strip().lower()
    try:
        with transaction.atomic():
            invitation, _ = CompanyInvitation.objects.get_or_create(
                company=company,
                email=email,
                status=CompanyInvitation.Status.PENDING,
                defaults={"invited_by": invited_by},
            )
    except IntegrityError:  # a concurrent invitation of the same address won
        invitation = CompanyInvitation.objects.get(
            company=company, email=email, status=CompanyInvitation.Status.PENDING
        )
    transaction.on_commit(lambda: _invitation_mail(invitation, link))
    return invitation


def _invitation_mail(invitation: CompanyInvitation, link: str) -> None:
    send_mail(
        subject=f"You are invited to join {invitation.company.name} on InfraFi",
        message=(
            f"{invitation.company.name} invites you to act for it on InfraFi as a member.\n\n"
            f"Sign in (or sign up with this address) and accept or decline at {link}\n\n"
            "If you did not expect this, ignore this e-mail: nothing happens unless you accept."
        ),
        from_email=None,
        recipient_list=[invitation.email],
    )


def company_invitation_accept(*, token: str, user: User) -> OwnerMembership:
    """Accept a pending invitation addressed to ``user``'s e-mail: the user
    becomes a member (not an administrator) of the company and gains the owner role.
    """
    with transaction.atomic():
        invitation = _invitation_for(token=token, user=user)
        if OwnerMembership.objects.filter(user=user).exists():
            raise ValidationError("You already belong to a company; leave it before joining another.")
        try:
            with transaction.atomic():
                membership = OwnerMembership.objects.create(
                    company=invitation.company, user=user, level=OwnerMembership.Level.MEMBER
                )
        except IntegrityError as exc:  # a concurrent acceptance or company creation won
            raise ValidationError("You already belong to a company; leave it before joining another.") from exc
        _invitation_close(invitation, CompanyInvitation.Status.ACCEPTED)
    user_roles_forget(user)
    return membership


def company_invitation_decline(*, token: str, user: User) -> CompanyInvitation:
    """Decline a pending invitation addressed to ``user``'s e-mail; nothing else changes."""
    with transaction.atomic():
        invitation = _invitation_for(token=token, user=user)
        _invitation_close(invitation, CompanyInvitation.Status.DECLINED)
    return invitation


def _invitation_for(*, token: str, user: User) -> CompanyInvitation:
    """The pending, unexpired invitation with ``token`` addressed to ``user``, locked;
    one message for every reason it is not, so a token reveals nothing."""
    invitation = company_invitation_lock(token)
    if (
        invitation is None
        or invitation.status != CompanyInvitation.Status.PENDING
        or invitation.email != (user.email or "").strip().lower()
        or invitation.created_at < timezone.now() - INVITATION_TTL
    ):
        raise ValidationError(INVITATION_INVALID)
    return invitation


def _invitation_close(invitation: CompanyInvitation, status: str) -> None:
    invitation.status = status
    invitation.responded_at = timezone.now()
    invitation.save(update_fields=["status", "responded_at"])


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


TOKEN_BAD_CREDENTIALS = "Unable to log in with provided credentials."
TOKEN_NEEDS_CODE = "This account uses two-factor authentication: send a current code."
TOKEN_CODE_LOCKED = "Too many wrong codes. Try again later."
TOKEN_NAME_TAKEN = "You already have a token with this name."


class LoginLocked(Exception):
    """Too many failed logins for this account or address: retrying helps only after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class IssuedApiToken:
    """A new token and its clear secret: the only time the secret exists outside the client."""

    token: ApiToken
    key: str


def api_token_obtain(
    *,
    request: HttpRequest,
    email: str,
    password: str,
    code: str = "",
    name: str = "",
    scope: str = ApiToken.Scope.READ,
    expires_in_days: int | None = None,
) -> IssuedApiToken:
    """A new API token for the same proof the login form asks: the password and,
    when TOTP is on, a current code (a used code is refused, as on the form).

    Failures share the login form's lockout (allauth's ``login_failed`` rate: per
    address and per account, in the shared cache): a wrong password or a wrong code
    here counts there, and an account locked there raises ``LoginLocked`` here.
    """
    adapter = get_account_adapter(request)
    try:
        # allauth's own authenticate: it counts a failure and takes back the count of a success.
        user = adapter.authenticate(request, email=email, password=password)
    except ValidationError as exc:
        if exc.code == "too_many_login_attempts":
            raise LoginLocked(exc.messages[0], retry_after=_login_lockout_seconds()) from exc
        raise
    if user is None:
        raise ValidationError(TOKEN_BAD_CREDENTIALS)
    # The password was right, so allauth took its count back: a wrong code counts instead.
    _second_factor_check(request=request, user=user, code=code, lockout_email=email)
    return api_token_issue(user=user, name=name, scope=scope, expires_in_days=expires_in_days)


def api_token_create(
    *,
    request: HttpRequest,
    user: User,
    code: str = "",
    name: str = "",
    scope: str = ApiToken.Scope.READ,
    expires_in_days: int | None = None,
) -> IssuedApiToken:
    """A new API token for a signed-in ``user`` (the page): when the account has TOTP,
    only with a current code. A wrong code counts towards the account's login lockout,
    as on the token endpoint; once locked, even a right code is refused until it passes."""
    if api_token_needs_code(user=user):
        key = get_account_adapter(request)._get_login_attempts_cache_key(request, email=user.email)
        if not ratelimit.consume(request, action="login_failed", key=key, dry_run=True):
            raise ValidationError({"code": TOKEN_CODE_LOCKED})
    _second_factor_check(request=request, user=user, code=code, lockout_email=user.email)
    return api_token_issue(user=user, name=name, scope=scope, expires_in_days=expires_in_days)


def api_token_needs_code(*, user: User) -> bool:
    """A token for ``user`` needs a current TOTP code (the account has TOTP)."""
    return Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists()


def _second_factor_check(*, request: HttpRequest, user: User, code: str, lockout_email: str) -> None:
    totp = Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).first()
    if totp is not None and not (code and TOTP(totp).validate_code(code.strip())):
        key = get_account_adapter(request)._get_login_attempts_cache_key(request, email=lockout_email)
        ratelimit.consume(request, action="login_failed", key=key)
        raise ValidationError({"code": TOKEN_NEEDS_CODE})


def api_token_issue(
    *, user: User, name: str = "", scope: str = ApiToken.Scope.READ, expires_in_days: int | None = None
) -> IssuedApiToken:
    """Store a new token for ``user`` (its digest only) and hand back the clear token once.

    No second factor: for callers that already have the proof (``api_token_obtain``,
    ``api_token_create``) or are trusted code (benchmarks). ``expires_in_days`` is 1 to
    ``API_TOKEN_TTL_DAYS`` (the default); a blank ``name`` becomes one made of the
    token's prefix. The user's expired tokens are deleted first, so their names are free.
    """
    longest = settings.API_TOKEN_TTL_DAYS
    days = longest if expires_in_days is None else expires_in_days
    if not 1 <= days <= longest:
        raise ValidationError({"expires_in_days": f"Choose from 1 to {longest} days."})
    if scope not in ApiToken.Scope.values:
        raise ValidationError({"scope": f"Choose one of: {', '.join(ApiToken.Scope.values)}."})
    name = (name or "").strip()
    digest, key = get_digest_token()
    token_key = key[: CONSTANTS.TOKEN_KEY_LENGTH]
    token = ApiToken(
        user=user,
        digest=digest,
        token_key=token_key,
        name=name or f"token {token_key}",
        scope=scope,
        expiry=timezone.now() + timedelta(days=days),
    )
    token.full_clean(exclude=["user", "digest", "token_key"], validate_unique=False, validate_constraints=False)
    with transaction.atomic():
        ApiToken.objects.filter(user=user, expiry__lte=timezone.now()).delete()
        limit = settings.API_TOKEN_LIMIT_PER_USER
        if ApiToken.objects.filter(user=user).count() >= limit:
            raise ValidationError(f"You have {limit} API tokens, the most allowed: revoke one first.")
        try:
            with transaction.atomic():
                token.save(force_insert=True)
        except IntegrityError as exc:  # the name is taken (perhaps by a concurrent request)
            raise ValidationError({"name": TOKEN_NAME_TAKEN}) from exc
    return IssuedApiToken(token=token, key=key)


def api_token_revoke(*, user: User, token_id: int) -> bool:
    """Delete ``user``'s token ``token_id``: it stops working at once. False if there is none."""
    deleted, _ = ApiToken.objects.filter(user=user, pk=token_id).delete()
    return bool(deleted)


def _login_lockout_seconds() -> int:
    """The longest window of the ``login_failed`` rates: by then every counted failure has expired."""
    rates = get_rates(app="allauth.account", action="login_failed")
    return int(max((rate.duration for rate in rates), default=60))
