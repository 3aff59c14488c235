"""The operators' money page: the money reconciler's last run, its mismatches and alerts.
Thin: one selector, one service per action, a template."""

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from accounts.models import Role
from accounts.permissions import role_required
from financing.models import MoneyAlert
from financing.selectors.money import money_operations
from financing.services.money_reconcile import money_alert_resolve, money_reconcile


@role_required(Role.OPERATOR)
@require_GET
def operator_money(request):
    """Bookings, refunds, the ledger and the gateway against each other; open alerts."""
    return render(request, "financing/operator_money.html", {"money": money_operations()})


@role_required(Role.OPERATOR)
@require_POST
def operator_money_run(request):
    report = money_reconcile()
    if report.mismatches:
        messages.error(request, f"{report.mismatches} money check(s) failed; see the mismatches below.")
    else:
        messages.success(request, f"All {len(report.checks)} money checks match.")
    return redirect("financing:operator_money")


@role_required(Role.OPERATOR)
@require_POST
def operator_money_alert_resolve(request, pk: int):
    money_alert_resolve(alert=get_object_or_404(MoneyAlert, pk=pk, resolved_at__isnull=True))
    messages.success(request, "Money alert resolved.")
    return redirect("financing:operator_money")
