import uuid
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Round, Upper
from django.utils import timezone

from accounts.models import OwnerCompany

hostname_validator = RegexValidator(
    regex=r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$",
    message="Enter a valid hostname: letters, digits, hyphens and dots (RFC 1123).",
    code="invalid_hostname",
)
serial_validator = RegexValidator(
    regex=r"^[A-Za-z0-9][A-Za-z0-9._/-]{2,63}$",
    message="A serial number has 3–64 characters: letters, digits, '.', '_', '/' or '-'.",
    code="invalid_serial",
)


class GpuModel(models.Model):
    """A GPU model of the catalogue (current data-centre parts and the trace's)."""

    name = models.CharField(max_length=64, unique=True)
    vendor = models.CharField(max_length=32, default="NVIDIA")
    vram_gb = models.PositiveIntegerField("VRAM (GB)", null=True, blank=True)
    list_price_usd = models.DecimalField(
        "typical list price (USD)", max_digits=12, decimal_places=2, null=True, blank=True
    )
    trace_code = models.CharField(
        max_length=16, blank=True, help_text="The code used for this model in the Alibaba GPU trace."
    )
    undisclosed = models.BooleanField(
        default=False, help_text="An internal code whose specifications were not published."
    )
    released = models.PositiveSmallIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["trace_code"], condition=~Q(trace_code=""), name="gpumodel_trace_code_unique"
            ),
            models.CheckConstraint(
                condition=Q(undisclosed=True) | (Q(vram_gb__isnull=False) & Q(vram_gb__gt=0)),
                name="gpumodel_vram_known_unless_undisclosed",
            ),
            models.CheckConstraint(
                condition=Q(list_price_usd__isnull=True) | Q(list_price_usd__gt=0), name="gpumodel_price_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def vram_label(self) -> str:
        return f"{self.vram_gb} GB" if self.vram_gb else "undisclosed"


class Region(models.Model):
    code = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=100)
    country = models.CharField(max_length=2)

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


class Server(models.Model):
    """A physical GPU server of an owner company."""

    owner = models.ForeignKey(OwnerCompany, on_delete=models.PROTECT, related_name="servers")
    hostname = models.CharField(max_length=253, validators=[hostname_validator])
    serial_number = models.CharField(max_length=64, blank=True, validators=[serial_validator])
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="servers")
    data_centre = models.CharField(max_length=120, blank=True)
    cpu_milli = models.PositiveIntegerField("CPU (millicores)", validators=[MinValueValidator(1000)])
    memory_mib = models.PositiveBigIntegerField("RAM (MiB)", validators=[MinValueValidator(1024)])
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["owner_id", "hostname"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "hostname"], name="server_hostname_unique_per_owner"),
            models.UniqueConstraint(
                Upper("serial_number"), condition=~Q(serial_number=""), name="server_serial_unique_when_set"
            ),
            models.CheckConstraint(condition=Q(cpu_milli__gte=1000), name="server_cpu_at_least_one_core"),
            models.CheckConstraint(condition=Q(memory_mib__gte=1024), name="server_memory_at_least_1gib"),
        ]

    def __str__(self) -> str:
        return self.hostname

    @property
    def cpu_cores(self) -> float:
        return self.cpu_milli / 1000

    @property
    def memory_gib(self) -> int:
        return self.memory_mib // 1024


class Gpu(models.Model):
    """One GPU card, identified by a serial number unique across the platform."""

    class Status(models.TextChoices):
        AVAILABLE = "available", "Available"
        MAINTENANCE = "maintenance", "Maintenance"
        FAILED = "failed", "Failed"
        RETIRED = "retired", "Retired"

    server = models.ForeignKey(Server, on_delete=models.CASCADE, related_name="gpus")
    slot = models.PositiveSmallIntegerField(help_text="Index of the card in its server, from 0.")
    serial = models.CharField(max_length=64, validators=[serial_validator])
    serial_assigned_by_platform = models.BooleanField(
        default=False, help_text="True when the owner gave no serial and InfraFi assigned one."
    )
    model = models.ForeignKey(GpuModel, on_delete=models.PROTECT, related_name="gpus")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.AVAILABLE)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["server_id", "slot"]
        constraints = [
            models.UniqueConstraint(Upper("serial"), name="gpu_serial_unique_ci"),
            models.UniqueConstraint(fields=["server", "slot"], name="gpu_slot_unique_per_server"),
            models.CheckConstraint(
                condition=Q(status__in=["available", "maintenance", "failed", "retired"]), name="gpu_status_valid"
            ),
        ]
        indexes = [models.Index(fields=["model", "status"])]

    def __str__(self) -> str:
        return f"{self.model} {self.serial}"


MIN_BOOKING_MINUTES = 60
# Bounds of a listing's per-GPU share: 1,024 cores and 16 TiB are far above any server.
MAX_CPU_MILLI_PER_GPU = 1_024_000
MAX_MEMORY_MIB_PER_GPU = 16 * 1024 * 1024


class Listing(models.Model):
    """A server's GPUs offered for rent at a price per GPU-hour."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"

    server = models.OneToOneField(Server, on_delete=models.CASCADE, related_name="listing")
    # Denormalised from the server for search, so that every filter is a
    # column of this table: its GPU model and VRAM, its region, and how many of
    # its GPUs are in service (status "available"). Inventory services keep them.
    gpu_model = models.ForeignKey(GpuModel, on_delete=models.PROTECT, related_name="listings")
    vram_gb = models.PositiveIntegerField(null=True, blank=True)
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="listings")
    gpus_in_service = models.PositiveSmallIntegerField(default=0)
    reliability = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        default=Decimal("0.9900"),
        validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="Share of booked time delivered without interruption (0–1); the scheduler lowers it on failures.",
    )
    price_per_gpu_hour = models.DecimalField("price per GPU-hour (USD)", max_digits=10, decimal_places=2)
    min_duration_minutes = models.PositiveIntegerField(default=MIN_BOOKING_MINUTES)
    max_duration_minutes = models.PositiveIntegerField(default=30 * 24 * 60)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.ACTIVE)
    always_available = models.BooleanField(
        default=True, help_text="True while the owner has set no availability windows or weekly pattern."
    )
    financed = models.BooleanField(default=False, help_text="Set by financing when the server is loan collateral.")
    # The CPU and memory a booking takes per GPU at least. Null means an even
    # split of the server (its CPU or memory ÷ its GPUs). The listing service
    # checks that share × GPUs in service fits the server.
    cpu_milli_per_gpu = models.PositiveIntegerField(
        "CPU per GPU (millicores)",
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_CPU_MILLI_PER_GPU)],
        help_text="Empty: an even split of the server's CPU.",
    )
    memory_mib_per_gpu = models.PositiveIntegerField(
        "RAM per GPU (MiB)",
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_MEMORY_MIB_PER_GPU)],
        help_text="Empty: an even split of the server's RAM.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["price_per_gpu_hour", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(price_per_gpu_hour__gt=0), name="listing_price_positive"),
            models.CheckConstraint(
                condition=Q(min_duration_minutes__gte=MIN_BOOKING_MINUTES), name="listing_min_at_least_an_hour"
            ),
            models.CheckConstraint(
                condition=Q(max_duration_minutes__gte=models.F("min_duration_minutes")), name="listing_max_ge_min"
            ),
            models.CheckConstraint(
                condition=Q(reliability__gte=0) & Q(reliability__lte=1), name="listing_reliability_0_1"
            ),
        ]
        indexes = [
            models.Index(fields=["status", "price_per_gpu_hour"], name="listing_status_price"),
            models.Index(fields=["status", "reliability"], name="listing_status_reliability"),
            models.Index(fields=["status", "gpu_model", "price_per_gpu_hour"], name="listing_status_model_price"),
            models.Index(fields=["status", "region", "price_per_gpu_hour"], name="listing_status_region_price"),
        ]

    def __str__(self) -> str:
        return f"{self.server} @ ${self.price_per_gpu_hour}/GPU-h"

    @property
    def min_hours(self) -> Decimal:
        return Decimal(self.min_duration_minutes) / 60

    @property
    def max_hours(self) -> Decimal:
        return Decimal(self.max_duration_minutes) / 60

    def share_per_gpu(self, server: "Server | None" = None, gpus: int | None = None) -> tuple[int, int]:
        """(cpu_milli, memory_mib) a booking takes per GPU: the owner's setting,
        or the server's CPU and memory split evenly over its GPUs.

        ``gpus`` is the server's GPU count (all slots, not only those in service,
        so that a card out of repair does not change the share of bookings)."""
        server = server or self.server
        if self.cpu_milli_per_gpu is not None and self.memory_mib_per_gpu is not None:
            return self.cpu_milli_per_gpu, self.memory_mib_per_gpu
        if gpus is None:
            gpus = server.gpus.count()
        gpus = max(gpus, 1)
        cpu = self.cpu_milli_per_gpu if self.cpu_milli_per_gpu is not None else server.cpu_milli // gpus
        memory = self.memory_mib_per_gpu if self.memory_mib_per_gpu is not None else server.memory_mib // gpus
        return cpu, memory

    @property
    def share_label(self) -> str:
        """The share a booking takes per GPU, for the listing page: "8 cores and 32 GiB per GPU"."""
        cpu, memory = self.share_per_gpu()
        cores = f"{Decimal(cpu) / 1000:.3f}".rstrip("0").rstrip(".")
        gib = f"{Decimal(memory) / 1024:.1f}".rstrip("0").rstrip(".")
        return f"{cores} cores and {gib} GiB per GPU"


class AvailabilityRule(models.Model):
    """When a listing may be booked: explicit windows and/or a weekly pattern (UTC)."""

    class Kind(models.TextChoices):
        WINDOW = "window", "Window"
        WEEKLY = "weekly", "Weekly"

    listing = models.ForeignKey(Listing, on_delete=models.CASCADE, related_name="rules")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    start = models.DateTimeField(null=True, blank=True)
    end = models.DateTimeField(null=True, blank=True)
    weekday = models.PositiveSmallIntegerField(null=True, blank=True, help_text="0 = Monday … 6 = Sunday")
    start_minute = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Minutes after 00:00 UTC.")
    end_minute = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Up to 1440 (midnight).")

    class Meta:
        ordering = ["kind", "weekday", "start_minute", "start"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(kind="window", start__isnull=False, end__isnull=False, end__gt=models.F("start"))
                    | Q(
                        kind="weekly",
                        weekday__gte=0,
                        weekday__lte=6,
                        start_minute__gte=0,
                        end_minute__lte=1440,
                        end_minute__gt=models.F("start_minute"),
                    )
                ),
                name="availability_rule_well_formed",
            )
        ]

    WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

    @property
    def weekday_name(self) -> str:
        return self.WEEKDAYS[self.weekday] if self.weekday is not None else ""

    @property
    def start_label(self) -> str:
        return f"{self.start_minute // 60:02d}:{self.start_minute % 60:02d}" if self.start_minute is not None else ""

    @property
    def end_label(self) -> str:
        return f"{self.end_minute // 60:02d}:{self.end_minute % 60:02d}" if self.end_minute is not None else ""


class AvailabilitySlot(models.Model):
    """The rules expanded and merged into concrete intervals, for search and booking checks."""

    listing = models.ForeignKey(Listing, on_delete=models.CASCADE, related_name="slots")
    start = models.DateTimeField()
    end = models.DateTimeField()

    class Meta:
        ordering = ["listing", "start"]
        indexes = [models.Index(fields=["listing", "start", "end"], name="slot_listing_start_end")]
        constraints = [models.CheckConstraint(condition=Q(end__gt=models.F("start")), name="slot_end_after_start")]


class Booking(models.Model):
    """N GPUs of one server for a half-open window [start, end)."""

    class Status(models.TextChoices):
        PENDING_PAYMENT = "pending_payment", "Pending payment"
        CONFIRMED = "confirmed", "Confirmed"
        ACTIVE = "active", "Active"
        COMPLETED = "completed", "Completed"
        CANCELLED = "cancelled", "Cancelled"
        EXPIRED = "expired", "Expired"
        REFUNDED = "refunded", "Refunded"

    HOLDING = (Status.PENDING_PAYMENT, Status.CONFIRMED, Status.ACTIVE)
    # Paid and not finished: the payment sits in escrow, usage earns from it, and the
    # booking can still run, be cancelled, interrupted, moved to another server or completed.
    PAID_LIVE = (Status.CONFIRMED, Status.ACTIVE)

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    renter = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="bookings")
    listing = models.ForeignKey(Listing, on_delete=models.PROTECT, related_name="bookings")
    server = models.ForeignKey(Server, on_delete=models.PROTECT, related_name="bookings")
    gpu_count = models.PositiveSmallIntegerField()
    start = models.DateTimeField()
    end = models.DateTimeField()
    price_per_gpu_hour = models.DecimalField(max_digits=10, decimal_places=2)
    amount = models.DecimalField(max_digits=14, decimal_places=6, help_text="The quote, in whole cents.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING_PAYMENT)
    expires_at = models.DateTimeField(null=True, blank=True)
    gateway = models.CharField(max_length=16, blank=True)
    amount_paid = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal(0))
    amount_earned = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal(0))
    amount_refunded = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal(0))
    # The server's CPU and memory this booking takes for its window: the
    # listing's share × GPUs, or the renter's minimum if larger. Pods of the
    # booking request at most this.
    cpu_milli = models.PositiveIntegerField("CPU (millicores)", default=0)
    memory_mib = models.PositiveBigIntegerField("RAM (MiB)", default=0)
    delivered_gpu_seconds = models.BigIntegerField(default=0)
    lost_gpu_seconds = models.BigIntegerField(
        default=0, help_text="Booked time lost to a failure and refunded pro rata at once (failover)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-start", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(end__gt=models.F("start")), name="booking_end_after_start"),
            models.CheckConstraint(condition=Q(gpu_count__gte=1), name="booking_at_least_one_gpu"),
            models.CheckConstraint(
                condition=Q(amount__gte=0, amount_paid__gte=0, amount_earned__gte=0, amount_refunded__gte=0),
                name="booking_amounts_not_negative",
            ),
            # Half a micro-dollar of slack: amounts have 6 places, so on PostgreSQL
            # this is exactly "earned ≤ paid − refunded"; SQLite compares floats.
            models.CheckConstraint(
                condition=Q(
                    amount_earned__lte=models.F("amount_paid") - models.F("amount_refunded") + Decimal("0.0000005")
                ),
                name="booking_earned_within_paid",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "expires_at"], name="booking_status_expiry"),
            models.Index(fields=["status", "start"], name="booking_status_start"),
            models.Index(fields=["status", "end"], name="booking_status_end"),
        ]

    def __str__(self) -> str:
        return f"booking {self.public_id} ({self.get_status_display()})"

    @property
    def gpu_seconds_booked(self) -> int:
        return self.gpu_count * int((self.end - self.start).total_seconds())

    @property
    def gpu_seconds_payable(self) -> int:
        """Booked time that can still be delivered and earned: booked minus lost."""
        return self.gpu_seconds_booked - self.lost_gpu_seconds

    @property
    def escrow(self) -> Decimal:
        """Paid and neither earned by the owner nor refunded yet."""
        return self.amount_paid - self.amount_earned - self.amount_refunded


class BookingGpu(models.Model):
    """One GPU held by a booking for [start, end). On PostgreSQL an exclusion
    constraint forbids two held rows of the same GPU with overlapping times."""

    booking = models.ForeignKey(Booking, on_delete=models.CASCADE, related_name="allocations")
    gpu = models.ForeignKey(Gpu, on_delete=models.PROTECT, related_name="allocations")
    server = models.ForeignKey(Server, on_delete=models.PROTECT, related_name="+")
    start = models.DateTimeField()
    end = models.DateTimeField()
    held = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(end__gt=models.F("start")), name="bookinggpu_end_after_start"),
            models.UniqueConstraint(fields=["booking", "gpu"], name="bookinggpu_once_per_booking"),
        ]
        indexes = [
            models.Index(fields=["server", "held", "start", "end"], name="bookinggpu_server_window"),
            models.Index(fields=["gpu", "held", "start"], name="bookinggpu_gpu_window"),
        ]


class Payment(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    booking = models.ForeignKey(Booking, on_delete=models.PROTECT, related_name="payments")
    gateway = models.CharField(max_length=16)
    is_test = models.BooleanField(default=False)
    idempotency_key = models.CharField(max_length=80, unique=True)
    reference = models.CharField(max_length=120, blank=True)
    amount = models.DecimalField(max_digits=14, decimal_places=6)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    failure_message = models.CharField(max_length=300, blank=True)
    # The card it was paid with, as the gateway reported it (for the invoice); blank if unknown.
    card_brand = models.CharField(max_length=20, blank=True)
    card_last4 = models.CharField(max_length=4, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["gateway", "reference"], condition=~Q(reference=""), name="payment_reference_unique"
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="payment_amount_positive"),
        ]


class Refund(models.Model):
    class Reason(models.TextChoices):
        CANCELLATION = "cancellation", "Cancellation"
        UNDELIVERED = "undelivered", "Undelivered time"
        DOWNTIME = "downtime", "Downtime"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    booking = models.ForeignKey(Booking, on_delete=models.PROTECT, related_name="refunds")
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="refunds")
    idempotency_key = models.CharField(max_length=80, unique=True)
    reference = models.CharField(max_length=120, blank=True)
    amount = models.DecimalField(max_digits=14, decimal_places=6)
    reason = models.CharField(max_length=16, choices=Reason.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempt = models.PositiveSmallIntegerField(
        default=1, help_text="A failed refund sent again is a new attempt, under a new idempotency key."
    )
    failure_message = models.CharField(max_length=300, blank=True)
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="Failed: when the retry task sends it again (empty: an operator must act)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="refund_amount_positive"),
            # Whole cents: a refund counts only what the gateway can send.
            models.CheckConstraint(condition=Q(amount=Round(models.F("amount"), 2)), name="refund_whole_cents"),
            models.CheckConstraint(
                condition=Q(next_attempt_at__isnull=True) | Q(status="failed"), name="refund_retry_only_when_failed"
            ),
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="refund_status_retry")]

    @property
    def gateway_key(self) -> str:
        """The idempotency key of this attempt at the gateway."""
        return self.idempotency_key if self.attempt == 1 else f"{self.idempotency_key}-attempt-{self.attempt}"


class UsageRecord(models.Model):
    """Delivered GPU-seconds reported by the scheduler, once per key."""

    booking = models.ForeignKey(Booking, on_delete=models.PROTECT, related_name="usage")
    key = models.CharField(max_length=200, unique=True)
    interval_start = models.DateTimeField()
    interval_end = models.DateTimeField()
    gpu_seconds = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["interval_start", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(gpu_seconds__gte=0), name="usage_seconds_not_negative"),
            models.CheckConstraint(
                condition=Q(interval_end__gte=models.F("interval_start")), name="usage_interval_ordered"
            ),
        ]


class Settlement(models.Model):
    """Revenue earned by delivery: escrow released to the owner's side.

    Financing pulls rows with ``processed_at`` empty, posts them through its
    waterfall and stamps ``processed_at``; the marketplace never pushes.
    """

    booking = models.ForeignKey(Booking, on_delete=models.PROTECT, related_name="settlements")
    server = models.ForeignKey(Server, on_delete=models.PROTECT, related_name="settlements")
    usage = models.OneToOneField(UsageRecord, on_delete=models.PROTECT, null=True, blank=True)
    interval_start = models.DateTimeField()
    interval_end = models.DateTimeField()
    gpu_seconds = models.BigIntegerField()
    gross_amount = models.DecimalField(max_digits=14, decimal_places=6)
    rounding_adjustment = models.DecimalField(
        max_digits=14,
        decimal_places=6,
        default=Decimal(0),
        help_text="Sub-cent remainder of the final refund, earned by the owner so that paid = earned + refunded.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["interval_start", "id"]
        constraints = [models.CheckConstraint(condition=Q(gross_amount__gte=0), name="settlement_not_negative")]
        indexes = [models.Index(fields=["processed_at", "id"], name="settlement_unprocessed")]


class WebhookEvent(models.Model):
    """Every payment-gateway event, stored once by its id before it is handled."""

    gateway = models.CharField(max_length=16)
    event_id = models.CharField(max_length=120)
    type = models.CharField(max_length=80)
    payload = models.JSONField()
    created = models.BigIntegerField(help_text="The gateway's creation time (Unix seconds).")
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["created", "id"]
        constraints = [models.UniqueConstraint(fields=["gateway", "event_id"], name="webhook_event_once")]


class AllocationChange(models.Model):
    """One row per server whose allocation changed (a booking held, released,
    moved or interrupted; a GPU's status; its listing). Written in the
    transaction of the change, so a reader that polls by increasing id sees
    every committed change; the placement engine in the scheduler uses it to
    refresh only the servers that changed. Rows older than a day are deleted by
    the bookings tick."""

    id = models.BigAutoField(primary_key=True)
    server = models.ForeignKey(Server, on_delete=models.CASCADE, related_name="+")
    changed_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"change {self.id} of server {self.server_id}"
