from typing import TYPE_CHECKING, Any

import orjson
from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join

from providers.admin import ConfigAdmin

from . import cache as response_cache
from .audit_write import DatabaseUnavailable, audit_dead_letters_retry
from .models import (
    AuditDeadLetter,
    AuditRecord,
    CallerPreference,
    ClassificationRule,
    PromptTemplate,
    TaskRoute,
)

if TYPE_CHECKING:
    # Generic in django-stubs only: Django's classes cannot be subscripted at runtime.
    _PaginatorBase = Paginator[AuditRecord]
    _AuditRecordAdminBase = admin.ModelAdmin[AuditRecord]
    _AuditDeadLetterAdminBase = admin.ModelAdmin[AuditDeadLetter]
else:
    _PaginatorBase = Paginator
    _AuditRecordAdminBase = admin.ModelAdmin
    _AuditDeadLetterAdminBase = admin.ModelAdmin


@admin.register(TaskRoute)
class TaskRouteAdmin(ConfigAdmin):
    list_display = ("task_type", "start_tier", "pinned_model", "cache_ttl_s", "description")
    search_fields = ("task_type", "pinned_model")
    actions = ["clear_cached_answers"]

    @admin.action(
        description="Clear the cached answers of the selected task types (default route: all)",
        permissions=["change"],
    )
    def clear_cached_answers(self, request: HttpRequest, queryset: QuerySet[TaskRoute]) -> None:
        task_types = list(queryset.values_list("task_type", flat=True))
        everything = TaskRoute.DEFAULT in task_types
        removed = response_cache.clear(None if everything else task_types)
        which = "every task type" if everything else ", ".join(task_types)
        self.message_user(request, f"Removed {removed} cached answer(s) of {which}.")


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
    """Counts at most ``CAP`` rows, so a large audit table is never counted in full."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        queryset: QuerySet[AuditRecord] = self.object_list  # type: ignore[assignment]  # the admin passes a QuerySet
        return queryset[: self.CAP].count()


@admin.register(PromptTemplate)
class PromptTemplateAdmin(ConfigAdmin):
    """A task type's system prompt and reviewed examples (part of the routing snapshot)."""

    list_display = ("task_type", "include_examples", "max_examples", "updated_at")
    search_fields = ("task_type", "system_prompt")


@admin.register(AuditRecord)
class AuditRecordAdmin(_AuditRecordAdminBase):
    """Read-only: nobody adds, changes or deletes audit records."""

    list_display = (
        "created_at", "caller", "task_type", "route", "tier", "status", "latency_ms",
        "tokens_in", "tokens_out", "cost_usd",
    )  # fmt: skip
    list_filter = ("status", "endpoint", "tier", "stream", "http_status")
    search_fields = ("request_id", "caller", "agent", "task_type", "model")
    paginator = CappedPaginator
    show_full_result_count = False
    list_per_page = 50
    fieldsets = (
        (None, {"fields": ("request_id", "status", "http_status", "error", "created_at",
                           "finished_at", "latency_ms")}),
        ("Who and what", {"fields": ("endpoint", "caller", "agent", "api_key_prefix", "task_type",
                                     "requested_model", "stream", "metadata")}),
        ("Routing", {"fields": ("provider", "model", "tier", "attempts_table")}),
        ("Usage", {"fields": ("tokens_in", "tokens_out", "cost_usd")}),
        ("Content", {"fields": ("prompt", "output", "prompt_sha256", "output_sha256")}),
    )  # fmt: skip

    @admin.display(description="route")
    def route(self, obj: AuditRecord) -> str:
        """The path the request took, e.g. "demo-fast ✗✗ → demo-medium ✓" (calls made for the
        request besides its answer say why: "demo-large [second opinion] ✓")."""
        steps: list[str] = []
        for attempt in obj.attempts:
            mark = {"ok": "✓", "error": "✗", "skipped": "-", "quota_exhausted": "-"}.get(
                attempt.get("outcome", ""), "!"
            )
            model = attempt.get("model", "?")
            if attempt.get("purpose"):
                model += f" [{str(attempt['purpose']).replace('_', ' ')}]"
            if steps and steps[-1].startswith(model + " "):
                steps[-1] += mark
            else:
                steps.append(f"{model} {mark}")
        return " → ".join(steps)

    @admin.display(description="attempts")
    def attempts_table(self, obj: AuditRecord) -> str:
        # purpose: why a call that answered nobody was made (second_opinion, classification).
        columns = ("purpose", "provider", "model", "tier", "outcome", "error_class",
                   "status_code", "latency_ms", "tokens_in", "tokens_out", "cost_usd",
                   "detail")  # fmt: skip
        header = format_html_join("", "<th>{}</th>", ((c.replace("_", " "),) for c in columns))
        rows = format_html_join(
            "",
            "<tr>{}</tr>",
            (
                (format_html_join("", "<td>{}</td>", ((a.get(c, ""),) for c in columns)),)
                for a in obj.attempts
            ),
        )
        return format_html(
            "<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", header, rows
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in AuditRecord._meta.fields] + ["attempts_table"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AuditDeadLetter)
class AuditDeadLetterAdmin(_AuditDeadLetterAdminBase):
    """Audit rows the database refused even in reduced form (docs/adr/0007): read-only, with an
    action that writes the selected ones again and removes those that are records now."""

    list_display = ("created_at", "request_id", "error", "retries", "last_retry_at")
    search_fields = ("request_id",)
    date_hierarchy = "created_at"
    list_per_page = 50
    actions = ["write_again"]
    fields = ("request_id", "created_at", "error", "retries", "last_retry_at", "row_json")

    @admin.display(description="row")
    def row_json(self, obj: AuditDeadLetter) -> str:
        try:
            text = orjson.dumps(orjson.loads(obj.row), option=orjson.OPT_INDENT_2).decode()
        except orjson.JSONDecodeError:
            text = obj.row
        return format_html("<pre>{}</pre>", text)

    @admin.action(description="Write the selected records again", permissions=["retry"])
    def write_again(self, request: HttpRequest, queryset: QuerySet[AuditDeadLetter]) -> None:
        try:
            outcome = audit_dead_letters_retry(ids=queryset.values_list("pk", flat=True))
        except DatabaseUnavailable as exc:
            self.message_user(
                request,
                f"The database is unavailable ({type(exc.cause).__name__}); nothing was written.",
                messages.ERROR,
            )
            return
        if outcome.written:
            self.message_user(request, f"Wrote {outcome.written} record(s); they are removed here.")
        if outcome.refused:
            self.message_user(
                request,
                f"{outcome.refused} record(s) were refused again; see their error.",
                messages.WARNING,
            )

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("routing.change_auditdeadletter")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return list(self.fields or ())

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
