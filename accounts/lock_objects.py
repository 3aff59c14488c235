"""Row locks of accounts, taken here and nowhere else (Saleor's ``lock_objects.py``).

Profiles come last in the global order of ``core/locks.py`` (RenterProfile,
then LenderProfile): the apps above lock their own rows before a profile.
Call these inside ``transaction.atomic()``.
"""

from accounts.models import CompanyInvitation, LenderProfile, RenterProfile, User


def renter_profile_lock(user: User) -> RenterProfile:
    """The user's renter profile, locked; created first if the user has none."""
    return _profile_lock(RenterProfile, user)


def lender_profile_lock(user: User) -> LenderProfile:
    """The user's lender profile, locked; created first if the user has none."""
    return _profile_lock(LenderProfile, user)


def _profile_lock(model, user: User):
    profile, _ = model.objects.select_for_update().get_or_create(user=user)
    return profile


def company_invitation_lock(token: str) -> CompanyInvitation | None:
    """The invitation with ``token`` (and its company), locked; ``None`` when there is none."""
    return (
        CompanyInvitation.objects.select_for_update(of=("self",)).select_related("company").filter(token=token).first()
    )
