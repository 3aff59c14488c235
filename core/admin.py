"""Admin base classes every app's admin may use; no model is registered here.

Money and external events change only through services, so their admin pages
let operators look, never edit: ``ReadOnlyAdmin`` for a model's own pages,
``ReadOnlyInline`` for rows shown inside their parent's page.
"""

from django.contrib import admin


class ReadOnlyAdmin(admin.ModelAdmin):
    """Money and external events change only through services: operators look, they do not edit."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyInline(admin.TabularInline):
    """Rows shown inside their parent's page, never added, changed or deleted there."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def get_readonly_fields(self, request, obj=None):
        return self.fields or ()
