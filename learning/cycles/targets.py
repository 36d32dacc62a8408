"""What a change moves, read and written: a tunable, a validator's weight, a task route's start
tier, or a caller's start tier. The writes go through the services that audit and hot-reload."""

from __future__ import annotations

from providers.services import config_object_save
from routing.models import CallerPreference, TaskRoute
from scoring.models import TunableOverride, ValidatorConfig
from scoring.selectors import caller_gate_configs, gate_configs
from scoring.services import validator_config_save

from ..models import TIER_POSITIONS

DEFAULT_WEIGHT = 1.0


def tunable_effective(name: str, task_type: str, caller: str = "") -> tuple[float, bool]:
    """A tunable's effective value for a task type (and caller), and whether that exact pair
    has an override of its own."""
    default, per_task = gate_configs()
    config = per_task.get(task_type, default)
    if caller:
        per_caller = caller_gate_configs()
        config = per_caller.get((caller, task_type)) or per_caller.get((caller, "")) or config
    overridden = TunableOverride.objects.filter(
        name=name, task_type=task_type, caller=caller
    ).exists()
    return float(getattr(config, name)), overridden


def validator_effective(
    validator: str, task_type: str, caller: str = ""
) -> tuple[float, bool, ValidatorConfig]:
    """A validator's effective weight for a task type (and caller), whether that exact pair has
    a row of its own, and that row (or an unsaved one copied from the most specific row that
    applies, or the default)."""
    rows = {
        (row.task_type, row.caller): row
        for row in ValidatorConfig.objects.filter(
            validator=validator, task_type__in=("", task_type), caller__in=("", caller)
        )
    }
    own = rows.get((task_type, caller))
    if own is not None:
        return own.weight, True, own
    # Most specific first: the caller's for all task types, the task type's, everyone's.
    base = rows.get(("", caller)) if caller else None
    base = base or rows.get((task_type, "")) or rows.get(("", ""))
    row = ValidatorConfig(
        task_type=task_type,
        caller=caller,
        validator=validator,
        enabled=base.enabled if base else True,
        weight=base.weight if base else DEFAULT_WEIGHT,
        params=dict(base.params) if base else {},
    )
    return row.weight, False, row


def validator_weight_set(
    *, validator: str, task_type: str, weight: float, caller: str = ""
) -> None:
    """Write a validator's weight on the task type's (and caller's) row, creating it from the
    effective setting when missing."""
    existing = ValidatorConfig.objects.select_for_update().filter(
        validator=validator, task_type=task_type, caller=caller
    )
    row = existing.first()
    if row is None:
        _, _, row = validator_effective(validator, task_type, caller)
    row.weight = weight
    validator_config_save(config=row)


def route_effective(task_type: str) -> tuple[str, str, bool]:
    """A task type's start tier, its pinned model (empty when none), and whether it has a route
    of its own (otherwise the default route's, or the cheapest tier without one)."""
    routes = {
        r.task_type: r
        for r in TaskRoute.objects.filter(task_type__in=(task_type, TaskRoute.DEFAULT))
    }
    route = routes.get(task_type) or routes.get(TaskRoute.DEFAULT)
    own = task_type in routes
    if route is None:
        return next(iter(TIER_POSITIONS)), "", own
    return route.start_tier, route.pinned_model, own


def route_tier_set(*, task_type: str, tier: str, run_id: int | None) -> None:
    """Set a task type's start tier through ``config_object_save`` (every process reloads),
    creating its route when it has none."""
    route = TaskRoute.objects.select_for_update().filter(task_type=task_type).first()
    if route is None:
        route = TaskRoute(
            task_type=task_type, description=f"Created by learning run {run_id} (assignments)."
        )
    route.start_tier = tier
    config_object_save(obj=route)


def caller_effective(caller: str, task_type: str) -> tuple[str, str, bool]:
    """Where a caller's requests of a task type start: its tier, pinned model (empty when none),
    and whether the caller has a preference of its own for the task type."""
    preferences = {
        p.task_type: p
        for p in CallerPreference.objects.filter(caller=caller, task_type__in=(task_type, ""))
    }
    preference = preferences.get(task_type) or preferences.get("")
    own = task_type in preferences
    if preference is None:
        tier, pinned, _ = route_effective(task_type)
        return tier, pinned, own
    return preference.start_tier, preference.pinned_model, own


def caller_tier_set(*, caller: str, task_type: str, tier: str, run_id: int | None) -> None:
    """Set a caller's start tier for a task type, creating its preference when it has none."""
    preference = (
        CallerPreference.objects.select_for_update()
        .filter(caller=caller, task_type=task_type)
        .first()
    )
    if preference is None:
        preference = CallerPreference(caller=caller, task_type=task_type)
    preference.start_tier = tier
    config_object_save(obj=preference)
