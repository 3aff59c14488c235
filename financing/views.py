"""Lender pages."""

from django.shortcuts import render

from accounts.models import Role
from accounts.permissions import role_required
from financing.selectors import lender_overview
from marketplace.selectors.inventory import supply_summary


@role_required(Role.LENDER)
def lender_dashboard(request):
    context = {"overview": lender_overview(user=request.user), "supply": supply_summary()}
    return render(request, "financing/lender_dashboard.html", context)
