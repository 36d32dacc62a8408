"""Writes of gate tunables and validator configuration, each audited and hot-reloaded."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from gateway_project.versions import ROUTING_CONFIG_VERSION

from .models import TunableChange, TunableOverride, ValidatorConfig
from .tunables import TUNABLES


@transaction.atomic
def tunable_set(
    *,
    name: str,
    value: float | None,
    task_type: str = "",
    caller: str = "",
    actor: Any = None,
    source: str = "admin",
    reason: str = "",
) -> TunableChange:
    """Override a tunable for a task type and/or a caller (``value=None`` removes the override);
    records the change."""
    tunable = TUNABLES[name]
    if value is not None and not tunable.minimum <= value <= tunable.maximum:
        raise ValueError(f"{name} must be between {tunable.minimum:g} and {tunable.maximum:g}")
    current = (
        TunableOverride.objects.select_for_update()
        .filter(name=name, task_type=task_type, caller=caller)
        .first()
    )
    old_value = current.value if current else None
    if value is None:
        if current is not None:
            current.delete()
    elif current is None:
        TunableOverride.objects.create(name=name, task_type=task_type, caller=caller, value=value)
    else:
        current.value = value
        current.save(update_fields=["value", "updated_at"])
    change = TunableChange.objects.create(
        name=name,
        task_type=task_type,
        caller=caller,
        old_value=old_value,
        new_value=value,
        actor=actor if getattr(actor, "pk", None) else None,
        source=source,
        reason=reason,
    )
    # Gates and validators are part of every process's routing snapshot.
    ROUTING_CONFIG_VERSION.bump_on_commit()
    return change


@transaction.atomic
def validator_config_save(*, config: ValidatorConfig) -> None:
    config.full_clean()
    config.save()
    ROUTING_CONFIG_VERSION.bump_on_commit()


@transaction.atomic
def validator_config_delete(*, config: ValidatorConfig) -> None:
    config.delete()
    ROUTING_CONFIG_VERSION.bump_on_commit()
