from accounts.selectors import user_roles


def roles(request):
    """Expose the user's roles to every template, for the role-aware layout."""
    held = user_roles(request.user) if hasattr(request, "user") else frozenset()
    return {
        "roles": held,
        "is_renter": "renter" in held,
        "is_owner": "owner" in held,
        "is_lender": "lender" in held,
        "is_operator": "operator" in held,
    }
