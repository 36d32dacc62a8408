"""The reviewers' tool: the queue (oldest first), the evidence of one answer, and the decisions.

Nobody edits a review item through the model form: every change is a decision made through
``review_item_decide`` (one item in the change view, or many with the bulk actions), which locks
the row, refuses a second decision and writes the ``ReviewEvent``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from .models import ReviewEvent, ReviewItem
from .selectors import review_queue_stats
from .services import AlreadyDecided, Decision, InvalidDecision, review_item_decide

if TYPE_CHECKING:
    from django.contrib.admin.filters import _ListFilterChoices
    from django.contrib.admin.views.main import ChangeList

    # Generic in django-stubs only: Django's admin classes cannot be subscripted at runtime.
    _ReviewItemAdminBase = admin.ModelAdmin[ReviewItem]
    _ReviewEventAdminBase = admin.ModelAdmin[ReviewEvent]
else:
    _ReviewItemAdminBase = _ReviewEventAdminBase = admin.ModelAdmin


def format_age(age: timedelta | None) -> str:
    """A waiting time for people: "45 s", "12 min", "3 h 5 min", "2 d 4 h"."""
    if age is None:
        return "-"
    seconds = max(0, int(age.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def html_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> SafeString:
    header = format_html_join("", "<th>{}</th>", ((c,) for c in columns))
    body = format_html_join(
        "",
        "<tr>{}</tr>",
        ((format_html_join("", "<td>{}</td>", ((v,) for v in row)),) for row in rows),
    )
    return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", header, body)


# --- list filters -------------------------------------------------------------------------------


class ReviewStatusListFilter(admin.SimpleListFilter):
    """Pending items unless the reviewer asks for another status (or all)."""

    title = "status"
    parameter_name = "status"
    ALL = "all"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [*ReviewItem.Status.choices, (self.ALL, "All")]

    def choices(self, changelist: ChangeList) -> Iterator[_ListFilterChoices]:
        # No "All" link of Django's own: without a value this filter means "pending".
        current = self.value() or ReviewItem.Status.PENDING
        for value, label in self.lookup_choices:
            yield {
                "selected": current == value,
                "query_string": changelist.get_query_string({self.parameter_name: value}),
                "display": label,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value() or ReviewItem.Status.PENDING
        if value == self.ALL:
            return queryset
        return queryset.filter(status=value)


class ConfidenceBandListFilter(admin.SimpleListFilter):
    """The validators' confidence in bands matching the default gates (review <4, approve ≥7)."""

    title = "confidence"
    parameter_name = "confidence"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("low", "Low (< 4)"),
            ("medium", "Medium (4 to 7)"),
            ("high", "High (≥ 7)"),
            ("none", "Not scored"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        bands = {
            "low": Q(confidence__lt=4),
            "medium": Q(confidence__gte=4, confidence__lt=7),
            "high": Q(confidence__gte=7),
            "none": Q(confidence__isnull=True),
        }
        value = self.value()
        return queryset.filter(bands[value]) if value in bands else queryset


class AgeListFilter(admin.SimpleListFilter):
    """How long an item has been in the queue."""

    title = "age"
    parameter_name = "age"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("1h", "Under 1 hour"), ("24h", "Under 24 hours"), ("older", "Older than 24 hours")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now = timezone.now()
        value = self.value()
        if value == "1h":
            return queryset.filter(created_at__gte=now - timedelta(hours=1))
        if value == "24h":
            return queryset.filter(created_at__gte=now - timedelta(hours=24))
        if value == "older":
            return queryset.filter(created_at__lt=now - timedelta(hours=24))
        return queryset


# --- the queue ----------------------------------------------------------------------------------


@admin.register(ReviewItem)
class ReviewItemAdmin(_ReviewItemAdminBase):
    """The review queue. Read-only evidence; decisions through the service, gated by
    ``reviews.decide_reviewitem``."""

    list_display = (
        "id", "request_id", "age", "task_type", "caller", "model", "tier", "confidence_score",
        "gate_status", "reason", "status", "decided_by_label",
    )  # fmt: skip
    list_display_links = ("id", "request_id")
    list_filter = (
        ReviewStatusListFilter, "task_type", "model", "caller", ConfidenceBandListFilter,
        AgeListFilter, "reason", "gate_status",
    )  # fmt: skip
    search_fields = ("audit_record__request_id", "caller", "audit_record__prompt")
    search_help_text = "Request id, caller, or text of the input."
    ordering = ("created_at", "id")
    list_per_page = 50
    show_full_result_count = False
    actions = ["approve_selected", "reject_selected"]
    fieldsets = (
        ("Request", {"fields": ("request_id", "created_at", "caller", "task_type", "model", "tier",
                                "confidence_score", "gate_status", "reason")}),
        ("Input", {"fields": ("input_text",)}),
        ("Output", {"fields": ("output_text",)}),
        ("Validators", {"fields": ("validation_table",)}),
        ("Attempts", {"fields": ("attempts_table",)}),
        ("Decision", {"fields": ("status", "decided_by_label", "decided_at", "rejection_reason",
                                 "corrected_output", "history_table")}),
        ("Verdict callback", {"fields": ("callback_url", "callback_state", "callback_attempts",
                                         "callback_error")}),
    )  # fmt: skip

    # --- permissions: items come from the audit writer and change only by decisions ---

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Items and their ReviewEvents are the audit trail of the decisions.
        return False

    def has_decide_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("reviews.decide_reviewitem")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return flatten_fieldsets(self.fieldsets)

    # --- columns and evidence ---

    @admin.display(description="request", ordering="audit_record_id")
    def request_id(self, obj: ReviewItem) -> str:
        return obj.request_id

    @admin.display(description="age", ordering="created_at")
    def age(self, obj: ReviewItem) -> str:
        return format_age(timezone.now() - obj.created_at)

    @admin.display(description="confidence", ordering="confidence")
    def confidence_score(self, obj: ReviewItem) -> str:
        return "-" if obj.confidence is None else f"{obj.confidence:.1f}"

    @admin.display(description="input")
    def input_text(self, obj: ReviewItem) -> SafeString:
        record = obj.audit_record
        return _pre(record.prompt, record.prompt_sha256)

    @admin.display(description="output")
    def output_text(self, obj: ReviewItem) -> SafeString:
        record = obj.audit_record
        return _pre(record.output, record.output_sha256)

    @admin.display(description="validator breakdown")
    def validation_table(self, obj: ReviewItem) -> SafeString:
        checks = [v for v in obj.audit_record.validation or [] if isinstance(v, dict)]
        return html_table(
            ("validator", "score", "weight", "reason"),
            ((v.get("name", ""), v.get("score", ""), v.get("weight", ""), v.get("reason", ""))
             for v in checks),
        )  # fmt: skip

    @admin.display(description="attempts")
    def attempts_table(self, obj: ReviewItem) -> SafeString:
        columns = ("purpose", "provider", "model", "tier", "outcome", "error_class",
                   "status_code", "latency_ms", "confidence", "cost_usd", "detail")  # fmt: skip
        attempts = [a for a in obj.audit_record.attempts or [] if isinstance(a, dict)]
        return html_table(
            [c.replace("_", " ") for c in columns],
            ([a.get(c, "") for c in columns] for a in attempts),
        )

    @admin.display(description="history")
    def history_table(self, obj: ReviewItem) -> SafeString:
        return html_table(
            ("at", "by", "action", "from", "to", "reason"),
            ((e.at, e.actor_label, e.action, e.old_status, e.new_status, e.reason)
             for e in obj.events.all()),
        )  # fmt: skip

    # --- queue stats on the list, decision controls on the item ---

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        depth, oldest_age = review_queue_stats()
        context = {
            "title": "Review queue",
            "queue_depth": depth,
            "queue_oldest_age": oldest_age,
            "queue_oldest_age_text": format_age(oldest_age),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        item = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if item is not None:
            context.update(
                decision_allowed=item.is_pending and self.has_decide_permission(request),
                decide_url=reverse("admin:reviews_reviewitem_decide", args=[item.pk]),
                original_output=item.audit_record.output,
            )
        return super().change_view(request, object_id, form_url, extra_context=context)

    def get_urls(self) -> list[URLPattern]:
        decide = path(
            "<path:object_id>/decide/",
            self.admin_site.admin_view(self.decide_view),
            name="reviews_reviewitem_decide",
        )
        return [decide, *super().get_urls()]

    def _back_to(self, request: HttpRequest, url: str) -> HttpResponse:
        preserved_filters = self.get_preserved_filters(request)
        return redirect(
            add_preserved_filters({"preserved_filters": preserved_filters, "opts": self.opts}, url)
        )

    def decide_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Approve, reject or correct the item; a concurrent decision is reported, not overwritten."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_decide_permission(request):
            raise PermissionDenied
        try:
            item_id = int(object_id)
        except ValueError:
            raise Http404 from None
        decision = request.POST.get("decision", "")
        change_url = reverse("admin:reviews_reviewitem_change", args=[item_id])
        try:
            item = review_item_decide(
                item_id=item_id,
                actor=_user(request),
                decision=cast(Decision, decision),  # the service refuses anything else
                reason=request.POST.get("reason", ""),
                corrected_output=request.POST.get("corrected_output")
                if decision == "correct"
                else None,
            )
        except ReviewItem.DoesNotExist:
            raise Http404 from None
        except (AlreadyDecided, InvalidDecision) as exc:
            messages.error(request, str(exc))
            return self._back_to(request, change_url)
        messages.success(request, f"Review {item.pk} ({item.request_id}): {item.status}.")
        return self._back_to(request, reverse("admin:reviews_reviewitem_changelist"))

    # --- bulk actions: each item through the service ---

    @admin.action(description="Approve selected review items", permissions=["decide"])
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[ReviewItem]) -> None:
        self._decide_each(request, queryset, "approve", "")

    @admin.action(description="Reject selected review items…", permissions=["decide"])
    def reject_selected(
        self, request: HttpRequest, queryset: QuerySet[ReviewItem]
    ) -> TemplateResponse | None:
        """Asks for one reason first (an intermediate page): agents and learning get the reason,
        so a fixed "bulk rejected" would throw away what the reviewer knows."""
        reason = request.POST.get("reason", "").strip()
        if "apply" in request.POST and reason:
            self._decide_each(request, queryset, "reject", reason)
            return None
        items = list(queryset.filter(status=ReviewItem.Status.PENDING).order_by("created_at"))
        if not items:
            self.message_user(request, "None of the selected items is pending.", messages.WARNING)
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Reject review items",
            "opts": self.opts,
            "items": items,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "reason_missing": "apply" in request.POST,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/reviews/reviewitem/reject_selected.html", context)

    def _decide_each(
        self, request: HttpRequest, queryset: QuerySet[ReviewItem], decision: Decision, reason: str
    ) -> None:
        done, skipped = 0, []
        for item_id in queryset.order_by("created_at").values_list("pk", flat=True):
            try:
                review_item_decide(
                    item_id=item_id, actor=_user(request), decision=decision, reason=reason
                )
                done += 1
            except AlreadyDecided as exc:
                skipped.append(exc)
            except ReviewItem.DoesNotExist:
                continue
        verb = {"approve": "Approved", "reject": "Rejected", "correct": "Corrected"}[decision]
        self.message_user(request, f"{verb} {done} review item(s).", messages.SUCCESS)
        if skipped:
            detail = " ".join(str(exc) for exc in skipped[:5])
            more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
            self.message_user(
                request,
                f"Skipped {len(skipped)} item(s) already decided: {detail}{more}",
                messages.WARNING,
            )


def _pre(text: str, digest: str) -> SafeString:
    if not text and digest:
        return format_html("<em>Stored as a hash only (sha256 {})</em>", digest)
    return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text)


def _user(request: HttpRequest) -> AbstractBaseUser:
    user = request.user
    if not isinstance(user, AbstractBaseUser):
        raise PermissionDenied  # admin views are behind login; this only narrows the type
    return user


@admin.register(ReviewEvent)
class ReviewEventAdmin(_ReviewEventAdminBase):
    """The decision log. Read-only: rows are written by ``review_item_decide`` only."""

    list_display = ("at", "actor_label", "action", "item", "old_status", "new_status", "reason")
    list_filter = ("action", "new_status")
    search_fields = ("actor_label", "item__audit_record__request_id", "reason")
    list_select_related = ("item",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
