from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django_celery_beat.models import PeriodicTask

from .cycles import learning_change_apply, learning_change_revert, learning_cycle_run
from .models import CycleSetting, LearningChange, LearningRun

if TYPE_CHECKING:
    _LearningRunAdminBase = admin.ModelAdmin[LearningRun]
    _LearningChangeAdminBase = admin.ModelAdmin[LearningChange]
    _CycleSettingAdminBase = admin.ModelAdmin[CycleSetting]
    _LearningChangeInlineBase = admin.TabularInline[LearningChange, LearningRun]
else:
    _LearningRunAdminBase = _LearningChangeAdminBase = _CycleSettingAdminBase = admin.ModelAdmin
    _LearningChangeInlineBase = admin.TabularInline


class _ChangeValues:
    """A change's before and after as an admin reads them (tier names for start tiers)."""

    @admin.display(description="before", ordering="before")
    def before_value(self, obj: LearningChange) -> str:
        return obj.value_label(obj.before)

    @admin.display(description="after", ordering="after")
    def after_value(self, obj: LearningChange) -> str:
        return obj.value_label(obj.after)


class LearningChangeInline(_ChangeValues, _LearningChangeInlineBase):
    model = LearningChange
    fields = (
        "change_link",
        "target",
        "task_type",
        "before_value",
        "after_value",
        "state",
        "expected_effect",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    @admin.display(description="change")
    def change_link(self, obj: LearningChange) -> str:
        url = reverse("admin:learning_learningchange_change", args=[obj.pk])
        return format_html('<a href="{}">{}</a>', url, obj.pk)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(CycleSetting)
class CycleSettingAdmin(_CycleSettingAdminBase):
    """The three learning cycles: each one's mode, schedule and last run, and "run now"."""

    list_display = ("kind", "mode", "schedule", "last_run", "proposed_changes")
    list_editable = ("mode",)
    fields = ("kind", "mode")
    readonly_fields = ("kind",)
    actions = ["run_now"]

    @admin.display(description="schedule (beat)")
    def schedule(self, obj: CycleSetting) -> str:
        task = PeriodicTask.objects.filter(name=f"learning: {obj.kind}").first()
        if task is None:
            return "not scheduled (run manage.py seed_learning_schedules)"
        url = reverse("admin:django_celery_beat_periodictask_change", args=[task.pk])
        state = "" if task.enabled else " (disabled)"
        return format_html('<a href="{}">{}{}</a>', url, task.schedule, state)

    @admin.display(description="last run")
    def last_run(self, obj: CycleSetting) -> str:
        run = LearningRun.objects.filter(kind=obj.kind).first()
        if run is None:
            return "never"
        url = reverse("admin:learning_learningrun_change", args=[run.pk])
        started = f"{run.started_at:%Y-%m-%d %H:%M}"
        return format_html('<a href="{}">{} {}</a>', url, started, run.status)

    @admin.display(description="proposed changes")
    def proposed_changes(self, obj: CycleSetting) -> str:
        count = LearningChange.objects.filter(
            run__kind=obj.kind, state=LearningChange.State.PROPOSED
        ).count()
        url = reverse("admin:learning_learningchange_changelist")
        return format_html(
            '<a href="{}?state__exact=proposed&run__kind={}">{}</a>', url, obj.kind, count
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Run the selected cycles now", permissions=["change"])
    def run_now(self, request: HttpRequest, queryset: QuerySet[CycleSetting]) -> None:
        # The same service as beat's task, in this request: the outcome is shown at once.
        for setting in queryset:
            run = learning_cycle_run(kind=setting.kind)
            level = messages.ERROR if run.status == LearningRun.Status.FAILED else messages.INFO
            self.message_user(request, f"{run}: {run.outcome}", level)


@admin.register(LearningRun)
class LearningRunAdmin(_LearningRunAdminBase):
    """Read-only record of the learning cycles' runs, each with its changes."""

    list_display = ("started_at", "kind", "mode", "status", "finished_at", "change_count")
    list_filter = ("kind", "status", "mode")
    fields = ("kind", "mode", "status", "started_at", "finished_at", "data_used", "outcome")
    readonly_fields = fields
    inlines = [LearningChangeInline]

    @admin.display(description="changes")
    def change_count(self, obj: LearningRun) -> int:
        return obj.changes.count()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _usd(value: Any) -> str:
    return "n/a" if value is None else f"${value:.6f}"


_REPLAY_ROWS = (
    ("cost_usd", "cost per request", _usd),
    ("approval_rate", "approved by the gate", _pct),
    ("review_load", "sent to review", _pct),
    ("approved_acceptance", "reviewers accept the approved", _pct),
)


@admin.register(LearningChange)
class LearningChangeAdmin(_ChangeValues, _LearningChangeAdminBase):
    """Changes of the learning cycles: apply the proposed ones, revert applied ones."""

    list_display = (
        "id",
        "run",
        "target",
        "task_type",
        "before_value",
        "after_value",
        "state",
        "applied_at",
        "reverted_at",
    )
    list_filter = ("state", "target_kind", "tunable", "validator", "run__kind")
    search_fields = ("task_type", "validator", "caller")
    fields = (
        "run",
        "target_kind",
        "tunable",
        "validator",
        "caller",
        "task_type",
        "before_value",
        "before_overridden",
        "after_value",
        "state",
        "expected_effect",
        "replay_estimate",
        "evidence_tiers",
        "evidence_display",
        "applied_at",
        "reverted_at",
    )
    readonly_fields = fields
    actions = ["apply_proposed", "revert_changes"]

    @admin.display(description="reviewed outcomes per tier")
    def evidence_tiers(self, obj: LearningChange) -> str:
        tiers = obj.evidence.get("tiers") if isinstance(obj.evidence, dict) else None
        if not isinstance(tiers, dict) or not tiers:
            return "-"
        rows = format_html_join(
            "",
            "<tr><th>{}</th><td>{} of {} ({})</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    tier,
                    stats.get("accepted"),
                    stats.get("n"),
                    _pct(stats.get("acceptance")),
                    _pct(stats.get("wilson_lower")),
                    stats.get("requests"),
                    _usd(stats.get("mean_cost_usd")),
                    stats.get("mean_latency_ms"),
                )
                for tier, stats in tiers.items()
            ),
        )
        return format_html(
            "<table><tr><th>tier</th><th>accepted of reviewed</th>"
            "<th>95 % lower bound</th><th>requests</th><th>mean cost</th>"
            "<th>mean latency ms</th></tr>{}</table>",
            rows,
        )

    @admin.display(description="evidence")
    def evidence_display(self, obj: LearningChange) -> str:
        # The replay has its own table above; the rest as the cycle recorded it.
        evidence = obj.evidence if isinstance(obj.evidence, dict) else {"value": obj.evidence}
        rest = {k: v for k, v in evidence.items() if k != "replay"}
        return format_html("<pre>{}</pre>", json.dumps(rest, indent=2, sort_keys=True))

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # A change is a record: it is applied or reverted by the actions, never edited.
        context = {**(extra_context or {}), "show_save": False, "show_save_and_continue": False}
        return super().change_view(request, object_id, form_url, extra_context=context)

    @admin.display(description="replay on recent traffic")
    def replay_estimate(self, obj: LearningChange) -> str:
        replay = obj.evidence.get("replay") if isinstance(obj.evidence, dict) else None
        if not isinstance(replay, dict):
            return "-"
        rows = format_html_join(
            "",
            "<tr><th>{}</th><td>{}</td><td>{}</td></tr>",
            (
                (label, fmt(replay["before"].get(key)), fmt(replay["after"].get(key)))
                for key, label, fmt in _REPLAY_ROWS
            ),
        )
        return format_html(
            "<p>{} answered requests, {} reviewed, in the window</p>"
            "<table><tr><th></th><th>before</th><th>after</th></tr>{}</table>",
            replay.get("requests"),
            replay.get("reviewed"),
            rows,
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def _each(
        self,
        request: HttpRequest,
        queryset: QuerySet[LearningChange],
        service: Any,
        done: str,
    ) -> None:
        count = 0
        for change in queryset.order_by("-id"):
            try:
                service(change=change, actor=request.user)
                count += 1
            except ValueError as exc:
                self.message_user(request, f"Change {change.pk}: {exc}", messages.WARNING)
        self.message_user(request, f"{count} change(s) {done}.")

    @admin.action(description="Apply proposed changes", permissions=["change"])
    def apply_proposed(self, request: HttpRequest, queryset: QuerySet[LearningChange]) -> None:
        self._each(request, queryset, learning_change_apply, "applied")

    @admin.action(description="Revert changes", permissions=["change"])
    def revert_changes(self, request: HttpRequest, queryset: QuerySet[LearningChange]) -> None:
        # Newest first, so a later change of the same tunable is reverted before an earlier one.
        self._each(request, queryset, learning_change_revert, "reverted")
