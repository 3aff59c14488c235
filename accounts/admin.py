from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from accounts.models import ApiToken, LenderProfile, OwnerCompany, OwnerMembership, RenterProfile, User


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ["email"]
    list_display = ["email", "first_name", "last_name", "is_staff", "is_active", "date_joined"]
    search_fields = ["email", "first_name", "last_name"]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Personal info", {"fields": ("first_name", "last_name")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)


class OwnerMembershipInline(admin.TabularInline):
    model = OwnerMembership
    extra = 0
    raw_id_fields = ["user"]


@admin.register(OwnerCompany)
class OwnerCompanyAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at"]
    search_fields = ["name"]
    inlines = [OwnerMembershipInline]


@admin.register(RenterProfile)
class RenterProfileAdmin(admin.ModelAdmin):
    list_display = ["user", "billing_name", "billing_country"]
    search_fields = ["user__email", "billing_name"]
    raw_id_fields = ["user"]


@admin.register(LenderProfile)
class LenderProfileAdmin(admin.ModelAdmin):
    list_display = ["user", "wallet_address"]
    search_fields = ["user__email", "wallet_address"]
    raw_id_fields = ["user"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Operators see and revoke (delete) tokens; nobody makes one here, and no secret or digest is shown."""

    list_display = ["name", "user", "scope", "token_key", "created", "expiry", "last_used_at"]
    list_filter = ["scope"]
    search_fields = ["user__email", "name", "token_key"]
    fields = ["user", "name", "scope", "token_key", "created", "expiry", "last_used_at"]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
