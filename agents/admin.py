from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, QuerySet, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from .limits import budget_period
from .models import Agent, ApiKey, Budget, BudgetAlert, Project, SpendRollup
from .selectors import budget_ref
from .services import api_key_create, api_key_revoke, budget_alerts_acknowledge
from .spend import spent_nano

if TYPE_CHECKING:
    # Generic in django-stubs only: Django's admin classes cannot be subscripted at runtime.
    _ApiKeyInlineBase = admin.TabularInline[ApiKey, Agent]
    _BudgetInlineBase = admin.TabularInline[Budget, Agent]
    _AgentAdminBase = admin.ModelAdmin[Agent]
    _ApiKeyAdminBase = admin.ModelAdmin[ApiKey]
    _ProjectAdminBase = admin.ModelAdmin[Project]
    _BudgetAdminBase = admin.ModelAdmin[Budget]
    _SpendAdminBase = admin.ModelAdmin[SpendRollup]
    _AlertAdminBase = admin.ModelAdmin[BudgetAlert]
    _BudgetFormBase = forms.ModelForm[Budget]
else:
    _BudgetFormBase = forms.ModelForm
    _ApiKeyInlineBase = _BudgetInlineBase = admin.TabularInline
    _AgentAdminBase = _ApiKeyAdminBase = _ProjectAdminBase = admin.ModelAdmin
    _BudgetAdminBase = _SpendAdminBase = _AlertAdminBase = admin.ModelAdmin


class ApiKeyInline(_ApiKeyInlineBase):
    model = ApiKey
    extra = 0
    fields = ("prefix", "label", "scope", "created_at", "expires_at", "revoked_at")
    readonly_fields = ("prefix", "scope", "created_at", "revoked_at")
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class BudgetForm(_BudgetFormBase):
    """A budget as an admin edits it. A negative limit is refused here, as a form error on the
    field: left to the database, it would surface as "Constraint budget_limit_not_negative is
    violated"."""

    def clean_limit_usd(self) -> Decimal | None:
        limit: Decimal | None = self.cleaned_data.get("limit_usd")
        if limit is not None and limit < 0:
            raise forms.ValidationError("A budget cannot be negative: enter 0 or more (USD).")
        return limit


class AgentBudgetForm(BudgetForm):
    class Meta:
        model = Budget
        fields = ("period", "limit_usd", "alert_webhook_url", "is_active")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.instance.scope = Budget.Scope.AGENT  # before validation: clean() checks the scope


class AgentBudgetInline(_BudgetInlineBase):
    """The agent's own budgets (project, key and global ones are under Budgets)."""

    model = Budget
    form = AgentBudgetForm
    fk_name = "agent"
    extra = 0
    fields = ("period", "limit_usd", "alert_webhook_url", "is_active")
    verbose_name_plural = "budgets of this agent"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Budget]:
        return super().get_queryset(request).filter(scope=Budget.Scope.AGENT)


@admin.register(Project)
class ProjectAdmin(_ProjectAdminBase):
    list_display = ("name", "description", "agent_count", "created_at")
    search_fields = ("name", "description")

    @admin.display(description="agents")
    def agent_count(self, obj: Project) -> int:
        return obj.agents.count()


@admin.register(Agent)
class AgentAdmin(_AgentAdminBase):
    list_display = (
        "name",
        "kind",
        "owner",
        "project",
        "rpm_limit",
        "tpm_limit",
        "spend_today",
        "is_active",
    )
    list_filter = ("kind", "project", "is_active")
    search_fields = ("name", "owner", "description")
    fieldsets = (
        (None, {"fields": ("name", "kind", "owner", "project", "description", "is_active")}),
        (
            "What it may use",
            {"fields": ("allowed_models", "allowed_tiers", "rpm_limit", "tpm_limit")},
        ),
    )
    inlines = [AgentBudgetInline, ApiKeyInline]
    actions = ["issue_key"]

    @admin.display(description="spend today (USD)")
    def spend_today(self, obj: Agent) -> str:
        total = SpendRollup.objects.filter(agent=obj.name, day=timezone.now().date()).aggregate(
            total=Sum("cost_usd")
        )["total"]
        return f"{total or 0:.6f}"

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is Budget:
            for budget in formset.save(commit=False):
                budget.scope = Budget.Scope.AGENT
                budget.agent = form.instance
                budget.save()
            for removed in formset.deleted_objects:
                removed.delete()
            return
        super().save_formset(request, form, formset, change)

    @admin.action(description="Issue a new API key (shown once)")
    def issue_key(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        for agent in queryset:
            _, raw_key = api_key_create(agent_name=agent.name, label="admin")
            self.message_user(
                request,
                f"New key for {agent.name} (copy it now, it is not shown again): {raw_key}",
                level=messages.WARNING,
            )


@admin.register(ApiKey)
class ApiKeyAdmin(_ApiKeyAdminBase):
    list_display = ("prefix", "agent", "scope", "label", "created_at", "expires_at", "revoked_at")
    list_filter = ("scope", "agent")
    search_fields = ("prefix", "agent__name", "label")
    readonly_fields = ("agent", "scope", "prefix", "created_at", "revoked_at")
    fields = ("agent", "scope", "label", "prefix", "created_at", "expires_at", "revoked_at")
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Keys are issued from the agent page or `manage.py create_api_key`, which show them once.
        return False

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            api_key_revoke(key=key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")


@admin.register(Budget)
class BudgetAdmin(_BudgetAdminBase):
    """Caps in USD per day or month: of everything, a project, an agent or one key."""

    form = BudgetForm
    list_display = ("target", "period", "limit_usd", "spent_this_period", "is_active", "updated_at")
    list_filter = ("scope", "period", "is_active")
    fields = (
        "scope",
        "project",
        "agent",
        "api_key",
        "period",
        "limit_usd",
        "alert_webhook_url",
        "is_active",
    )
    autocomplete_fields = ("agent", "api_key")
    search_fields = ("agent__name", "project__name", "api_key__prefix")

    @admin.display(description="spent this period (USD)")
    def spent_this_period(self, obj: Budget) -> str:
        _, start, end = budget_period(obj.period, timezone.now())
        return f"{spent_nano(budget_ref(obj), start, end) / 1_000_000_000:.6f}"


@admin.register(SpendRollup)
class SpendRollupAdmin(_SpendAdminBase):
    """Spend per day, agent, model and task type, with totals of what the filters select."""

    change_list_template = "admin/agents/spendrollup/change_list.html"
    list_display = (
        "day",
        "agent",
        "project",
        "model",
        "task_type",
        "requests",
        "failed",
        "cached",
        "tokens_in",
        "tokens_out",
        "cost_usd",
    )
    list_filter = ("day", "agent", "project", "model", "task_type")
    date_hierarchy = "day"
    search_fields = ("agent", "model", "task_type", "project")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        if context is None or "cl" not in context:
            return response
        rows = context["cl"].queryset
        sums = {
            "requests": Sum("requests"),
            "cost": Sum("cost_usd"),
            "tokens_in": Sum("tokens_in"),
            "tokens_out": Sum("tokens_out"),
            "buckets": Count("id"),
        }
        context["totals"] = rows.aggregate(**sums)
        context["by_agent"] = rows.values("agent").annotate(**sums).order_by("-cost")[:20]
        context["by_model"] = rows.values("model").annotate(**sums).order_by("-cost")[:20]
        return response


@admin.register(BudgetAlert)
class BudgetAlertAdmin(_AlertAdminBase):
    list_display = (
        "created_at",
        "budget",
        "threshold",
        "spent_usd",
        "reserved_usd",
        "limit_usd",
        "period_start",
        "delivered_at",
        "delivery_error",
        "acknowledged_at",
    )
    list_filter = ("threshold", ("acknowledged_at", admin.EmptyFieldListFilter))
    actions = ["acknowledge"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Acknowledge (hide from the banner)", permissions=["view"])
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[BudgetAlert]) -> None:
        count = budget_alerts_acknowledge(alert_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, f"{count} alert(s) acknowledged.")
