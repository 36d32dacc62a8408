"""Agents (the gateway's callers), their projects, the API keys they authenticate with, their
budgets, and the spend rollups budgets and reports read."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from gateway_project.outbound import OutboundRefused, outbound_url_error
from providers.models import Tier


class Project(models.Model):
    """A team or product a group of agents works for: budgets and spend are also kept per project."""

    name = models.SlugField(max_length=100, unique=True)
    description = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Agent(models.Model):
    """A caller of the gateway: Claude Code, Codex, a home-made agent, a script."""

    class Kind(models.TextChoices):
        CLAUDE_CODE = "claude-code", "Claude Code"
        CODEX = "codex", "Codex"
        COPILOT = "copilot", "Copilot"
        CHATGPT = "chatgpt", "ChatGPT"
        CUSTOM = "custom", "Custom"

    name = models.SlugField(
        max_length=100, unique=True, help_text="The caller name audited with every request."
    )
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CUSTOM)
    owner = models.CharField(max_length=200, blank=True, help_text="Who answers for this agent.")
    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.SET_NULL, related_name="agents"
    )
    description = models.CharField(max_length=300, blank=True)
    is_active = models.BooleanField(default=True)
    allowed_models = models.JSONField(
        default=list,
        blank=True,
        help_text='Public model names or tiers it may ask for by name, e.g. ["sim-fast", "large"]; '
        "empty: any.",
    )
    allowed_tiers = models.JSONField(
        default=list,
        blank=True,
        help_text='Tiers its requests may be answered on, e.g. ["fast", "medium"]; empty: any.',
    )
    rpm_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests per minute, over every process; empty: none."
    )
    tpm_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Tokens (in + out) per minute; empty: none."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        for field in ("allowed_models", "allowed_tiers"):
            value = getattr(self, field)
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ValidationError({field: 'A JSON list of names, e.g. [] or ["fast"].'})
        unknown = sorted(set(self.allowed_tiers) - set(Tier.values))
        if unknown:
            raise ValidationError(
                {"allowed_tiers": f"Unknown tier(s) {', '.join(unknown)}; one of {Tier.values}."}
            )


class ApiKey(models.Model):
    """A bearer key of an agent. Only its SHA-256 is stored; the key is shown once, at creation."""

    class Scope(models.TextChoices):
        """What a key may call: the completion API (agents) or the review decision API."""

        AGENT = "agent", "Agent (completion API)"
        REVIEWER = "reviewer", "Reviewer (review decision API)"

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="api_keys")
    label = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, help_text="The first characters, to recognise a key.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.AGENT)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.agent.name})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Budget(models.Model):
    """A spending cap in USD per day or month (UTC), of everything, a project, an agent or a key.

    A request reserves its worst-case cost against every budget it falls under before the upstream
    call and settles the real cost after (``agents.budgets``); over a cap it gets HTTP 429.
    """

    class Scope(models.TextChoices):
        GLOBAL = "global", "Everything"
        PROJECT = "project", "Project"
        AGENT = "agent", "Agent"
        KEY = "key", "API key"

    class Period(models.TextChoices):
        DAY = "day", "Per day (UTC)"
        MONTH = "month", "Per month (UTC)"

    scope = models.CharField(max_length=16, choices=Scope.choices)
    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    period = models.CharField(max_length=8, choices=Period.choices, default=Period.DAY)
    limit_usd = models.DecimalField(max_digits=12, decimal_places=4)
    alert_webhook_url = models.URLField(
        blank=True,
        help_text="Receives a signed POST at 50, 80 and 100 % (empty: the gateway-wide URL).",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["scope", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["scope", "project", "agent", "api_key", "period"],
                name="one_budget_per_target_and_period",
                nulls_distinct=False,
            ),
            models.CheckConstraint(
                condition=models.Q(limit_usd__gte=0), name="budget_limit_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.target} {self.get_period_display().lower()}: ${self.limit_usd}"

    @property
    def target(self) -> str:
        if self.scope == self.Scope.PROJECT and self.project_id:
            return f"project {self.project}"
        if self.scope == self.Scope.AGENT and self.agent_id:
            return f"agent {self.agent}"
        if self.scope == self.Scope.KEY and self.api_key is not None:
            return f"key {self.api_key.prefix}…"
        return "everything"

    def clean(self) -> None:
        if self.scope not in self.Scope.values:
            raise ValidationError({"scope": "Choose what the budget covers."})
        wanted = {
            self.Scope.GLOBAL: (),
            self.Scope.PROJECT: ("project",),
            self.Scope.AGENT: ("agent",),
            self.Scope.KEY: ("api_key",),
        }[self.Scope(self.scope)]
        errors = {}
        for field in ("project", "agent", "api_key"):
            given = getattr(self, f"{field}_id") is not None
            if field in wanted and not given:
                errors[field] = f"A {self.get_scope_display().lower()} budget names its {field}."
            elif field not in wanted and given:
                errors[field] = f"Leave empty for a {self.get_scope_display().lower()} budget."
        # Delivery checks again, against the address it connects to (docs/adr/0015).
        refusal = outbound_url_error(self.alert_webhook_url) if self.alert_webhook_url else None
        if refusal:
            hint = (
                " Internal hosts must be named in GATEWAY_OUTBOUND_ALLOWED_HOSTS."
                if isinstance(refusal, OutboundRefused) and refusal.internal
                else ""
            )
            errors["alert_webhook_url"] = (
                f"The gateway does not call this URL: it {refusal.reason}.{hint}"
            )
        if errors:
            raise ValidationError(errors)


class SpendRollup(models.Model):
    """Requests, tokens and cost per day, agent, key, project, model and task type.

    Kept up to date in the audit writer's transaction (``agents.spend``), so reports and budget
    counters read these rows, never the audit table.
    """

    day = models.DateField(db_index=True)
    agent = models.CharField(max_length=100)
    api_key_prefix = models.CharField(max_length=16, blank=True)
    project = models.CharField(max_length=100, blank=True)
    model = models.CharField(max_length=200, blank=True)
    task_type = models.CharField(max_length=100, blank=True)
    requests = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    cached = models.PositiveIntegerField(default=0)
    tokens_in = models.PositiveBigIntegerField(default=0)
    tokens_out = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=16, decimal_places=8, default=0)

    class Meta:
        ordering = ["-day", "agent", "model"]
        constraints = [
            models.UniqueConstraint(
                fields=["day", "agent", "api_key_prefix", "project", "model", "task_type"],
                name="one_spend_rollup_per_bucket",
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.agent} {self.model}: ${self.cost_usd}"


class BudgetAlert(models.Model):
    """A budget's settled spend reaching 50, 80 or 100 % in one period: logged, sent to the
    webhook, shown in the admin until acknowledged."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="alerts")
    period_start = models.DateField()
    threshold = models.PositiveSmallIntegerField(help_text="Percent of the limit: 50, 80 or 100.")
    spent_usd = models.DecimalField(
        max_digits=16, decimal_places=8, help_text="Settled spend when the threshold was reached."
    )
    reserved_usd = models.DecimalField(
        max_digits=16,
        decimal_places=8,
        default=0,
        help_text="Reserved besides by requests still in flight (not counted as spent).",
    )
    limit_usd = models.DecimalField(max_digits=12, decimal_places=4)
    created_at = models.DateTimeField(auto_now_add=True)
    webhook_url = models.URLField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    delivery_error = models.CharField(max_length=300, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "period_start", "threshold"], name="one_alert_per_threshold"
            )
        ]

    def __str__(self) -> str:
        return f"{self.budget.target}: {self.threshold} % of ${self.limit_usd} reached"
