"""How answers are scored and gated, per task type and caller: the validators' settings and the
overrides of the gate tunables, with the history of every tunable change.

The tables were created by the learning app and kept when the models moved here (each model names
its table); see docs/adr/0017-layers.md.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from .tunables import TUNABLES
from .validators.registry import VALIDATORS


def _tunable_choices() -> list[tuple[str, str]]:
    return [(name, name) for name in TUNABLES]


class ValidatorConfig(models.Model):
    """How one validator runs for a task type (empty task type: every task type), optionally for
    one caller's requests only (the most specific row wins)."""

    task_type = models.SlugField(max_length=100, blank=True, help_text="Empty: all task types.")
    caller = models.SlugField(
        max_length=100, blank=True, help_text="An agent's name; empty: every caller."
    )
    validator = models.CharField(max_length=50)
    enabled = models.BooleanField(default=True)
    weight = models.FloatField(
        default=1.0, help_text="0 runs it in shadow mode: recorded in the breakdown, not counted."
    )
    params = models.JSONField(default=dict, blank=True, help_text="Validator parameters (JSON).")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "learning_validatorconfig"  # created by the learning app, moved here as is
        ordering = ["task_type", "caller", "validator"]
        constraints = [
            models.UniqueConstraint(
                fields=["task_type", "caller", "validator"], name="unique_validator_config_caller"
            )
        ]

    def __str__(self) -> str:
        who = f"/{self.caller}" if self.caller else ""
        return f"{self.task_type or '*'}{who}: {self.validator}"

    def clean(self) -> None:
        if self.validator not in VALIDATORS:
            raise ValidationError(
                {"validator": f"Unknown validator; one of {', '.join(VALIDATORS)}."}
            )
        if self.weight < 0:
            raise ValidationError({"weight": "Must be 0 (shadow mode) or more."})
        if not isinstance(self.params, dict):
            raise ValidationError({"params": "Must be a JSON object."})


class TunableOverride(models.Model):
    """A value replacing a tunable's default: globally, for one task type, or for one caller
    (agent) and task type. The most specific wins: caller and task type, caller, task type,
    global."""

    name = models.CharField(max_length=50, choices=_tunable_choices)
    task_type = models.SlugField(max_length=100, blank=True, help_text="Empty: all task types.")
    caller = models.SlugField(
        max_length=100, blank=True, help_text="An agent's name; empty: every caller."
    )
    value = models.FloatField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "learning_tunableoverride"  # created by the learning app, moved here as is
        ordering = ["name", "task_type", "caller"]
        constraints = [
            models.UniqueConstraint(
                fields=["name", "task_type", "caller"], name="unique_tunable_override_caller"
            )
        ]

    def __str__(self) -> str:
        who = f"/{self.caller}" if self.caller else ""
        return f"{self.name}[{self.task_type or '*'}{who}] = {self.value:g}"

    def clean(self) -> None:
        tunable = TUNABLES.get(self.name)
        if tunable is None:
            raise ValidationError({"name": "Unknown tunable."})
        if not tunable.minimum <= self.value <= tunable.maximum:
            raise ValidationError(
                {"value": f"Must be between {tunable.minimum:g} and {tunable.maximum:g}."}
            )


class TunableChange(models.Model):
    """History: every change of a tunable, by a person or a learning cycle."""

    name = models.CharField(max_length=50)
    task_type = models.CharField(max_length=100, blank=True)
    caller = models.CharField(max_length=100, blank=True)
    old_value = models.FloatField(null=True, help_text="Empty: it was the default.")
    new_value = models.FloatField(null=True, help_text="Empty: back to the default.")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    source = models.CharField(max_length=50, default="admin")
    reason = models.CharField(max_length=300, blank=True)
    changed_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "learning_tunablechange"  # created by the learning app, moved here as is
        ordering = ["-changed_at"]

    def __str__(self) -> str:
        return f"{self.name}[{self.task_type or '*'}]: {self.old_value} → {self.new_value}"
