from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.http import HttpRequest
from django.utils.functional import cached_property

from providers.admin import ConfigAdmin

from .models import AuditRecord, CallerPreference, ClassificationRule, TaskRoute

if TYPE_CHECKING:
    # Generic in django-stubs only: Django's classes cannot be subscripted at runtime.
    _PaginatorBase = Paginator[AuditRecord]
    _AuditRecordAdminBase = admin.ModelAdmin[AuditRecord]
else:
    _PaginatorBase = Paginator
    _AuditRecordAdminBase = admin.ModelAdmin


@admin.register(TaskRoute)
class TaskRouteAdmin(ConfigAdmin):
    list_display = ("task_type", "start_tier", "pinned_model", "description")
    search_fields = ("task_type", "pinned_model")


@admin.register(CallerPreference)
class CallerPreferenceAdmin(ConfigAdmin):
    list_display = ("caller", "task_type", "start_tier", "pinned_model")
    search_fields = ("caller", "task_type")


@admin.register(ClassificationRule)
class ClassificationRuleAdmin(ConfigAdmin):
    list_display = ("task_type", "match_type", "pattern", "priority", "enabled")
    list_filter = ("match_type", "enabled", "task_type")
    list_editable = ("priority", "enabled")


class CappedPaginator(_PaginatorBase):
    """Never counts a large audit table: pages are browsed, not totalled."""

    @cached_property
    def count(self) -> int:
        return 10_000


@admin.register(AuditRecord)
class AuditRecordAdmin(_AuditRecordAdminBase):
    """Read-only: nobody adds, changes or deletes audit records."""

    list_display = (
        "request_id", "created_at", "caller", "task_type", "model", "provider", "tier", "status",
        "http_status", "latency_ms", "tokens_in", "tokens_out", "cost_usd", "attempt_count",
    )  # fmt: skip
    list_filter = ("status", "endpoint", "tier", "stream")
    search_fields = ("request_id", "caller", "task_type", "model")
    date_hierarchy = None
    paginator = CappedPaginator
    show_full_result_count = False
    list_per_page = 50

    @admin.display(description="attempts")
    def attempt_count(self, obj: AuditRecord) -> int:
        return len(obj.attempts)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in AuditRecord._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
