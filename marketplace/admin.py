"""Marketplace admin: catalogue, inventory and listings are editable; bookings, money and gateway events read-only."""

from django.contrib import admin

from core.admin import ReadOnlyAdmin, ReadOnlyInline
from marketplace.models import (
    AvailabilityRule,
    Booking,
    BookingGpu,
    Gpu,
    GpuModel,
    Listing,
    Payment,
    Refund,
    Region,
    Server,
    Settlement,
    WebhookEvent,
)


@admin.register(GpuModel)
class GpuModelAdmin(admin.ModelAdmin):
    list_display = ["name", "vendor", "vram_gb", "list_price_usd", "trace_code", "undisclosed"]
    search_fields = ["name", "trace_code"]


@admin.register(Region)
class RegionAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "country"]


class GpuInline(admin.TabularInline):
    model = Gpu
    extra = 0
    fields = ["slot", "serial", "model", "status", "serial_assigned_by_platform"]


@admin.register(Server)
class ServerAdmin(admin.ModelAdmin):
    list_display = ["hostname", "owner", "region", "data_centre", "cpu_milli", "memory_mib"]
    list_filter = ["region", "owner"]
    search_fields = ["hostname", "serial_number", "gpus__serial"]
    inlines = [GpuInline]


@admin.register(Gpu)
class GpuAdmin(admin.ModelAdmin):
    list_display = ["serial", "model", "server", "slot", "status"]
    list_filter = ["status", "model"]
    search_fields = ["serial", "server__hostname"]
    raw_id_fields = ["server"]


class AvailabilityRuleInline(admin.TabularInline):
    model = AvailabilityRule
    extra = 0


@admin.register(Listing)
class ListingAdmin(admin.ModelAdmin):
    list_display = [
        "server",
        "gpu_model",
        "gpus_in_service",
        "price_per_gpu_hour",
        "region",
        "reliability",
        "status",
        "financed",
    ]
    list_filter = ["status", "financed", "region", "gpu_model"]
    search_fields = ["server__hostname"]
    readonly_fields = ["gpu_model", "vram_gb", "region", "gpus_in_service", "always_available"]
    raw_id_fields = ["server"]
    inlines = [AvailabilityRuleInline]


class BookingGpuInline(ReadOnlyInline):
    model = BookingGpu
    fields = ["gpu", "start", "end", "held"]


@admin.register(Booking)
class BookingAdmin(ReadOnlyAdmin):
    list_display = [
        "public_id",
        "renter",
        "server",
        "gpu_count",
        "start",
        "end",
        "status",
        "amount",
        "amount_paid",
        "amount_earned",
        "amount_refunded",
    ]
    list_filter = ["status", "gateway"]
    search_fields = ["public_id", "renter__email", "server__hostname"]
    date_hierarchy = "start"
    inlines = [BookingGpuInline]


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ["booking", "gateway", "reference", "amount", "status", "is_test", "created_at"]
    list_filter = ["gateway", "status", "is_test"]
    search_fields = ["reference", "booking__public_id"]


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    # Failed refunds are the operator's alert: filter on status, read why and when the retry is due.
    list_display = [
        "booking",
        "amount",
        "reason",
        "status",
        "reference",
        "attempt",
        "failure_message",
        "next_attempt_at",
        "created_at",
    ]
    list_filter = ["status", "reason"]
    search_fields = ["reference", "booking__public_id"]


@admin.register(Settlement)
class SettlementAdmin(ReadOnlyAdmin):
    list_display = [
        "booking",
        "server",
        "interval_start",
        "interval_end",
        "gpu_seconds",
        "gross_amount",
        "rounding_adjustment",
        "processed_at",
    ]
    list_filter = ["processed_at"]
    search_fields = ["booking__public_id", "server__hostname"]


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    list_display = ["event_id", "gateway", "type", "received_at", "processed_at", "attempts", "error"]
    list_filter = ["gateway", "type"]
    search_fields = ["event_id"]
