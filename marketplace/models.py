from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Upper

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
