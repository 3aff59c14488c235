"""Reads about users and their roles."""

from datetime import timedelta

from django.utils import timezone

from accounts.models import CompanyInvitation, LenderProfile, OwnerCompany, OwnerMembership, RenterProfile, Role, User

INVITATION_TTL = timedelta(days=14)

_CACHE_ATTR = "_infrafi_roles"


def user_roles(user: User) -> frozenset[str]:
    """The roles a user holds, cached on the user object for the request."""
    if not user.is_authenticated:
        return frozenset()
    cached = getattr(user, _CACHE_ATTR, None)
    if cached is not None:
        return cached
    roles = set()
    if RenterProfile.objects.filter(user=user).exists():
        roles.add(Role.RENTER)
    if OwnerMembership.objects.filter(user=user).exists():
        roles.add(Role.OWNER)
    if LenderProfile.objects.filter(user=user).exists():
        roles.add(Role.LENDER)
    if user.is_staff:
        roles.add(Role.OPERATOR)
    result = frozenset(str(r) for r in roles)
    setattr(user, _CACHE_ATTR, result)
    return result


def user_has_role(user: User, role: str) -> bool:
    return str(role) in user_roles(user)


def user_roles_forget(user: User) -> None:
    """Drop the cached roles after a grant, so the next read sees it."""
    if hasattr(user, _CACHE_ATTR):
        delattr(user, _CACHE_ATTR)


def owner_company_for_user(user: User) -> OwnerCompany | None:
    membership = OwnerMembership.objects.select_related("company").filter(user=user).first()
    return membership.company if membership else None


def owner_company_members(company: OwnerCompany):
    return OwnerMembership.objects.filter(company=company).select_related("user").order_by("user__email")


def owner_company_is_admin(*, company: OwnerCompany, user: User) -> bool:
    return OwnerMembership.objects.filter(company=company, user=user, level=OwnerMembership.Level.ADMIN).exists()


def company_invitations_pending_for_user(user: User):
    """Unexpired pending invitations addressed to the user's e-mail, newest first."""
    if not user.is_authenticated or not user.email:
        return CompanyInvitation.objects.none()
    return CompanyInvitation.objects.filter(
        email=user.email.strip().lower(),
        status=CompanyInvitation.Status.PENDING,
        created_at__gte=timezone.now() - INVITATION_TTL,
    ).select_related("company")


def company_invitations_pending_for_company(company: OwnerCompany):
    return CompanyInvitation.objects.filter(company=company, status=CompanyInvitation.Status.PENDING).order_by("email")


def renter_profile_for_user(user: User) -> RenterProfile | None:
    return RenterProfile.objects.filter(user=user).first()


def lender_profile_for_user(user: User) -> LenderProfile | None:
    return LenderProfile.objects.filter(user=user).first()


def user_has_mfa(user: User) -> bool:
    from allauth.mfa.models import Authenticator

    return Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists()
