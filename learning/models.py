"""The learning cycles' runs, their settings and the changes they made or propose."""

from __future__ import annotations

from django.db import models

from providers.models import Tier


class LearningRun(models.Model):
    """One run of a learning cycle: what data it looked at and what came of it."""

    class Kind(models.TextChoices):
        VALIDATORS = "validators", "Validators"
        THRESHOLDS = "thresholds", "Thresholds"
        ASSIGNMENTS = "assignments", "Assignments"

    class Mode(models.TextChoices):
        APPLY = "apply", "Apply"
        PROPOSE = "propose", "Propose"

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.APPLY)
    started_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    data_used = models.JSONField(
        default=dict,
        blank=True,
        help_text="What the cycle looked at, e.g. reviewed items per task.",
    )
    outcome = models.TextField(blank=True)
    task_id = models.CharField(
        max_length=64, blank=True, help_text="The Celery task that ran it (empty: run by hand)."
    )

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            # The lock of a cycle kind, in every process that shares the database.
            models.UniqueConstraint(
                fields=["kind"],
                condition=models.Q(status="running"),
                name="one_running_learning_cycle_per_kind",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} run {self.pk} ({self.status})"


class CycleSetting(models.Model):
    """How one learning cycle's runs go: applied at once, or proposed for an admin to apply."""

    kind = models.CharField(max_length=16, choices=LearningRun.Kind.choices, unique=True)
    mode = models.CharField(
        max_length=16,
        choices=LearningRun.Mode.choices,
        default=LearningRun.Mode.APPLY,
        help_text="Propose: the cycle's changes wait in the list of changes until applied.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind"]
        verbose_name = "learning cycle"

    def __str__(self) -> str:
        return f"{self.kind} cycle ({self.mode})"


class LearningChange(models.Model):
    """One change a learning run made (or proposes) to a tunable, to a validator's weight, or to a
    task route's start tier, of one task type.

    A start tier is kept in ``before`` / ``after`` as its position in the tier order (0 fast,
    1 medium, 2 large, 3 external; ``TIER_POSITIONS``); the names are in the evidence.
    """

    class TargetKind(models.TextChoices):
        TUNABLE = "tunable", "Tunable"
        VALIDATOR_WEIGHT = "validator_weight", "Validator weight"
        TASK_ROUTE = "task_route", "Task route start tier"
        CALLER_ROUTE = "caller_route", "Caller preference start tier"

    class State(models.TextChoices):
        APPLIED = "applied", "Applied"
        PROPOSED = "proposed", "Proposed"
        REVERTED = "reverted", "Reverted"
        REJECTED = "rejected", "Rejected"

    run = models.ForeignKey(LearningRun, on_delete=models.CASCADE, related_name="changes")
    target_kind = models.CharField(
        max_length=24, choices=TargetKind.choices, default=TargetKind.TUNABLE
    )
    tunable = models.CharField(max_length=50, blank=True, help_text="Empty for a validator.")
    validator = models.CharField(max_length=50, blank=True, help_text="For a validator weight.")
    task_type = models.CharField(max_length=100, blank=True)
    caller = models.CharField(
        max_length=100, blank=True, help_text="For a caller's start tier: the agent's name."
    )
    before = models.FloatField(help_text="The effective value before the change.")
    before_overridden = models.BooleanField(
        default=True,
        help_text=(
            "False: the task type had no override (or validator row) of its own; "
            "a revert removes the one the change created."
        ),
    )
    after = models.FloatField()
    evidence = models.JSONField(default=dict, blank=True)
    expected_effect = models.TextField(blank=True)
    state = models.CharField(max_length=16, choices=State.choices)
    applied_at = models.DateTimeField(null=True, blank=True, db_index=True)
    reverted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(
                fields=["tunable", "task_type", "applied_at"], name="learning_change_drift_idx"
            )
        ]

    def __str__(self) -> str:
        before, after = self.value_label(self.before), self.value_label(self.after)
        where = self.task_type or "*"
        if self.caller and self.target_kind == self.TargetKind.TUNABLE:
            where += f"/{self.caller}"
        return f"{self.target}[{where}]: {before} → {after}"

    @property
    def target(self) -> str:
        """What the change moves: a tunable's name, ``weight of <validator>`` or ``start tier``."""
        if self.target_kind == self.TargetKind.VALIDATOR_WEIGHT:
            return f"weight of {self.validator}"
        if self.target_kind == self.TargetKind.TASK_ROUTE:
            return "start tier"
        if self.target_kind == self.TargetKind.CALLER_ROUTE:
            return f"start tier of {self.caller}"
        return self.tunable

    def value_label(self, value: float) -> str:
        """A value as shown: a tier's name for a task route, the number otherwise."""
        if self.target_kind in (self.TargetKind.TASK_ROUTE, self.TargetKind.CALLER_ROUTE):
            return tier_at(value)
        return f"{value:g}"


TIER_POSITIONS: dict[str, int] = {tier: i for i, tier in enumerate(Tier.values)}
"""Tiers cheapest first (docs/adr/0002-cost-first-tiers.md), as stored in a task-route change."""


def tier_at(position: float) -> str:
    """The tier at a position of ``TIER_POSITIONS`` (``?`` when out of range)."""
    index = round(position)
    return Tier.values[index] if 0 <= index < len(Tier.values) else "?"
