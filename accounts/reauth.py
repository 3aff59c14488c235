"""Re-authentication: the proof a signed-in user gives again before an act that cannot be
undone (sending USDai out, unlinking their own wallet).

The proof is the account's password, or, when the account has TOTP, a current code (a
code already used is refused, as at login). A wrong one counts towards the account's login
lockout (allauth's ``login_failed`` rate), so the field cannot be used to guess a password;
once the account is locked even a right one is refused until the lockout passes.
"""

from allauth.account.adapter import get_adapter as get_account_adapter
from allauth.core import ratelimit
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import TOTP
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from accounts.models import User

REAUTH_FIELD = "reauth"
NEEDS_PASSWORD = "Enter your password to confirm."
NEEDS_CODE = "Enter a current code from your authenticator app to confirm."
WRONG_PASSWORD = "That is not your password."
WRONG_CODE = "That code is not valid (or was used already); enter the current one."
LOCKED = "Too many wrong attempts; try again in a few minutes."


def reauth_uses_code(*, user: User) -> bool:
    """Whether the proof asked of ``user`` is a TOTP code (else the password)."""
    return Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists()


def reauth_label(*, user: User) -> str:
    return "Authenticator code" if reauth_uses_code(user=user) else "Your password"


def reauth_check(*, request: HttpRequest, user: User, secret: str) -> None:
    """Raise ``ValidationError({"reauth": ...})`` unless ``secret`` is the user's proof."""
    secret = secret or ""
    totp = Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).first()
    key = get_account_adapter(request)._get_login_attempts_cache_key(request, email=user.email)
    if not ratelimit.consume(request, action="login_failed", key=key, dry_run=True):
        raise ValidationError({REAUTH_FIELD: LOCKED})
    if totp is not None:
        if not secret.strip():
            raise ValidationError({REAUTH_FIELD: NEEDS_CODE})
        ok, wrong = TOTP(totp).validate_code(secret.strip()), WRONG_CODE
    else:
        if not secret:
            raise ValidationError({REAUTH_FIELD: NEEDS_PASSWORD})
        ok, wrong = user.check_password(secret), WRONG_PASSWORD
    if not ok:
        ratelimit.consume(request, action="login_failed", key=key)
        raise ValidationError({REAUTH_FIELD: wrong})
