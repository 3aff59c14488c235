"""Scheduler admin: clusters (kubeconfigs never shown), nodes with their
mismatches for the operator, jobs with their history."""

from django.contrib import admin

from core.admin import ReadOnlyInline
from scheduler.models import Cluster, Job, JobEvent, Node
from scheduler.services import clusters


class NodeInline(ReadOnlyInline):
    model = Node
    fields = ["name", "gpu_allocatable", "gpu_product", "ready", "server", "mismatch", "seen_at"]


@admin.register(Cluster)
class ClusterAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "kind", "health", "private_network_allowed", "checked_at", "synced_at"]
    list_filter = ["kind", "health", "private_network_allowed"]
    search_fields = ["name", "owner__name", "api_server"]
    exclude = ["kubeconfig_sealed"]
    readonly_fields = ["owner", "kind", "api_server", "health", "health_message", "checked_at", "synced_at"]
    inlines = [NodeInline]
    actions = ["sync_nodes"]

    @admin.action(description="Sync nodes now")
    def sync_nodes(self, request, queryset):
        for cluster in queryset:
            clusters.cluster_sync(cluster=cluster)
        self.message_user(request, f"Synced {queryset.count()} cluster(s).")


class MismatchFilter(admin.SimpleListFilter):
    title = "declaration"
    parameter_name = "mismatch"

    def lookups(self, request, model_admin):
        return [("yes", "Differs from the declared server"), ("no", "Matches")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.exclude(mismatch="")
        if self.value() == "no":
            return queryset.filter(mismatch="")
        return queryset


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ["name", "cluster", "gpu_allocatable", "gpu_product", "ready", "server", "mismatch"]
    list_filter = [MismatchFilter, "ready"]
    search_fields = ["name", "hostname", "cluster__name"]
    readonly_fields = [f.name for f in Node._meta.fields]


class JobEventInline(ReadOnlyInline):
    model = JobEvent
    fields = ["at", "kind", "message"]


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["name", "renter", "status", "gpu_count", "node_name", "attempt", "gpu_seconds", "created_at"]
    list_filter = ["status"]
    search_fields = ["public_id", "name", "renter__email", "k8s_name"]
    exclude = ["env_sealed"]
    readonly_fields = [f.name for f in Job._meta.fields if f.name != "env_sealed"]
    inlines = [JobEventInline]

    def has_add_permission(self, request):
        return False
