from django.contrib import admin

from marketplace.models import Gpu, GpuModel, Region, Server


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
