"""Role checks for pages (a decorator and a mixin) and for the API; API token
authentication and scopes.

An anonymous visitor is sent to log in; a logged-in user without the role
gets 403, never a crash.

An API token (``accounts.ApiToken``) carries a scope. ``TokenScope`` (a default
permission, and the first check of every role permission here, because the API
views name their role permission instead of the defaults) lets a token request
with a safe method through whatever its scope; an unsafe one needs the scope the
view declares in ``token_scope`` (``"book"`` or ``"owner"``), or ``admin``. A view
that declares none is for ``admin`` tokens only: a new endpoint fails closed.
Requests signed in with a session are not scoped.
"""

from datetime import timedelta
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.utils import timezone
from knox.auth import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.exceptions import PermissionDenied as ApiPermissionDenied
from rest_framework.permissions import SAFE_METHODS, BasePermission

from accounts.models import ApiToken, Role
from accounts.selectors import user_has_role

# last_used_at is written at most this often per token, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)

_ROLE_MESSAGES = {
    Role.RENTER: "This page is for renters. Add the renter role to your account first.",
    Role.OWNER: "This page is for GPU owners. Join or create an owner company first.",
    Role.LENDER: "This page is for lenders. Add the lender role to your account first.",
    Role.OPERATOR: "This page is for InfraFi operators.",
}


def role_required(role: str, *others: str):
    """The page needs ``role`` (or one of ``others``); the refusal names the first."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not any(user_has_role(request.user, r) for r in (role, *others)):
                raise PermissionDenied(_ROLE_MESSAGES[role])
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


class ApiTokenAuthentication(TokenAuthentication):
    """knox's ``Authorization: Token <token>``; notes when a token was last used.

    A token that is not UTF-8 is refused like any wrong token (knox would crash).
    It also holds the line for a view whose own ``permission_classes`` leave out
    ``TokenScope`` (``IsAuthenticated``, ``AllowAny``): there the scope is checked
    here, so no view is open to every token by forgetting it.
    """

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None:
            return None
        view = (getattr(request, "parser_context", None) or {}).get("view")
        unchecked = view is not None and not any(isinstance(p, TokenScope) for p in view.get_permissions())
        if unchecked and (refusal := token_scope_refusal(request, view, result[1])):
            raise ApiPermissionDenied(refusal)
        return result

    def authenticate_credentials(self, token: bytes):
        try:
            token.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AuthenticationFailed("Invalid token.") from exc
        user, auth_token = super().authenticate_credentials(token)
        now = timezone.now()
        if auth_token.last_used_at is None or auth_token.last_used_at < now - LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=auth_token.pk).update(last_used_at=now)
            auth_token.last_used_at = now
        return user, auth_token


def token_scope_needed(view) -> str:
    """The scope a token needs for an unsafe request to ``view``: its ``token_scope``, else ``admin``."""
    return getattr(view, "token_scope", None) or ApiToken.Scope.ADMIN


def token_scope_refusal(request, view, token) -> str | None:
    """Why ``token`` may not make this request, or None when it may."""
    if not isinstance(token, ApiToken):
        return None
    if request.method in SAFE_METHODS or token.scope == ApiToken.Scope.ADMIN:
        return None
    needed = token_scope_needed(view)
    if token.scope == needed:
        return None
    return f"This token has the {token.scope} scope; this request needs a token with the {needed} scope."


class TokenScope(BasePermission):
    """An API token's scope allows the request (see the module docstring)."""

    def has_permission(self, request, view) -> bool:
        refusal = token_scope_refusal(request, view, request.auth)
        if refusal:
            self.message = refusal
        return refusal is None


class _HasRole(TokenScope):
    role: str = ""

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        if not super().has_permission(request, view):
            return False
        if not user_has_role(request.user, self.role):
            self.message = _ROLE_MESSAGES[self.role]
            return False
        return True


class IsRenter(_HasRole):
    role = Role.RENTER


class IsOwner(_HasRole):
    role = Role.OWNER


class IsLender(_HasRole):
    role = Role.LENDER


class IsOperator(_HasRole):
    role = Role.OPERATOR
