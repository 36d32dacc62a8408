"""An admin's hand on a cycle's changes: apply a proposed one, revert an applied one."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from providers.services import config_object_delete, config_object_save
from routing.models import CallerPreference, TaskRoute
from scoring.models import ValidatorConfig
from scoring.services import tunable_set, validator_config_delete

from ..models import LearningChange, tier_at
from .targets import (
    caller_effective,
    caller_tier_set,
    route_effective,
    route_tier_set,
    tunable_effective,
    validator_effective,
    validator_weight_set,
)


@transaction.atomic
def learning_change_apply(*, change: LearningChange, actor: Any) -> LearningChange:
    """Apply a proposed change, if the tunable still has the value the proposal was made on."""
    change = LearningChange.objects.select_for_update().get(pk=change.pk)
    if change.state != LearningChange.State.PROPOSED:
        raise ValueError(f"change {change.pk} is {change.state}, not proposed")
    _still_current(change)
    _change_make(change, actor)
    change.state = LearningChange.State.APPLIED
    change.applied_at = timezone.now()
    change.save(update_fields=["state", "applied_at"])
    return change


@transaction.atomic
def learning_change_revert(*, change: LearningChange, actor: Any) -> LearningChange:
    """Put the tunable or validator weight back to where the change found it (removing the
    override or validator row the change created) and mark the change reverted; a later applied
    change of the same target goes first."""
    change = LearningChange.objects.select_for_update().get(pk=change.pk)
    if change.state != LearningChange.State.APPLIED:
        raise ValueError(f"change {change.pk} is {change.state}, not applied")
    later = LearningChange.objects.filter(
        target_kind=change.target_kind,
        tunable=change.tunable,
        validator=change.validator,
        caller=change.caller,
        task_type=change.task_type,
        state=LearningChange.State.APPLIED,
        applied_at__gt=change.applied_at,
    ).first()
    if later is not None:
        raise ValueError(f"revert the later change {later.pk} of this {change.target_kind} first")
    _change_undo(change, actor)
    change.state = LearningChange.State.REVERTED
    change.reverted_at = timezone.now()
    change.save(update_fields=["state", "reverted_at"])
    return change


def _still_current(change: LearningChange) -> None:
    """Raise ValueError when the target no longer has the value the proposal was made on."""
    kind = change.target_kind
    if kind in (LearningChange.TargetKind.TASK_ROUTE, LearningChange.TargetKind.CALLER_ROUTE):
        if kind == LearningChange.TargetKind.TASK_ROUTE:
            tier, pinned, _ = route_effective(change.task_type)
            target = f"start tier[{change.task_type}]"
        else:
            tier, pinned, _ = caller_effective(change.caller, change.task_type)
            target = f"start tier of {change.caller}[{change.task_type}]"
        if pinned or tier != tier_at(change.before):
            now = f"pinned to {pinned}" if pinned else tier
            raise ValueError(
                f"{target} is {now} now, not {tier_at(change.before)}: the proposal is stale"
            )
        return
    if kind == LearningChange.TargetKind.VALIDATOR_WEIGHT:
        current, _, _ = validator_effective(change.validator, change.task_type, change.caller)
        target = f"{change.target}[{change.task_type}]"
    else:
        current, _ = tunable_effective(change.tunable, change.task_type, change.caller)
        target = f"{change.tunable}[{change.task_type}]"
    if abs(current - change.before) > 1e-9:
        raise ValueError(
            f"{target} is {current:g} now, not {change.before:g}: the proposal is stale"
        )


def _change_make(change: LearningChange, actor: Any) -> None:
    """Give the change's target the proposed value (an admin applying a proposal)."""
    kind = change.target_kind
    if kind == LearningChange.TargetKind.TASK_ROUTE:
        route_tier_set(task_type=change.task_type, tier=tier_at(change.after), run_id=change.run_id)
    elif kind == LearningChange.TargetKind.CALLER_ROUTE:
        caller_tier_set(
            caller=change.caller,
            task_type=change.task_type,
            tier=tier_at(change.after),
            run_id=change.run_id,
        )
    elif kind == LearningChange.TargetKind.VALIDATOR_WEIGHT:
        validator_weight_set(
            validator=change.validator,
            task_type=change.task_type,
            caller=change.caller,
            weight=change.after,
        )
    else:
        tunable_set(
            name=change.tunable,
            task_type=change.task_type,
            caller=change.caller,
            value=change.after,
            actor=actor,
            source=f"learning:{change.run.kind}",
            reason=f"proposed by learning run {change.run_id}: {change.expected_effect}"[:300],
        )


def _change_undo(change: LearningChange, actor: Any) -> None:
    """Put the change's target back as the change found it."""
    kind = change.target_kind
    if kind in (LearningChange.TargetKind.CALLER_ROUTE, LearningChange.TargetKind.TASK_ROUTE):
        _start_tier_undo(change)
    elif kind == LearningChange.TargetKind.VALIDATOR_WEIGHT:
        if change.before_overridden:
            validator_weight_set(
                validator=change.validator,
                task_type=change.task_type,
                caller=change.caller,
                weight=change.before,
            )
        else:
            row = ValidatorConfig.objects.filter(
                task_type=change.task_type, caller=change.caller, validator=change.validator
            ).first()
            if row is not None:
                validator_config_delete(config=row)
    else:
        tunable_set(
            name=change.tunable,
            task_type=change.task_type,
            caller=change.caller,
            value=change.before if change.before_overridden else None,
            actor=actor,
            source="revert",
            reason=f"revert of learning change {change.pk} (run {change.run_id})",
        )


def _start_tier_undo(change: LearningChange) -> None:
    """Back to the start tier before the change, or without the route (or caller preference)
    the change created."""
    holder: TaskRoute | CallerPreference | None
    if change.target_kind == LearningChange.TargetKind.CALLER_ROUTE:
        holder = CallerPreference.objects.filter(
            caller=change.caller, task_type=change.task_type
        ).first()
    else:
        holder = TaskRoute.objects.filter(task_type=change.task_type).first()
    if holder is not None and not change.before_overridden:
        config_object_delete(obj=holder)
    elif holder is not None:
        holder.start_tier = tier_at(change.before)
        config_object_save(obj=holder)
