"""Financing models, in the order they build on each other:

- the double-entry ledger: ``LedgerAccount``, ``JournalEntry``, ``Posting``;
- collateral (CALIBER-style records), ``Appraisal``, ``InsuranceClaim``;
- ``Loan`` and its ``Instalment`` schedule;
- the chain: ``ChainDeployment``, the outbox (``ChainOp``), ``ChainAlert``,
  ``Reconciliation``, revenue epochs (``RevenueEpoch``, ``EpochEntry``);
- USDai and the vault: ``Wallet``, ``UsdaiPurchase``, ``VaultDeposit``,
  ``Redemption``, ``VaultDay``.

Ledger sign convention: a posting's amount is positive for a debit and negative for
a credit; the postings of a journal entry sum to zero per currency. Asset and
expense accounts normally carry debit (positive) balances, liability, income
and equity accounts credit (negative) ones. Entries and postings are never
updated or deleted: on PostgreSQL triggers refuse it, and a deferred
constraint trigger refuses, at commit, any entry whose postings do not sum to
zero (migration 0002).
"""

import uuid

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
        indexes = [
            models.Index(fields=["account", "entry"], name="posting_account_entry"),
            # Balances are sums per account: on PostgreSQL an index-only scan.
            models.Index(fields=["account"], include=["amount"], name="posting_account_amount"),
        ]
        constraints = [models.CheckConstraint(condition=~Q(amount=0), name="posting_not_zero")]


class Collateral(models.Model):
    """A CALIBER-style record binding a server's identity, custody, insurance,
    purchase and lien; an operator approves it before it can secure a loan."""

    class Lien(models.TextChoices):
        FREE = "free", "Free"
        PLEDGED = "pledged", "Pledged"
        FORECLOSED = "foreclosed", "Foreclosed"

    server = models.OneToOneField("marketplace.Server", on_delete=models.PROTECT, related_name="collateral")
    purchase_price = models.DecimalField(max_digits=14, decimal_places=2)
    purchase_date = models.DateField()
    custodian = models.CharField(max_length=200, help_text="Who holds the hardware (bailee).")
    custody_receipt = models.CharField(max_length=120, help_text="Warehouse or bailment receipt reference.")
    insurer = models.CharField(max_length=200)
    policy_number = models.CharField(max_length=80)
    coverage = models.DecimalField(max_digits=14, decimal_places=2)
    insurance_expires = models.DateField()
    lien = models.CharField(max_length=10, choices=Lien.choices, default=Lien.FREE)
    approved_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.ForeignKey("accounts.User", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "collateral"
        constraints = [
            models.CheckConstraint(condition=Q(purchase_price__gt=0), name="collateral_price_positive"),
            models.CheckConstraint(condition=Q(coverage__gt=0), name="collateral_coverage_positive"),
        ]

    def __str__(self) -> str:
        return f"collateral {self.server} ({self.get_lien_display().lower()})"


class Appraisal(models.Model):
    """A valuation, stored with every input it used: the lower of a depreciation
    value and an income value."""

    collateral = models.ForeignKey(Collateral, on_delete=models.PROTECT, related_name="appraisals")
    as_of = models.DateTimeField()
    age_years = models.DecimalField(max_digits=8, decimal_places=4)
    depreciation_rate = models.DecimalField(max_digits=6, decimal_places=4)
    residual_floor = models.DecimalField(max_digits=6, decimal_places=4)
    depreciated_value = models.DecimalField(max_digits=14, decimal_places=2)
    trailing_net_revenue = models.DecimalField(max_digits=14, decimal_places=6, help_text="Last 90 days, after fees.")
    trailing_days = models.PositiveIntegerField()
    remaining_life_years = models.DecimalField(max_digits=8, decimal_places=4)
    discount_rate = models.DecimalField(max_digits=6, decimal_places=4)
    income_value = models.DecimalField(max_digits=14, decimal_places=2, help_text="The income value used.")
    value = models.DecimalField(max_digits=14, decimal_places=2)
    trigger = models.CharField(max_length=12, default="on_demand")
    # Underwriting inputs (``financing.appraisal``): the hardware, the market it rents into,
    # and the costs that stand between its rent and debt service.
    gpu_model = models.CharField(max_length=64, blank=True)
    gpu_count = models.PositiveSmallIntegerField(default=0, help_text="GPUs neither failed nor retired.")
    depreciation_rate_source = models.CharField(max_length=200, blank=True)
    market_rate = models.DecimalField(
        max_digits=10, decimal_places=4, default=0, help_text="Going rate per GPU-hour for the model."
    )
    market_rate_source = models.CharField(max_length=200, blank=True)
    market_listings = models.PositiveIntegerField(default=0, help_text="Live listings the market rate came from.")
    listed_rate = models.DecimalField(
        max_digits=10, decimal_places=2, null=True, blank=True, help_text="The server's own listed price."
    )
    rate = models.DecimalField(max_digits=10, decimal_places=4, default=0, help_text="Rate per GPU-hour used.")
    trailing_utilisation = models.DecimalField(
        max_digits=6, decimal_places=4, null=True, blank=True, help_text="The model's; empty without history."
    )
    market_booked_gpu_hours = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    market_available_gpu_hours = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    utilisation = models.DecimalField(max_digits=6, decimal_places=4, default=0, help_text="Utilisation used.")
    utilisation_source = models.CharField(max_length=200, blank=True)
    platform_fee = models.DecimalField(max_digits=6, decimal_places=4, default=0, help_text="Of gross revenue.")
    insurance_rate = models.DecimalField(max_digits=6, decimal_places=4, default=0, help_text="Of gross revenue.")
    opex_per_gpu_hour = models.DecimalField(
        max_digits=10, decimal_places=4, default=0, help_text="Power and hosting, every hour of the year."
    )
    opex_source = models.CharField(max_length=200, blank=True)
    net_per_gpu_hour = models.DecimalField(
        max_digits=10, decimal_places=4, default=0, help_text="Forward: rate × utilisation net of costs."
    )
    forward_income_value = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    trailing_gross_revenue = models.DecimalField(max_digits=14, decimal_places=6, default=0)
    trailing_income_value = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    history_days = models.PositiveIntegerField(default=0, help_text="Days on the market, at most the window.")
    trailing_weight = models.DecimalField(
        max_digits=6, decimal_places=4, default=1, help_text="Weight of the server's own record in the income value."
    )
    income_approach = models.CharField(max_length=12, default="trailing", help_text="trailing, forward or blend.")
    annual_net_income = models.DecimalField(
        max_digits=14, decimal_places=2, default=0, help_text="The income the income value capitalises."
    )

    class Meta:
        ordering = ["-as_of", "-id"]
        get_latest_by = "as_of"
        constraints = [models.CheckConstraint(condition=Q(value__gte=0), name="appraisal_not_negative")]


class Loan(models.Model):
    """A loan against one collateral record; its balances live in the ledger
    (``principal:<id>``, ``interest:<id>``, ``reserve:<id>`` accounts)."""

    class Status(models.TextChoices):
        APPLIED = "applied", "Applied"
        ACTIVE = "active", "Active"
        REJECTED = "rejected", "Rejected"
        DEFAULTED = "defaulted", "Defaulted"
        FORECLOSED = "foreclosed", "Foreclosed"
        REPAID = "repaid", "Repaid"
        WRITTEN_OFF = "written_off", "Written off"

    class Kind(models.TextChoices):
        FIXED_PAYMENT = "fixed_payment", "Fixed payment"
        FIXED_PRINCIPAL = "fixed_principal", "Fixed principal"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(OwnerCompany, on_delete=models.PROTECT, related_name="loans")
    collateral = models.ForeignKey(Collateral, on_delete=models.PROTECT, related_name="loans")
    appraisal = models.ForeignKey(Appraisal, on_delete=models.PROTECT, related_name="+")
    principal = models.DecimalField(max_digits=14, decimal_places=2)
    apr = models.DecimalField(max_digits=6, decimal_places=4)
    tenor_months = models.PositiveSmallIntegerField()
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.FIXED_PAYMENT)
    ltv_at_origination = models.DecimalField(max_digits=6, decimal_places=4)
    projected_monthly_income = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True, help_text="The appraisal's annual net income / 12."
    )
    scheduled_payment = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True, help_text="The schedule's largest monthly payment."
    )
    projected_dscr = models.DecimalField(
        max_digits=8, decimal_places=4, null=True, blank=True, help_text="Projected income / scheduled payment."
    )
    reserve_funded = models.DecimalField(
        max_digits=14,
        decimal_places=2,
        default=0,
        help_text="Held back from the proceeds at origination for the debt-service reserve.",
    )
    reserve_released_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.APPLIED)
    applied_at = models.DateTimeField(auto_now_add=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.ForeignKey("accounts.User", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    interest_accrued_to = models.DateTimeField(null=True, blank=True)
    days_past_due = models.PositiveIntegerField(default=0, help_text="As of the last servicing run.")
    defaulted_at = models.DateTimeField(null=True, blank=True)
    foreclosed_at = models.DateTimeField(null=True, blank=True)
    repaid_at = models.DateTimeField(null=True, blank=True)
    written_off_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-applied_at"]
        constraints = [
            models.CheckConstraint(condition=Q(principal__gt=0), name="loan_principal_positive"),
            models.CheckConstraint(condition=Q(tenor_months__gte=12, tenor_months__lte=36), name="loan_tenor_12_36"),
            # One live loan per collateral record.
            models.UniqueConstraint(
                fields=["collateral"],
                condition=Q(status__in=["applied", "active", "defaulted", "foreclosed"]),
                name="loan_one_live_per_collateral",
            ),
        ]

    def __str__(self) -> str:
        return f"loan {self.public_id} ({self.get_status_display().lower()})"


class Instalment(models.Model):
    loan = models.ForeignKey(Loan, on_delete=models.PROTECT, related_name="instalments")
    number = models.PositiveSmallIntegerField()
    due = models.DateTimeField()
    payment = models.DecimalField(max_digits=14, decimal_places=2)
    interest = models.DecimalField(max_digits=14, decimal_places=2)
    principal = models.DecimalField(max_digits=14, decimal_places=2)
    balance_after = models.DecimalField(max_digits=14, decimal_places=2)

    class Meta:
        ordering = ["loan", "number"]
        constraints = [models.UniqueConstraint(fields=["loan", "number"], name="instalment_once")]


class InsuranceClaim(models.Model):
    """Hardware declared lost or destroyed: a claim against the collateral's policy."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        PAID = "paid", "Paid"
        DENIED = "denied", "Denied"

    collateral = models.ForeignKey(Collateral, on_delete=models.PROTECT, related_name="claims")
    declared_at = models.DateTimeField()
    declared_by = models.ForeignKey("accounts.User", on_delete=models.PROTECT, related_name="+")
    description = models.TextField()
    amount_claimed = models.DecimalField(max_digits=14, decimal_places=2)
    policy_number = models.CharField(max_length=80)
    insurer = models.CharField(max_length=200)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    amount_paid = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-declared_at"]
        constraints = [models.CheckConstraint(condition=Q(amount_claimed__gt=0), name="claim_amount_positive")]


class FirstLoss(models.Model):
    """First-loss capital posted on one loan by its owner or a curator (USD.AI's FiLo):
    it absorbs the loan's loss before sUSDai holders do, and earns a premium, a share of
    the loan's interest, paid with what is left of it when the loan ends."""

    class Status(models.TextChoices):
        POSTED = "posted", "Posted"
        CLOSED = "closed", "Closed"

    loan = models.ForeignKey(Loan, on_delete=models.PROTECT, related_name="first_loss")
    provider = models.ForeignKey("accounts.User", on_delete=models.PROTECT, related_name="first_loss")
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    premium_share = models.DecimalField(
        max_digits=6, decimal_places=4, help_text="Of the loan's interest net of the protocol fee."
    )
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.POSTED)
    absorbed = models.DecimalField(max_digits=14, decimal_places=2, default=0, help_text="Losses it paid.")
    returned = models.DecimalField(
        max_digits=14, decimal_places=6, default=0, help_text="Capital and premium paid back."
    )
    posted_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-posted_at", "-pk"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="first_loss_amount_positive"),
            models.CheckConstraint(
                condition=Q(premium_share__gte=0, premium_share__lte=1), name="first_loss_premium_share_0_1"
            ),
        ]

    def __str__(self) -> str:
        return f"first-loss {self.amount} on {self.loan}"


# --- On chain: deployment, custody wallets, the outbox, epochs, the vault -------------


class ChainDeployment(models.Model):
    """Where our contracts live on one chain. The embedded chain is rebuilt at
    every start from its genesis time, the same deployer and the outbox, so its
    addresses stay the same."""

    chain_id = models.BigIntegerField(unique=True)
    addresses = models.JSONField(help_text="Contract name → checksummed address.")
    operator = models.CharField(max_length=42)
    genesis_timestamp = models.BigIntegerField(null=True, blank=True, help_text="Embedded chain only.")
    genesis_hash = models.CharField(
        max_length=66, blank=True, help_text="Block 0's hash when deployed; another one means the chain was reset."
    )
    history = models.JSONField(
        default=list,
        blank=True,
        help_text="Earlier deployments on this chain id (reset, recovered): addresses, genesis hash.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"chain {self.chain_id}"


class Wallet(models.Model):
    """A user's custodial address: its key derives from ``CHAIN_CUSTODY_SEED``
    and the index, so no key is stored. Index 0 is the protocol operator."""

    user = models.OneToOneField("accounts.User", on_delete=models.PROTECT, null=True, blank=True, related_name="wallet")
    company = models.OneToOneField(
        OwnerCompany, on_delete=models.PROTECT, null=True, blank=True, related_name="wallet", help_text="Holds titles."
    )
    index = models.PositiveIntegerField(unique=True)
    address = models.CharField(max_length=42, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(index__gt=0), name="wallet_index_not_operator"),
            models.CheckConstraint(
                condition=Q(user__isnull=True, company__isnull=False) | Q(user__isnull=False, company__isnull=True),
                name="wallet_one_holder",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user or self.company} {self.address}"


class ChainOp(models.Model):
    """The transactional outbox: one transaction to send, written in the same
    database transaction as the ledger change it mirrors. Sent strictly in id
    order; signed once (nonce, raw bytes and hash stored before the broadcast),
    so a retry re-broadcasts the same transaction and a row is never sent as
    two transactions (a fee bump re-signs the same nonce: only one of its hashes
    can be mined). Mined is not confirmed: the row counts as confirmed, and its
    receipt is recorded, once its block is ``CHAIN_CONFIRMATIONS`` deep."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SIGNED = "signed", "Signed, not yet confirmed"
        MINED = "mined", "Mined, awaiting confirmations"
        CONFIRMED = "confirmed", "Confirmed"
        FAILED = "failed", "Failed"

    # Not yet confirmed: rows behind them wait, reconciliation counts them in flight.
    IN_FLIGHT = (Status.PENDING, Status.SIGNED, Status.MINED)

    class Replay(models.TextChoices):
        """Recovery of a reset chain: a confirmed row sent again to the new deployment."""

        NONE = "", "Not replayed"
        DUE = "due", "To replay"
        SENT = "sent", "Replay signed, not yet mined"
        DONE = "done", "Replayed"

    key = models.CharField(max_length=160, unique=True)
    sender = models.PositiveIntegerField(default=0, help_text="Wallet index; 0 is the protocol operator.")
    contract = models.CharField(max_length=20, blank=True, help_text="Blank: a plain ETH transfer (gas funding).")
    function = models.CharField(max_length=40, blank=True)
    args = models.JSONField(default=list, blank=True, help_text="Integers as strings.")
    to = models.CharField(max_length=42, blank=True, help_text="For ETH transfers.")
    value = models.CharField(max_length=40, default="0", help_text="Wei, for ETH transfers.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    nonce = models.BigIntegerField(null=True, blank=True)
    tx_hash = models.CharField(max_length=66, blank=True)
    raw_tx = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    tx_hashes = models.JSONField(
        default=list,
        blank=True,
        help_text="Every hash this row was signed as, oldest first (fee bumps, replays).",
    )
    signed_at = models.DateTimeField(null=True, blank=True, help_text="When the current signature was made.")
    max_fee_per_gas = models.BigIntegerField(null=True, blank=True)
    priority_fee_per_gas = models.BigIntegerField(null=True, blank=True)
    block_number = models.BigIntegerField(null=True, blank=True)
    block_hash = models.CharField(max_length=66, blank=True, help_text="Checked again before the row is confirmed.")
    block_timestamp = models.BigIntegerField(null=True, blank=True)
    gas_used = models.BigIntegerField(null=True, blank=True)
    result = models.JSONField(default=dict, blank=True, help_text="What the receipt's events said.")
    replay = models.CharField(max_length=4, choices=Replay.choices, blank=True, default=Replay.NONE)
    created_at = models.DateTimeField(auto_now_add=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["sender", "nonce"], condition=Q(nonce__isnull=False), name="chainop_nonce"),
        ]
        indexes = [models.Index(fields=["status", "id"], name="chainop_status")]

    def __str__(self) -> str:
        target = f"{self.contract}.{self.function}" if self.contract else f"ETH to {self.to}"
        return f"#{self.pk} {target} ({self.status})"


class ChainAlert(models.Model):
    """Something on chain an operator must look at (a reverted or stuck transaction,
    a reconciliation mismatch)."""

    kind = models.CharField(max_length=20)
    message = models.CharField(max_length=500)
    op = models.ForeignKey(ChainOp, on_delete=models.PROTECT, null=True, blank=True, related_name="alerts")
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]


class RevenueEpoch(models.Model):
    """A closed batch of revenue: its settlement postings' Merkle root is anchored on
    chain, and the interest and principal that reached the vault are reported."""

    number = models.PositiveIntegerField(unique=True)
    closed_at = models.DateTimeField()
    settlements = models.PositiveIntegerField()
    root = models.CharField(max_length=66, blank=True, help_text="0x…; blank when the epoch had no settlements.")
    principal = models.DecimalField(max_digits=20, decimal_places=6)
    profit = models.DecimalField(max_digits=20, decimal_places=6, help_text="Net interest and T-bill income.")
    accrued = models.DecimalField(max_digits=20, decimal_places=6, help_text="Interest accrued, not yet received.")
    rate = models.DecimalField(
        max_digits=30, decimal_places=18, default=0, help_text="USD a second the vault accrues from the close."
    )
    anchor_op = models.OneToOneField(ChainOp, on_delete=models.PROTECT, null=True, blank=True, related_name="+")

    class Meta:
        ordering = ["-number"]

    def __str__(self) -> str:
        return f"epoch {self.number}"


class EpochEntry(models.Model):
    """Marks a journal entry as taken into an epoch (entries themselves are immutable)."""

    entry = models.OneToOneField(JournalEntry, on_delete=models.PROTECT, related_name="epoch_mark")
    epoch = models.ForeignKey(RevenueEpoch, on_delete=models.PROTECT, related_name="marks")


class UsdaiPurchase(models.Model):
    """USDai bought through the payment gateway, minted 1:1 to the buyer's wallet.

    Written (pending, with its idempotency key) before the card is charged, so
    every charge the gateway makes is a row here; completed exactly once, by
    ``usdai_buy`` or by the sweep (``usdai_purchases_sweep``) after a crash."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    user = models.ForeignKey("accounts.User", on_delete=models.PROTECT, related_name="usdai_purchases")
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    gateway = models.CharField(max_length=16)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    idempotency_key = models.CharField(
        max_length=160, unique=True, help_text="Sent with the charge: a retry never charges twice."
    )
    payment_method = models.CharField(max_length=100, blank=True, help_text="Kept to present the same charge again.")
    reference = models.CharField(max_length=120, blank=True, help_text="The PaymentIntent id, once known.")
    failure_message = models.CharField(max_length=300, blank=True)
    is_test = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="usdai_purchase_positive"),
            models.UniqueConstraint(
                fields=["gateway", "reference"], condition=~Q(reference=""), name="usdai_purchase_reference_unique"
            ),
            models.CheckConstraint(
                condition=~Q(status="succeeded") | ~Q(reference=""), name="usdai_purchase_succeeded_has_reference"
            ),
        ]


class VaultDeposit(models.Model):
    user = models.ForeignKey("accounts.User", on_delete=models.PROTECT, related_name="vault_deposits")
    amount = models.DecimalField(max_digits=20, decimal_places=6)
    op = models.OneToOneField(ChainOp, on_delete=models.PROTECT, related_name="+")
    shares = models.DecimalField(max_digits=40, decimal_places=18, null=True, blank=True, help_text="From the receipt.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="vault_deposit_positive")]


class Redemption(models.Model):
    """A queued request to redeem sUSDai; serviced first in, first out, on chain."""

    class Status(models.TextChoices):
        REQUESTED = "requested", "Sending"
        QUEUED = "queued", "Queued"
        PAID = "paid", "Paid"
        CANCELLING = "cancelling", "Cancelling"
        CANCELLED = "cancelled", "Cancelled"

    user = models.ForeignKey("accounts.User", on_delete=models.PROTECT, related_name="redemptions")
    shares = models.DecimalField(max_digits=40, decimal_places=18)
    op = models.OneToOneField(ChainOp, on_delete=models.PROTECT, related_name="+")
    cancel_op = models.OneToOneField(ChainOp, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    request_id = models.BigIntegerField(null=True, blank=True, unique=True, help_text="The vault's queue id.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.REQUESTED)
    shares_left = models.DecimalField(max_digits=40, decimal_places=18)
    paid = models.DecimalField(max_digits=20, decimal_places=6, default=0, help_text="USDai received so far.")
    created_at = models.DateTimeField(auto_now_add=True)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [models.CheckConstraint(condition=Q(shares__gt=0), name="redemption_shares_positive")]


class TbillAccrual(models.Model):
    """One row: the moment T-bill interest has been posted up to (interest accrues per
    second on the holdings, and is posted before every move and at every daily run)."""

    accrued_to = models.DateTimeField()


class VaultDay(models.Model):
    """The vault's state at the end of a day, for realised APR and the share-price history."""

    date = models.DateField(unique=True)
    nav = models.DecimalField(max_digits=20, decimal_places=6, help_text="Cash + T-bills + loan principal.")
    income = models.DecimalField(max_digits=20, decimal_places=6, help_text="Net interest and T-bill income that day.")
    share_price = models.DecimalField(
        max_digits=38,
        decimal_places=18,
        null=True,
        blank=True,
        help_text="USDai a share was worth on chain at the day's run; empty when the chain could not be read.",
    )

    class Meta:
        ordering = ["-date"]


class Reconciliation(models.Model):
    """One comparison of the chain against the ledger."""

    ran_at = models.DateTimeField(auto_now_add=True)
    in_flight = models.PositiveIntegerField(help_text="Outbox rows not yet confirmed when it ran.")
    checks = models.JSONField(help_text="[{name, chain, ledger, ok}]")
    mismatches = models.PositiveIntegerField()

    class Meta:
        ordering = ["-ran_at"]


class MoneyReconciliation(models.Model):
    """One run of the money reconciler: bookings, refunds and charges against each other,
    the ledger and the payment gateway (``financing.services.money_reconcile``)."""

    ran_at = models.DateTimeField(auto_now_add=True)
    checks = models.JSONField(help_text="[{name, expected, actual, ok, details}]")
    mismatches = models.PositiveIntegerField()

    class Meta:
        ordering = ["-ran_at"]


class MoneyAlert(models.Model):
    """A money check that failed: one open alert per check, raised by the first run that
    finds it failing, kept (not duplicated) while later runs still do, marked clean when a
    run finds it clean again, and resolved by an operator (it stays as history)."""

    check_name = models.CharField(max_length=120, help_text="The check's name, as in MoneyReconciliation.checks.")
    message = models.CharField(max_length=500)
    raised_by = models.ForeignKey(MoneyReconciliation, on_delete=models.PROTECT, related_name="+")
    last_seen = models.ForeignKey(
        MoneyReconciliation, on_delete=models.PROTECT, related_name="+", help_text="The latest run that failed it."
    )
    cleared_by = models.ForeignKey(
        MoneyReconciliation,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The first later run that found the check clean (empty while it still fails).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["check_name"], condition=Q(resolved_at__isnull=True), name="moneyalert_one_open_per_check"
            )
        ]


# --- Cards: USDai purchases through Stripe.js (issue 14) ---------------------------------


# --- Linked wallets: SIWE, browser-signed vault operations, chain events (issue 14) --------


class SiweNonce(models.Model):
    """One Sign-In with Ethereum (EIP-4361) challenge: the exact message issued to one user for
    one address, used at most once (``used_at``, set in the transaction that links) and only
    until ``expires_at``."""

    user = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="siwe_nonces")
    nonce = models.CharField(max_length=32, unique=True)
    address = models.CharField(max_length=42, help_text="EIP-55; the address the message names.")
    domain = models.CharField(max_length=255)
    chain_id = models.BigIntegerField()
    message = models.TextField(help_text="The message as issued; the signed one must match it field by field.")
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-issued_at"]

    def __str__(self) -> str:
        return f"SIWE nonce {self.nonce} for {self.user} ({self.address})"


class LinkedWallet(models.Model):
    """An outside address the user proved they control (SIWE). One active link per user and an
    address linked to one user only (partial unique constraints); unlinking keeps the row."""

    user = models.ForeignKey("accounts.User", on_delete=models.PROTECT, related_name="linked_wallets")
    address = models.CharField(max_length=42, help_text="EIP-55 checksummed.")
    chain_id = models.BigIntegerField()
    proof = models.OneToOneField(SiweNonce, on_delete=models.PROTECT, related_name="link")
    signature = models.CharField(max_length=200)
    linked_at = models.DateTimeField()
    unlinked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-linked_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["user"], condition=Q(unlinked_at__isnull=True), name="linkedwallet_one_per_user"
            ),
            models.UniqueConstraint(
                fields=["address"], condition=Q(unlinked_at__isnull=True), name="linkedwallet_address_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.address}"


class ChainEvent(models.Model):
    """A contract event the chain watcher applied, once: ``key`` is ``tx_hash:log_index``."""

    key = models.CharField(max_length=80, unique=True)
    chain_id = models.BigIntegerField()
    block_number = models.BigIntegerField()
    tx_hash = models.CharField(max_length=66)
    log_index = models.PositiveIntegerField()
    contract = models.CharField(max_length=20)
    event = models.CharField(max_length=40)
    args = models.JSONField(default=dict, help_text="Integers as strings.")
    user = models.ForeignKey("accounts.User", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    entry = models.OneToOneField(
        JournalEntry, on_delete=models.PROTECT, null=True, blank=True, related_name="chain_event"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["block_number", "log_index"]

    def __str__(self) -> str:
        return f"{self.contract}.{self.event} {self.key}"


class ChainCursor(models.Model):
    """The last block the chain watcher has read, per chain."""

    chain_id = models.BigIntegerField(unique=True)
    block = models.BigIntegerField(help_text="Every block up to this one has been read.")
    updated_at = models.DateTimeField(auto_now=True)


class WalletOperation(models.Model):
    """A vault operation or a USDai receipt at a user's own (or custodial) address, as the
    user sees it: pending from the transaction hash the page posts until the watcher sees its
    event in a confirmed block (credited) or its receipt says it reverted (failed)."""

    class Kind(models.TextChoices):
        DEPOSIT = "deposit", "Deposit"
        REDEEM = "redeem", "Redemption request"
        CANCEL = "cancel", "Redemption cancelled"
        REDEEM_PAID = "redeem_paid", "Redemption paid"
        RECEIVED = "received", "USDai received"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        CONFIRMED = "confirmed", "Credited"
        FAILED = "failed", "Failed"

    user = models.ForeignKey("accounts.User", on_delete=models.PROTECT, related_name="wallet_operations")
    address = models.CharField(max_length=42, help_text="The address it concerns (linked or custodial).")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    tx_hash = models.CharField(max_length=66)
    submitted = models.BooleanField(default=False, help_text="Posted by the page (else found by the watcher).")
    amount = models.DecimalField(max_digits=20, decimal_places=6, null=True, blank=True, help_text="USDai.")
    shares = models.DecimalField(max_digits=40, decimal_places=18, null=True, blank=True)
    request_id = models.BigIntegerField(null=True, blank=True, help_text="The vault's redemption queue id.")
    shares_left = models.DecimalField(
        max_digits=40, decimal_places=18, null=True, blank=True, help_text="Of a redemption request: still queued."
    )
    paid = models.DecimalField(max_digits=20, decimal_places=6, default=0, help_text="Of a request: USDai paid.")
    event = models.OneToOneField(ChainEvent, on_delete=models.PROTECT, null=True, blank=True, related_name="operation")
    failure_message = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["tx_hash"], condition=Q(submitted=True), name="walletop_submitted_once"),
        ]


# --- Owner payouts: runs, statements, SEPA files (issue 14) --------------------------------


class PayoutRun(models.Model):
    """One payout run over a half-open UTC period ``[period_start, period_end)``: each owner
    company is paid what it earned before ``period_end`` and was not paid yet
    (``financing.services.payouts``). A scheduled run exists once per period."""

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Scheduled"
        OPERATOR = "operator", "Operator"

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        DONE = "done", "Done"

    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    trigger = models.CharField(max_length=8, choices=Trigger.choices)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.RUNNING)
    created_by = models.ForeignKey("accounts.User", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-period_end", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(period_end__gt=models.F("period_start")), name="payoutrun_period"),
            models.UniqueConstraint(
                fields=["period_end"], condition=Q(trigger="schedule"), name="payoutrun_one_scheduled_per_period"
            ),
        ]

    def __str__(self) -> str:
        return f"payout run {self.pk} [{self.period_start:%Y-%m-%d %H:%M}, {self.period_end:%Y-%m-%d %H:%M})"


class SepaFile(models.Model):
    """A pain.001.001.03 credit-transfer file of SEPA payouts of one run, for the operator to
    upload to the bank; marking it sent clears the payouts in transit. Lines join an open file
    (no XML yet) under its row lock; once built it is closed, and a later line opens another."""

    run = models.ForeignKey(PayoutRun, on_delete=models.PROTECT, related_name="sepa_files")
    message_id = models.CharField(max_length=35, blank=True, help_text="GrpHdr/MsgId, once the XML is built.")
    xml = models.TextField(blank=True, help_text="The pain.001 document; built once, then no line joins it.")
    total_eur = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    total_usd = models.DecimalField(max_digits=20, decimal_places=6, default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True, help_text="Marked uploaded to the bank by an operator.")
    sent_by = models.ForeignKey("accounts.User", on_delete=models.PROTECT, null=True, blank=True, related_name="+")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(sent_at__isnull=True) | ~Q(xml=""), name="sepafile_sent_has_xml"),
        ]

    def __str__(self) -> str:
        return f"SEPA file {self.message_id or self.pk}"


class Payout(models.Model):
    """What one company is paid (or why not) in one run. A paid payout is one ledger entry
    (``payout:<id>``) and its rail's row, the outbox mint (``payout:<id>:mint``) or a line of
    the run's SEPA file (end-to-end id ``PAYOUT-<id>``), written in one transaction."""

    class Rail(models.TextChoices):
        USDAI = "usdai", "USDai"
        SEPA = "sepa", "SEPA transfer"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"  # only inside the transaction that pays it
        SENT = "sent", "Sent"  # the mint queued, or the line in a file not yet marked sent
        CONFIRMED = "confirmed", "Confirmed"  # the mint confirmed on chain, or the file marked sent
        FAILED = "failed", "Failed"  # refused (e.g. an invalid IBAN): no ledger entry
        WITHHELD = "withheld", "Withheld"  # a loan past due: no money moves
        CARRIED = "carried", "Carried forward"  # below the minimum: paid in a later run

    PAID = (Status.SENT, Status.CONFIRMED)

    run = models.ForeignKey(PayoutRun, on_delete=models.PROTECT, related_name="payouts")
    company = models.ForeignKey(OwnerCompany, on_delete=models.PROTECT, related_name="payouts")
    amount = models.DecimalField(max_digits=20, decimal_places=6, help_text="USD.")
    rail = models.CharField(max_length=5, choices=Rail.choices)
    status = models.CharField(max_length=9, choices=Status.choices)
    reason = models.CharField(max_length=300, blank=True)
    entry_key = models.CharField(max_length=120, blank=True, help_text="The ledger entry's key, when paid.")
    op = models.OneToOneField(ChainOp, on_delete=models.PROTECT, null=True, blank=True, related_name="payout")
    address = models.CharField(max_length=42, blank=True, help_text="USDai: where it is minted.")
    sepa_file = models.ForeignKey(SepaFile, on_delete=models.PROTECT, null=True, blank=True, related_name="payouts")
    end_to_end_id = models.CharField(max_length=35, blank=True)
    iban = models.CharField(max_length=34, blank=True)
    bic = models.CharField(max_length=11, blank=True)
    amount_eur = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    usd_eur_rate = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "company"], name="payout_once_per_run_and_company"),
            models.CheckConstraint(condition=Q(amount__gt=0) | Q(status="withheld"), name="payout_amount_positive"),
            models.CheckConstraint(condition=Q(amount__gte=0), name="payout_amount_not_negative"),
            # Paid: its ledger entry, and its rail's row.
            models.CheckConstraint(
                condition=~Q(status__in=["sent", "confirmed"])
                | (
                    ~Q(entry_key="")
                    & (
                        Q(rail="usdai", op__isnull=False)
                        | Q(rail="sepa", sepa_file__isnull=False, amount_eur__gt=0) & ~Q(end_to_end_id="")
                    )
                ),
                name="payout_paid_has_entry_and_rail",
            ),
            # Not paid: no entry, no rail row, and a reason.
            models.CheckConstraint(
                condition=Q(status__in=["pending", "sent", "confirmed"])
                | (Q(entry_key="", op__isnull=True, sepa_file__isnull=True) & ~Q(reason="")),
                name="payout_unpaid_moves_nothing",
            ),
            models.UniqueConstraint(
                fields=["end_to_end_id"], condition=~Q(end_to_end_id=""), name="payout_end_to_end_unique"
            ),
            models.UniqueConstraint(fields=["entry_key"], condition=~Q(entry_key=""), name="payout_entry_unique"),
        ]

    def __str__(self) -> str:
        return f"payout {self.pk} to {self.company_id}: {self.amount} ({self.status})"
