"""Role checks for pages (a decorator and a mixin) and for the API.

An anonymous visitor is sent to log in; a logged-in user without the role
gets 403, never a crash.
"""

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission

from accounts.models import Role
from accounts.selectors import user_has_role

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


class _HasRole(BasePermission):
    role: str = ""

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
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
