"""Operator admin for financing: approvals as actions calling the services; the ledger read-only."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError

from core.admin import ReadOnlyAdmin, ReadOnlyInline
from financing.models import (
    Appraisal,
    ChainEvent,
    Collateral,
    Instalment,
    InsuranceClaim,
    JournalEntry,
    LedgerAccount,
    LinkedWallet,
    Loan,
    MoneyAlert,
    MoneyReconciliation,
    Payout,
    PayoutRun,
    Posting,
    SepaFile,
    WalletOperation,
)
from financing.selectors.ledger import account_balance
from financing.selectors.loans import loan_warnings
from financing.services.collateral import appraisal_run, collateral_approve, hardware_loss_declare
from financing.services.delinquency import loan_foreclose
from financing.services.loans import loan_approve, loan_reject


def _run(modeladmin, request, queryset, action, done: str) -> None:
    ok = 0
    for obj in queryset:
        try:
            action(obj)
            ok += 1
        except (ValidationError, PermissionDenied) as exc:
            modeladmin.message_user(request, f"{obj}: {' '.join(getattr(exc, 'messages', [str(exc)]))}", messages.ERROR)
    if ok:
        modeladmin.message_user(request, f"{ok} {done}.", messages.SUCCESS)


class AppraisalInline(ReadOnlyInline):
    model = Appraisal
    fields = [
        "as_of",
        "trigger",
        "depreciated_value",
        "income_approach",
        "forward_income_value",
        "annual_net_income",
        "income_value",
        "value",
    ]


@admin.register(Collateral)
class CollateralAdmin(admin.ModelAdmin):
    list_display = ["server", "purchase_price", "insurer", "insurance_expires", "lien", "approved_at"]
    list_filter = ["lien"]
    search_fields = ["server__hostname", "policy_number", "custody_receipt"]
    readonly_fields = ["lien", "approved_at", "approved_by"]
    raw_id_fields = ["server"]
    inlines = [AppraisalInline]
    actions = ["approve", "appraise", "declare_loss"]

    @admin.action(description="Declare the hardware lost (opens an insurance claim)")
    def declare_loss(self, request, queryset):
        _run(
            self,
            request,
            queryset,
            lambda c: hardware_loss_declare(
                collateral=c, operator=request.user, description="Declared lost by an operator."
            ),
            "claim(s) opened",
        )

    @admin.action(description="Approve the selected collateral (and appraise it)")
    def approve(self, request, queryset):
        _run(self, request, queryset, lambda c: collateral_approve(collateral=c, operator=request.user), "approved")

    @admin.action(description="Appraise now")
    def appraise(self, request, queryset):
        _run(self, request, queryset, lambda c: appraisal_run(collateral=c), "appraised")


class InstalmentInline(ReadOnlyInline):
    model = Instalment
    fields = ["number", "due", "payment", "interest", "principal", "balance_after"]


@admin.register(Loan)
class LoanAdmin(ReadOnlyAdmin):
    list_display = [
        "public_id",
        "owner",
        "collateral",
        "principal",
        "apr",
        "tenor_months",
        "kind",
        "status",
        "ltv_at_origination",
        "projected_dscr",
        "outstanding",
    ]
    list_filter = ["status", "kind"]
    search_fields = ["public_id", "owner__name", "collateral__server__hostname"]
    inlines = [InstalmentInline]
    actions = ["approve", "reject", "foreclose"]

    @admin.display(description="Outstanding principal")
    def outstanding(self, loan):
        return account_balance(f"principal:{loan.pk}")

    @admin.action(description="Approve and disburse the selected applications")
    def approve(self, request, queryset):
        for loan in queryset.filter(status=Loan.Status.APPLIED):
            for warning in loan_warnings(loan):
                self.message_user(request, f"{loan}: {warning}", messages.WARNING)
        _run(self, request, queryset, lambda loan: loan_approve(loan=loan, operator=request.user), "approved")

    @admin.action(description="Foreclose the selected defaulted loans")
    def foreclose(self, request, queryset):
        _run(self, request, queryset, lambda loan: loan_foreclose(loan=loan, operator=request.user), "foreclosed")

    @admin.action(description="Reject the selected applications")
    def reject(self, request, queryset):
        _run(self, request, queryset, lambda loan: loan_reject(loan=loan, operator=request.user), "rejected")


@admin.register(LedgerAccount)
class LedgerAccountAdmin(ReadOnlyAdmin):
    list_display = ["code", "name", "kind", "currency", "balance"]
    list_filter = ["kind"]
    search_fields = ["code", "name"]

    @admin.display(description="Balance (debit +)")
    def balance(self, account):
        return account_balance(account)


class PostingInline(ReadOnlyInline):
    model = Posting
    fields = ["account", "amount", "currency", "line"]


@admin.register(JournalEntry)
class JournalEntryAdmin(ReadOnlyAdmin):
    list_display = ["key", "description", "created_at"]
    search_fields = ["key", "description"]
    inlines = [PostingInline]


@admin.register(InsuranceClaim)
class InsuranceClaimAdmin(admin.ModelAdmin):
    list_display = ["collateral", "declared_at", "amount_claimed", "insurer", "policy_number", "status"]
    list_filter = ["status"]
    readonly_fields = ["collateral", "declared_at", "declared_by", "amount_claimed", "insurer", "policy_number"]

    def has_add_permission(self, request):
        return False  # declared through the collateral's action


@admin.register(MoneyReconciliation)
class MoneyReconciliationAdmin(ReadOnlyAdmin):
    list_display = ["ran_at", "mismatches"]


@admin.register(MoneyAlert)
class MoneyAlertAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "check_name", "message", "cleared_by", "resolved_at"]
    list_filter = ["check_name"]


# Owner payouts: read-only here; runs, SEPA downloads and "mark sent" are on the payouts page.
@admin.register(PayoutRun)
class PayoutRunAdmin(ReadOnlyAdmin):
    list_display = ["pk", "period_start", "period_end", "trigger", "status", "created_by"]


@admin.register(Payout)
class PayoutAdmin(ReadOnlyAdmin):
    list_display = ["pk", "run", "company", "amount", "rail", "status", "reason"]
    list_filter = ["status", "rail"]


@admin.register(SepaFile)
class SepaFileAdmin(ReadOnlyAdmin):
    list_display = ["pk", "run", "message_id", "total_eur", "created_at", "sent_at"]
    exclude = ["xml"]


# Users' own wallets: read-only; links end on the user's wallet page (password again).
@admin.register(LinkedWallet)
class LinkedWalletAdmin(ReadOnlyAdmin):
    list_display = ["pk", "user", "address", "chain_id", "linked_at", "unlinked_at"]
    search_fields = ["address", "user__email"]


@admin.register(WalletOperation)
class WalletOperationAdmin(ReadOnlyAdmin):
    list_display = ["pk", "user", "kind", "status", "amount", "shares", "tx_hash", "created_at"]
    list_filter = ["kind", "status"]
    search_fields = ["tx_hash", "address", "user__email"]


@admin.register(ChainEvent)
class ChainEventAdmin(ReadOnlyAdmin):
    list_display = ["key", "contract", "event", "block_number", "user", "entry"]
    list_filter = ["contract", "event"]
