"""Owner and lender financing pages. Operators work in the admin, and on a lender's loan page
write off a foreclosed loan and settle an insurance claim."""

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from accounts.models import Role
from accounts.permissions import role_required
from accounts.selectors import owner_company_for_user
from core.downloads import csv_download
from core.forms import form_submit
from financing import svg_charts
from financing.forms import ClaimSettleForm, CollateralForm, FirstLossForm, LoanApplicationForm, WriteOffForm
from financing.models import Collateral, InsuranceClaim, Loan
from financing.selectors.loans import (
    appraisal_history,
    borrowing_limit,
    insurance_lapsed,
    loan_book,
    loan_book_totals,
    loan_claims,
    loan_first_loss,
    loan_flow_totals,
    loan_repayments,
    loan_reserve,
    loan_revenue_by_month,
    loan_summary,
    loan_warnings,
    margin_call,
    owner_collateral,
    owner_revenue,
)
from financing.selectors.vault import lender_overview
from financing.services.collateral import collateral_register
from financing.services.loans import loan_apply, loan_max_amount
from financing.services.losses import claim_settle, first_loss_post, loan_write_off
from marketplace.models import Server
from marketplace.selectors.inventory import supply_summary


@role_required(Role.LENDER)
def lender_dashboard(request):
    context = {"overview": lender_overview(user=request.user), "supply": supply_summary()}
    return render(request, "financing/lender_dashboard.html", context)


# --- Owner ---------------------------------------------------------------------------


@role_required(Role.OWNER)
@require_http_methods(["GET", "POST"])
def owner_financing(request):
    """Collateral records and loans of the owner's company; register collateral, apply for a loan."""
    company = owner_company_for_user(request.user)
    action = request.POST.get("action") if request.method == "POST" else None
    free_servers = Server.objects.filter(owner=company, collateral__isnull=True).order_by("hostname")
    eligible = Collateral.objects.filter(server__owner=company, approved_at__isnull=False, lien=Collateral.Lien.FREE)
    collateral_form = CollateralForm(request.POST if action == "collateral" else None, servers=free_servers, prefix="c")
    loan_form = LoanApplicationForm(request.POST if action == "loan" else None, collateral=eligible, prefix="l")
    if action == "collateral" and form_submit(collateral_form, lambda d: collateral_register(owner=company, **d)):
        messages.success(request, "Collateral recorded; an operator will review it.")
        return redirect("financing:owner_financing")
    if action == "loan" and (done := form_submit(loan_form, lambda d: loan_apply(owner=company, **d))):
        messages.success(request, "Application sent; an operator will review it.")
        for warning in loan_warnings(done.result):
            messages.warning(request, warning)
        return redirect("financing:owner_financing")
    records = owner_collateral(company)
    open_to_borrow = [c for c in records if c.approved_at and c.lien == Collateral.Lien.FREE]
    context = {
        "records": [
            (
                c,
                c.appraisals.order_by("-as_of", "-id").first(),
                loan_max_amount(c) if c.approved_at and c.lien == Collateral.Lien.FREE else None,
            )
            for c in records
        ],
        # What limits each "You can borrow" figure, and why.
        "limits": [(c, borrowing_limit(c)) for c in open_to_borrow],
        "ltv_limit": settings.LOAN_MAX_LTV,
        "loans": [
            loan_summary(loan) for loan in Loan.objects.filter(owner=company).select_related("collateral__server")
        ],
        "collateral_form": collateral_form,
        "loan_form": loan_form,
    }
    status = 400 if (collateral_form.errors or loan_form.errors) else 200
    return render(request, "financing/owner_financing.html", context, status=status)


@role_required(Role.OWNER)
@require_http_methods(["GET", "POST"])
def owner_loan(request, public_id):
    """The owner's loan: schedule and waterfall, the reserve (held, drawn, released), net revenue
    after the waterfall; post first-loss capital on it."""
    loan = get_object_or_404(Loan, public_id=public_id, owner=owner_company_for_user(request.user))
    action = request.POST.get("action") if request.method == "POST" else None
    first_loss_form = FirstLossForm(request.POST if action == "first_loss" else None, prefix="fl")
    if action == "first_loss" and _first_loss_post(request, loan, first_loss_form):
        return redirect("financing:owner_loan", public_id=loan.public_id)
    extra = {
        "reserve": loan_reserve(loan),
        "revenue": owner_revenue(loan),
        "first_loss": loan_first_loss(loan),
        "first_loss_form": first_loss_form,
    }
    return _loan_page(request, loan, "financing/owner_loan.html", extra, (first_loss_form,))


# --- Lender --------------------------------------------------------------------------


@role_required(Role.LENDER, Role.OPERATOR)
def loan_book_page(request):
    """Every loan with its impairment and write-offs; the book's totals and weighted averages."""
    book = loan_book()
    totals = loan_book_totals(book)
    context = {
        "rows": [(s, margin_call(s), insurance_lapsed(s)) for s in book],
        "totals": totals,
        "apr_percent": None if totals.weighted_apr is None else totals.weighted_apr * 100,
        "ltv_percent": None if totals.weighted_ltv is None else totals.weighted_ltv * 100,
    }
    return render(request, "financing/loan_book.html", context)


@role_required(Role.LENDER)
def loan_tape_csv(request):
    response, writer = csv_download("infrafi-loan-tape.csv")
    writer.writerow(
        [
            "loan",
            "owner",
            "server",
            "status",
            "principal",
            "apr",
            "tenor_months",
            "schedule",
            "approved_at",
            "outstanding",
            "interest_accrued",
            "reserve",
            "allowance",
            "written_off",
            "appraisal",
            "ltv",
            "dscr",
            "days_past_due",
            "lien",
            "insurance_expires",
        ]
    )
    for s in loan_book():
        loan = s.loan
        writer.writerow(
            [
                loan.public_id,
                loan.owner.name,
                loan.collateral.server.hostname,
                loan.status,
                loan.principal,
                loan.apr,
                loan.tenor_months,
                loan.kind,
                f"{loan.approved_at:%Y-%m-%d}" if loan.approved_at else "",
                f"{s.outstanding:.6f}",
                f"{s.interest_accrued:.6f}",
                f"{s.reserve:.6f}",
                f"{s.allowance:.6f}",
                f"{s.written_off:.6f}",
                s.appraisal.value if s.appraisal else "",
                s.ltv if s.ltv is not None else "",
                s.dscr if s.dscr is not None else "",
                loan.days_past_due,
                loan.collateral.lien,
                loan.collateral.insurance_expires,
            ]
        )
    return response


OPERATOR_ACTIONS = ("write_off", "settle_claim")


@role_required(Role.LENDER, Role.OPERATOR)
@require_http_methods(["GET", "POST"])
def lender_loan(request, public_id):
    """A loan as lenders see it: impairment, write-offs, first-loss capital (post some here);
    operators also write off a foreclosed loan and settle an open insurance claim."""
    loan = get_object_or_404(Loan, public_id=public_id)
    user = request.user
    action = request.POST.get("action") if request.method == "POST" else None
    if action in OPERATOR_ACTIONS and not user.is_staff:
        raise PermissionDenied("Only an operator does this.")
    first_loss_form = FirstLossForm(request.POST if action == "first_loss" else None, prefix="fl")
    write_off_form = WriteOffForm(request.POST if action == "write_off" else None, prefix="wo")
    claim_form = ClaimSettleForm(request.POST if action == "settle_claim" else None, prefix="claim")
    if action == "first_loss" and _first_loss_post(request, loan, first_loss_form):
        return redirect("financing:lender_loan", public_id=loan.public_id)
    if action == "write_off" and form_submit(
        write_off_form, lambda d: loan_write_off(loan=loan, operator=user, sale_proceeds=d["sale_proceeds"])
    ):
        messages.success(request, "Loan written off.")
        return redirect("financing:lender_loan", public_id=loan.public_id)
    if action == "settle_claim" and form_submit(
        claim_form,
        lambda d: claim_settle(
            claim=get_object_or_404(InsuranceClaim, pk=d["claim"], collateral_id=loan.collateral_id),
            operator=user,
            amount_paid=d["amount_paid"],
        ),
    ):
        messages.success(request, "Claim settled.")
        return redirect("financing:lender_loan", public_id=loan.public_id)
    extra = {
        "first_loss": loan_first_loss(loan),
        "claims": loan_claims(loan),
        "first_loss_form": first_loss_form,
        "write_off_form": write_off_form,
        "claim_form": claim_form,
    }
    forms = (first_loss_form, write_off_form, claim_form)
    return _loan_page(request, loan, "financing/lender_loan.html", extra, forms)


def _first_loss_post(request, loan: Loan, form: FirstLossForm) -> bool:
    done = form_submit(form, lambda d: first_loss_post(user=request.user, loan=loan, amount=d["amount"]))
    if done:
        messages.success(request, f"Posted {done.result.amount:,.2f} USDai of first-loss capital on this loan.")
    return bool(done)


@role_required(Role.LENDER, Role.OPERATOR)
def collateral_page(request, pk: int):
    collateral = get_object_or_404(Collateral.objects.select_related("server__region"), pk=pk)
    history = appraisal_history(collateral)
    context = {
        "collateral": collateral,
        "appraisals": list(reversed(history))[:30],
        "chart": svg_charts.line_chart([(f"{a.as_of:%Y-%m-%d}", a.value) for a in history], "Appraisal history"),
    }
    return render(request, "financing/collateral.html", context)


def _loan_page(request, loan: Loan, template: str, extra: dict, forms=()):
    """The loan's page: ``extra`` context beside the schedule and the waterfall; 400 when one of
    ``forms`` was submitted with errors."""
    months = loan_revenue_by_month(loan)
    context = extra | {
        "summary": loan_summary(loan),
        "warnings": loan_warnings(loan),
        "instalments": loan.instalments.all(),
        "repayments": loan_repayments(loan),
        "months": months,
        "bars": svg_charts.stacked_bars(months),
        "flow": svg_charts.flow(loan_flow_totals(loan)),
    }
    return render(request, template, context, status=400 if any(f.errors for f in forms) else 200)
