"""Payout pages: the owner's payouts and statements (with a CSV per statement), and the
operators' runs, withheld and refused payouts, "run now", SEPA file download and "mark sent".
Thin: selectors to read, one service per action."""

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from accounts.models import Role
from accounts.permissions import role_required
from accounts.selectors import owner_company_for_user
from core.api import digits
from core.downloads import csv_download
from financing.models import PayoutRun, SepaFile
from financing.selectors.payouts import (
    company_payouts,
    company_runs,
    payout_runs,
    payout_statement,
    run_payouts,
    sepa_files,
)
from financing.services.payouts import payout_run_create, sepa_file_mark_sent


def _company_run(company, run_id: int | None) -> tuple[list[PayoutRun], PayoutRun | None]:
    """The company's runs and the one asked for (its latest by default); 404 for a run it has no statement in."""
    runs = company_runs(company)
    if run_id is None:
        return runs, runs[0] if runs else None
    run = next((r for r in runs if r.pk == run_id), None)
    if run is None:
        raise Http404("No statement of your company for this run.")
    return runs, run


@role_required(Role.OWNER)
@require_GET
def owner_payouts(request):
    """The company's payouts and the statement of one run (every member of the company sees them)."""
    company = owner_company_for_user(request.user)
    run_id = request.GET.get("run")
    runs, run = _company_run(company, digits(run_id))
    context = {
        "company": company,
        "payouts": company_payouts(company),
        "runs": runs,
        "statement": payout_statement(company=company, run=run) if run else None,
        "minimum": settings.PAYOUT_MINIMUM_USD,
    }
    return render(request, "financing/owner_payouts.html", context)


STATEMENT_COLUMNS = (
    ("server", "Server"),
    ("gross", "Gross rent"),
    ("platform_fee", "Platform fee"),
    ("insurance", "Insurance"),
    ("debt_service", "Debt service"),
    ("reserve_held", "Reserve held"),
    ("owner", "To owner"),
    ("reserve_released", "Reserve released"),
    ("claims", "Insurance claims"),
    ("net", "Net to owner"),
)


@role_required(Role.OWNER)
@require_GET
def owner_statement_csv(request, run_id: int):
    company = owner_company_for_user(request.user)
    _, run = _company_run(company, run_id)
    statement = payout_statement(company=company, run=run)
    response, writer = csv_download(f"statement-{run.period_start:%Y%m%d}-{run.period_end:%Y%m%d}.csv")
    writer.writerow([label for _, label in STATEMENT_COLUMNS])
    for line in (*statement.lines, statement.total):
        writer.writerow([getattr(line, name) for name, _ in STATEMENT_COLUMNS])
    writer.writerow([])
    for label, value in (
        ("Owed at the start", statement.opening),
        ("Earned in the period", statement.earned),
        ("Paid in this run", statement.paid),
        ("Carried forward", statement.closing),
    ):
        writer.writerow([label, value])
    return response


@role_required(Role.OPERATOR)
@require_GET
def operator_payouts(request):
    runs = payout_runs()
    run_id = request.GET.get("run")
    if (run_pk := digits(run_id)) is not None:
        run = get_object_or_404(PayoutRun, pk=run_pk)
    else:
        run = PayoutRun.objects.order_by("-period_end", "-pk").first()
    context = {"runs": runs, "run": run, "payouts": run_payouts(run) if run else [], "files": sepa_files()}
    return render(request, "financing/operator_payouts.html", context)


@role_required(Role.OPERATOR)
@require_POST
def operator_payout_run(request):
    """Run payouts now: everything earned up to this moment, for every owner company."""
    try:
        run = payout_run_create(period_end=timezone.now(), trigger=PayoutRun.Trigger.OPERATOR, created_by=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("financing:operator_payouts")
    if run is None:
        messages.info(request, "Nothing to pay: a run already covers this period.")
        return redirect("financing:operator_payouts")
    paid = run.payouts.filter(status__in=["sent", "confirmed"]).count()
    messages.success(request, f"Payout run {run.pk} done: {paid} payout{'s' if paid != 1 else ''} sent.")
    return redirect(f"{reverse('financing:operator_payouts')}?run={run.pk}")


@role_required(Role.OPERATOR)
@require_GET
def operator_sepa_download(request, pk: int):
    sepa_file = get_object_or_404(SepaFile.objects.exclude(xml=""), pk=pk)
    response = HttpResponse(sepa_file.xml, content_type="application/xml; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="pain001-{sepa_file.message_id or sepa_file.pk}.xml"'
    return response


@role_required(Role.OPERATOR)
@require_POST
def operator_sepa_mark_sent(request, pk: int):
    sepa_file = get_object_or_404(SepaFile, pk=pk)
    try:
        sepa_file = sepa_file_mark_sent(sepa_file=sepa_file, by=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("financing:operator_payouts")
    messages.success(request, f"SEPA file {sepa_file.message_id} marked sent; its payouts are confirmed.")
    return redirect("financing:operator_payouts")
