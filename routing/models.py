"""Where requests go (task routes, caller preferences, classification rules, prompt templates) and
what happened (the audit log)."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from providers.models import Tier


class RouteTarget(models.Model):
    """A starting tier or a pinned model; shared by task routes and caller preferences."""

    start_tier = models.CharField(max_length=16, choices=Tier.choices, blank=True)
    pinned_model = models.CharField(
        max_length=200, blank=True, help_text="A public model name; overrides the tier."
    )

    class Meta:
        abstract = True

    def clean(self) -> None:
        if not self.start_tier and not self.pinned_model:
            raise ValidationError("Set a starting tier or a pinned model.")


class TaskRoute(RouteTarget):
    """Task type → where routing starts. The route named ``default`` serves unknown task types."""

    DEFAULT = "default"

    task_type = models.SlugField(max_length=100, unique=True)
    description = models.CharField(max_length=300, blank=True)
    cache_ttl_s = models.PositiveIntegerField(
        "cache TTL (s)",
        null=True,
        blank=True,
        help_text="How long approved answers of this task type are served from the response "
        "cache. Empty: the default route's, else GATEWAY_CACHE_TTL_S (1 h). 0: never cached.",
    )

    class Meta:
        ordering = ["task_type"]

    def __str__(self) -> str:
        return f"{self.task_type} → {self.pinned_model or self.start_tier}"


class CallerPreference(RouteTarget):
    """A caller's own starting point, for all its task types or one (seed ADR-004's agent map)."""

    caller = models.SlugField(max_length=100)
    task_type = models.SlugField(max_length=100, blank=True, help_text="Empty: every task type.")

    class Meta:
        ordering = ["caller", "task_type"]
        constraints = [
            models.UniqueConstraint(fields=["caller", "task_type"], name="unique_caller_preference")
        ]

    def __str__(self) -> str:
        return f"{self.caller}/{self.task_type or '*'} → {self.pinned_model or self.start_tier}"


class ClassificationRule(models.Model):
    """An admin-edited rule that names the task type of an input."""

    class MatchType(models.TextChoices):
        KEYWORDS = "keywords", "Any of these words (comma-separated)"
        REGEX = "regex", "Regular expression"

    task_type = models.SlugField(max_length=100)
    match_type = models.CharField(
        max_length=16, choices=MatchType.choices, default=MatchType.KEYWORDS
    )
    pattern = models.TextField()
    priority = models.IntegerField(default=100, help_text="Lower runs first.")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["priority", "id"]

    def __str__(self) -> str:
        return f"{self.task_type}: {self.pattern[:40]}"

    def clean(self) -> None:
        if self.match_type == self.MatchType.REGEX:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValidationError(
                    {"pattern": f"Not a valid regular expression: {exc}"}
                ) from exc
        elif not [w for w in self.pattern.split(",") if w.strip()]:
            raise ValidationError({"pattern": "Give at least one keyword."})


class PromptTemplate(models.Model):
    """Per task type: a system prompt, and whether reviewed answers are shown as examples."""

    task_type = models.SlugField(max_length=100, unique=True)
    system_prompt = models.TextField(blank=True)
    include_examples = models.BooleanField(
        default=False, help_text="Add the latest approved or corrected answers as examples."
    )
    max_examples = models.PositiveSmallIntegerField(
        default=3, validators=[MinValueValidator(1), MaxValueValidator(20)]
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "reviews_prompttemplate"  # created by the reviews app, moved here as is
        ordering = ["task_type"]

    def __str__(self) -> str:
        return self.task_type


class AuditRecord(models.Model):
    """One per request: who asked what, every attempt, and what it cost. Never edited."""

    class Status(models.TextChoices):
        """An answered request carries its confidence gate (docs/adr/0003); others say why not."""

        APPROVED = "approved", "Approved"
        WARNING = "warning", "Warning"
        PENDING_REVIEW = "pending_review", "Pending review"
        FAILED = "failed", "Failed"
        CLIENT_CLOSED = "client_closed", "Client closed the stream"

    request_id = models.CharField(max_length=64, unique=True)
    endpoint = models.CharField(max_length=32)
    caller = models.CharField(max_length=100, db_index=True)
    agent = models.CharField(max_length=100, blank=True)
    api_key_prefix = models.CharField(max_length=16, blank=True)
    task_type = models.CharField(max_length=100, blank=True, db_index=True)
    requested_model = models.CharField(max_length=200, blank=True)
    stream = models.BooleanField(default=False)
    status = models.CharField(max_length=24, choices=Status.choices, db_index=True)
    http_status = models.PositiveSmallIntegerField()
    error = models.CharField(max_length=500, blank=True)
    attempts = models.JSONField(default=list)
    provider = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=200, blank=True, db_index=True)
    tier = models.CharField(max_length=16, blank=True)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    confidence = models.FloatField(null=True, blank=True, help_text="0-10, from the validators.")
    validation = models.JSONField(
        default=list, blank=True, help_text="Each validator's score, weight and reason."
    )
    prompt = models.TextField(blank=True)
    output = models.TextField(blank=True)
    prompt_sha256 = models.CharField(max_length=64, blank=True)
    output_sha256 = models.CharField(max_length=64, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(db_index=True)
    finished_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.request_id


class AuditDeadLetter(models.Model):
    """An audit row the database refused even in its reduced form (docs/adr/0007).

    Kept as JSON text (made storable, so it always fits) until an admin writes it again.
    """

    request_id = models.CharField(max_length=64, db_index=True)
    row = models.TextField(help_text="The queued row as JSON, with unstorable text replaced.")
    error = models.TextField(help_text="Why the database refused the row, last time it was tried.")
    created_at = models.DateTimeField(db_index=True)
    retries = models.PositiveIntegerField(default=0)
    last_retry_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "audit dead letter"

    def __str__(self) -> str:
        return self.request_id
