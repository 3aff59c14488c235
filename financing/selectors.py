"""Financing reads for lender and owner pages."""

from accounts.models import User
from accounts.selectors import lender_profile_for_user, user_has_mfa


def lender_overview(*, user: User) -> dict:
    """What the lender dashboard shows about the lender's own account."""
    profile = lender_profile_for_user(user)
    return {
        "wallet_address": profile.wallet_address if profile else "",
        "mfa_enabled": user_has_mfa(user),
    }
