"""Admin of how answers are scored: validator settings and tunable overrides (saved through the
services, so every change is audited and every process reloads), and the tunables' history."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import TunableChange, TunableOverride, ValidatorConfig
from .services import tunable_set, validator_config_delete, validator_config_save
from .tunables import TUNABLES
from .validators import validator_choices

if TYPE_CHECKING:
    # Generic in django-stubs only: Django's admin and form classes cannot be subscripted at
    # runtime.
    _ValidatorConfigAdminBase = admin.ModelAdmin[ValidatorConfig]
    _TunableOverrideAdminBase = admin.ModelAdmin[TunableOverride]
    _TunableChangeAdminBase = admin.ModelAdmin[TunableChange]
    _ValidatorConfigFormBase = forms.ModelForm[ValidatorConfig]
    _TunableOverrideFormBase = forms.ModelForm[TunableOverride]
else:
    _ValidatorConfigAdminBase = _TunableOverrideAdminBase = _TunableChangeAdminBase = (
        admin.ModelAdmin
    )
    _ValidatorConfigFormBase = _TunableOverrideFormBase = forms.ModelForm


def _validator_choices() -> list[tuple[str, str]]:
    return [(name, f"{name}: {description}") for name, description in validator_choices()]


class ValidatorConfigForm(_ValidatorConfigFormBase):
    validator = forms.ChoiceField(choices=_validator_choices)

    class Meta:
        model = ValidatorConfig
        fields = ["task_type", "caller", "validator", "enabled", "weight", "params"]


@admin.register(ValidatorConfig)
class ValidatorConfigAdmin(_ValidatorConfigAdminBase):
    """Which validators run for a task type, with what weight and parameters."""

    form = ValidatorConfigForm
    list_display = (
        "task_type_label",
        "caller_label",
        "validator",
        "enabled",
        "weight",
        "params",
        "updated_at",
    )
    list_filter = ("validator", "enabled", "task_type")
    search_fields = ("task_type", "validator", "caller")

    @admin.display(description="caller", ordering="caller")
    def caller_label(self, obj: ValidatorConfig) -> str:
        return obj.caller or "(every caller)"

    @admin.display(description="task type", ordering="task_type")
    def task_type_label(self, obj: ValidatorConfig) -> str:
        return obj.task_type or "(all task types)"

    def save_model(
        self, request: HttpRequest, obj: ValidatorConfig, form: Any, change: bool
    ) -> None:
        validator_config_save(config=obj)

    def delete_model(self, request: HttpRequest, obj: ValidatorConfig) -> None:
        validator_config_delete(config=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ValidatorConfig]) -> None:
        for config in queryset:
            validator_config_delete(config=config)


class TunableOverrideForm(_TunableOverrideFormBase):
    reason = forms.CharField(required=False, help_text="Why (kept in the history).")

    class Meta:
        model = TunableOverride
        fields = ["name", "task_type", "caller", "value"]
        help_texts = {
            "name": "; ".join(
                f"{t.name} (default {t.default:g}): {t.description}" for t in TUNABLES.values()
            )
        }


@admin.register(TunableOverride)
class TunableOverrideAdmin(_TunableOverrideAdminBase):
    """Gate thresholds and escalation limits, per task type; every change is kept."""

    form = TunableOverrideForm
    list_display = ("name", "task_type_label", "caller_label", "value", "default", "updated_at")
    list_filter = ("name",)
    search_fields = ("task_type", "caller")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # What an override is for is fixed; add another one instead.
        return ["name", "task_type", "caller"] if obj is not None else []

    @admin.display(description="caller", ordering="caller")
    def caller_label(self, obj: TunableOverride) -> str:
        return obj.caller or "(every caller)"

    @admin.display(description="task type", ordering="task_type")
    def task_type_label(self, obj: TunableOverride) -> str:
        return obj.task_type or "(all task types)"

    @admin.display(description="default")
    def default(self, obj: TunableOverride) -> str:
        tunable = TUNABLES.get(obj.name)
        return f"{tunable.default:g}" if tunable else "?"

    def save_model(
        self, request: HttpRequest, obj: TunableOverride, form: Any, change: bool
    ) -> None:
        tunable_set(
            name=obj.name,
            task_type=obj.task_type,
            caller=obj.caller,
            value=obj.value,
            actor=request.user,
            reason=form.cleaned_data.get("reason", ""),
        )

    def delete_model(self, request: HttpRequest, obj: TunableOverride) -> None:
        tunable_set(
            name=obj.name,
            task_type=obj.task_type,
            caller=obj.caller,
            value=None,
            actor=request.user,
        )

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[TunableOverride]) -> None:
        for override in queryset:
            self.delete_model(request, override)


@admin.register(TunableChange)
class TunableChangeAdmin(_TunableChangeAdminBase):
    """Read-only history of tunable changes."""

    list_display = (
        "changed_at",
        "name",
        "task_type",
        "caller",
        "old_value",
        "new_value",
        "actor",
        "source",
        "reason",
    )
    list_filter = ("name", "source")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
