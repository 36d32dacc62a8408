"""Learning cycles: runs that look at reviewers' verdicts and move the gate tunables, the
validators' weights and the task types' start tiers.

Every change goes through ``tunable_set``, ``validator_config_save`` or ``config_object_save``
(hot reload) and is kept as a ``LearningChange`` with its evidence, so it can be reverted.

One module per cycle, each with its pure arithmetic (unit tested without a database) above the
plan that reads the evidence and builds proposals:

- ``thresholds``: the gates' ``approve_at`` and ``review_below`` per task type (and caller);
- ``validators``: each validator's weight, from its AUC against the verdicts;
- ``assignments``: the start tier per task type (and agent), from the Wilson lower bound of
  reviewers' acceptance per tier.

What they share: ``plans`` (proposals and the plan a cycle returns), ``evidence`` (the queries of
review items and audit records), ``targets`` (reading and writing what a change moves), ``runs``
(the lock, recording a plan, the drift alert) and ``changes`` (an admin applying or reverting).
The details of each cycle are in its module's docstring (docs/adr/0009-learning-cycles.md).
"""

from __future__ import annotations

from collections.abc import Callable

from ..models import LearningRun
from .assignments import assignments_plan, wilson_lower
from .changes import learning_change_apply, learning_change_revert
from .plans import Plan, Proposal
from .runs import (
    LOCK_TIMEOUT_S,
    cycle_mode,
    plan_record,
    run_dry,
    run_failed,
    run_skipped,
    run_start,
)
from .thresholds import thresholds_plan
from .validators import auc, validators_plan

__all__ = [
    "LOCK_TIMEOUT_S",
    "Plan",
    "Proposal",
    "auc",
    "cycle_mode",
    "learning_change_apply",
    "learning_change_revert",
    "learning_cycle_run",
    "wilson_lower",
]

# learning_cycle_run finds the recorder under this name at call time, so a test can wrap it
# (tests/learning/test_cycles.py starts a second run from inside the first); _Plan is its
# older name for the plan.
_cycle = plan_record
_Plan = Plan

_PLANNERS: dict[str, Callable[[], Plan]] = {
    LearningRun.Kind.THRESHOLDS.value: thresholds_plan,
    LearningRun.Kind.VALIDATORS.value: validators_plan,
    LearningRun.Kind.ASSIGNMENTS.value: assignments_plan,
}


def learning_cycle_run(
    *, kind: str, dry_run: bool = False, mode: str | None = None, task_id: str = ""
) -> LearningRun:
    """Run one learning cycle of ``kind``; returns its run (skipped if one of that kind is running).

    ``mode="propose"`` records the changes without applying them; without a mode, the cycle's
    ``CycleSetting`` says (as beat runs it). ``dry_run`` writes nothing: the
    returned run is unsaved and its outcome lists the changes it would make. ``task_id`` is the
    Celery task's id: a run left "running" by the same task was cut off by a lost worker, and the
    redelivered task takes over.
    """
    if kind not in LearningRun.Kind.values:
        raise ValueError(f"unknown learning cycle {kind!r}; one of {', '.join(LearningRun.Kind)}")
    mode = mode or cycle_mode(kind)
    if mode not in LearningRun.Mode.values:
        raise ValueError(f"unknown mode {mode!r}; one of {', '.join(LearningRun.Mode)}")

    planner = _PLANNERS[kind]
    if dry_run:
        return run_dry(kind=kind, mode=mode, plan=planner())
    run = run_start(kind=kind, mode=mode, task_id=task_id)
    if run is None:
        return run_skipped(kind=kind, mode=mode, task_id=task_id)
    try:
        _cycle(run=run, plan=planner())
    except Exception as exc:
        run_failed(run=run, exc=exc)
        raise
    return run
