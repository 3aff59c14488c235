"""Financing models. This first part is the double-entry ledger.

Sign convention: a posting's amount is positive for a debit and negative for
a credit; the postings of a journal entry sum to zero per currency. Asset and
expense accounts normally carry debit (positive) balances, liability, income
and equity accounts credit (negative) ones. Entries and postings are never
updated or deleted: on PostgreSQL triggers refuse it, and a deferred
constraint trigger refuses, at commit, any entry whose postings do not sum to
zero (migration 0002).
"""

from django.db import models
from django.db.models import Q

from accounts.models import OwnerCompany
from marketplace.models import Payment, Refund, Settlement


class LedgerAccount(models.Model):
    class Kind(models.TextChoices):
        ASSET = "asset", "Asset"
        LIABILITY = "liability", "Liability"
        EQUITY = "equity", "Equity"
        INCOME = "income", "Income"
        EXPENSE = "expense", "Expense"

    code = models.CharField(max_length=80, unique=True)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    currency = models.CharField(max_length=3, default="USD")
    owner = models.ForeignKey(OwnerCompany, on_delete=models.PROTECT, null=True, blank=True, related_name="+")

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return f"{self.code} ({self.get_kind_display().lower()})"


class JournalEntry(models.Model):
    """One balanced movement of money, traceable to what caused it."""

    key = models.CharField(max_length=120, unique=True, help_text="Idempotency key: the same key posts once.")
    description = models.CharField(max_length=300)
    created_at = models.DateTimeField(auto_now_add=True)
    # What caused it (at most one); unique, so a source is journaled once.
    payment = models.OneToOneField(Payment, on_delete=models.PROTECT, null=True, blank=True, related_name="journal")
    refund = models.OneToOneField(Refund, on_delete=models.PROTECT, null=True, blank=True, related_name="journal")
    settlement = models.OneToOneField(
        Settlement, on_delete=models.PROTECT, null=True, blank=True, related_name="journal"
    )

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "journal entries"
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(payment__isnull=True, refund__isnull=True)
                    | Q(payment__isnull=True, settlement__isnull=True)
                    | Q(refund__isnull=True, settlement__isnull=True)
                ),
                name="journalentry_one_source_at_most",
            )
        ]

    def __str__(self) -> str:
        return f"{self.key}: {self.description}"


class Posting(models.Model):
    entry = models.ForeignKey(JournalEntry, on_delete=models.PROTECT, related_name="postings")
    account = models.ForeignKey(LedgerAccount, on_delete=models.PROTECT, related_name="postings")
    amount = models.DecimalField(max_digits=20, decimal_places=6, help_text="Debit positive, credit negative.")
    currency = models.CharField(max_length=3, default="USD")
    line = models.CharField(max_length=40, blank=True, help_text="The waterfall line or purpose of this posting.")

    class Meta:
        ordering = ["entry_id", "id"]
        indexes = [models.Index(fields=["account", "entry"], name="posting_account_entry")]
        constraints = [models.CheckConstraint(condition=~Q(amount=0), name="posting_not_zero")]
