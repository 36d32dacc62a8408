"""Runs of a cycle: the lock (one run of a kind at a time), recording a plan's changes (and in
apply mode, making them), and the drift alert."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from scoring.services import tunable_set

from ..models import CycleSetting, LearningChange, LearningRun, tier_at
from .plans import Plan, Proposal, outcome_text
from .targets import caller_tier_set, route_tier_set, validator_weight_set

# The package's name, as before it was a package: log settings and tests name this logger.
logger = logging.getLogger("learning.cycles")

DRIFT_WINDOW = timedelta(hours=24)
MAX_DRIFT = 0.5
LOCK_TIMEOUT_S = 30 * 60


def cycle_mode(kind: str) -> str:
    """The mode an admin set for the cycle (apply when unset)."""
    mode = CycleSetting.objects.filter(kind=kind).values_list("mode", flat=True).first()
    return mode or LearningRun.Mode.APPLY


def run_start(*, kind: str, mode: str, task_id: str) -> LearningRun | None:
    """Create the running run that holds the lock of ``kind`` (None: another run holds it).

    The lock is the database's: at most one run of a kind is "running" (a partial unique
    constraint), so it holds across every process and host sharing the database, with or without
    Redis. A run still running after ``LOCK_TIMEOUT_S`` is taken for dead and failed.
    """
    now = timezone.now()
    running = LearningRun.objects.filter(kind=kind, status=LearningRun.Status.RUNNING)
    running.filter(started_at__lt=now - timedelta(seconds=LOCK_TIMEOUT_S)).update(
        status=LearningRun.Status.FAILED,
        outcome=f"abandoned: still running after {LOCK_TIMEOUT_S // 60} minutes",
        finished_at=now,
    )
    if task_id:
        running.filter(task_id=task_id).update(
            status=LearningRun.Status.FAILED,
            outcome="the worker running it was lost; the task was delivered again",
            finished_at=now,
        )
    try:
        with transaction.atomic():
            return LearningRun.objects.create(kind=kind, mode=mode, task_id=task_id)
    except IntegrityError:
        return None


def run_skipped(*, kind: str, mode: str, task_id: str) -> LearningRun:
    """Record a run that found another run of its kind holding the lock."""
    return LearningRun.objects.create(
        kind=kind,
        mode=mode,
        status=LearningRun.Status.SKIPPED,
        outcome=f"another {kind} cycle is running",
        finished_at=timezone.now(),
        task_id=task_id,
    )


def run_failed(*, run: LearningRun, exc: Exception) -> None:
    """Finish a run whose cycle raised (the caller raises again)."""
    run.status = LearningRun.Status.FAILED
    run.outcome = f"failed: {exc!r}"
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "outcome", "finished_at"])


def run_dry(*, kind: str, mode: str, plan: Plan) -> LearningRun:
    """An unsaved run saying what ``plan`` would change."""
    run = LearningRun(kind=kind, mode=mode, status=LearningRun.Status.SUCCEEDED)
    run.data_used = plan.data_used
    run.outcome = outcome_text("dry run, nothing written", plan, [])
    run.finished_at = timezone.now()
    return run


def plan_record(*, run: LearningRun, plan: Plan) -> None:
    """Record (and in apply mode, make) the plan's changes, and finish the run."""
    apply = run.mode == LearningRun.Mode.APPLY
    alerts: list[str] = []
    with transaction.atomic():
        now = timezone.now()
        for proposal in plan.proposals:
            change = LearningChange.objects.create(
                run=run,
                target_kind=proposal.target_kind,
                tunable=proposal.tunable,
                validator=proposal.validator,
                caller=proposal.caller,
                task_type=proposal.task_type,
                before=proposal.before,
                before_overridden=proposal.before_overridden,
                after=proposal.after,
                evidence=proposal.evidence,
                expected_effect=proposal.expected_effect,
                state=LearningChange.State.APPLIED if apply else LearningChange.State.PROPOSED,
                applied_at=now if apply else None,
            )
            if apply:
                alert = _proposal_make(proposal=proposal, run=run, change=change)
                if alert:
                    logger.error(alert)
                    alerts.append(alert)
        run.status = LearningRun.Status.SUCCEEDED
        run.data_used = plan.data_used
        run.outcome = outcome_text("applied" if apply else "proposed", plan, alerts)
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "data_used", "outcome", "finished_at"])


def _proposal_make(*, proposal: Proposal, run: LearningRun, change: LearningChange) -> str:
    """Make one recorded change; returns a drift alert line when a threshold moved too far."""
    if proposal.kind == LearningChange.TargetKind.TASK_ROUTE:
        route_tier_set(task_type=proposal.task_type, tier=tier_at(proposal.after), run_id=run.pk)
    elif proposal.kind == LearningChange.TargetKind.CALLER_ROUTE:
        caller_tier_set(
            caller=proposal.caller,
            task_type=proposal.task_type,
            tier=tier_at(proposal.after),
            run_id=run.pk,
        )
    elif proposal.validator:
        validator_weight_set(
            validator=proposal.validator,
            task_type=proposal.task_type,
            caller=proposal.caller,
            weight=proposal.after,
        )
    else:
        tunable_set(
            name=proposal.tunable,
            task_type=proposal.task_type,
            caller=proposal.caller,
            value=proposal.after,
            source=f"learning:{run.kind}",
            reason=f"learning run {run.pk}: {proposal.expected_effect}"[:300],
        )
        return drift_alert(change)
    return ""


def drift_alert(change: LearningChange) -> str:
    """An alert line when a threshold moved more than ``MAX_DRIFT`` within ``DRIFT_WINDOW``."""
    first = (
        LearningChange.objects.filter(
            tunable=change.tunable,
            task_type=change.task_type,
            caller=change.caller,
            state=LearningChange.State.APPLIED,
            applied_at__gte=timezone.now() - DRIFT_WINDOW,
        )
        .order_by("applied_at", "id")
        .first()
    )
    origin = first.before if first else change.before
    return drift_line(
        tunable=change.tunable, task_type=change.task_type, origin=origin, after=change.after
    )


def drift_line(*, tunable: str, task_type: str, origin: float, after: float) -> str:
    """The alert for a threshold now at ``after`` that was at ``origin`` when the drift window
    began; empty while it moved at most ``MAX_DRIFT``."""
    drift = abs(after - origin)
    if drift <= MAX_DRIFT + 1e-9:
        return ""
    return (
        f"ALERT threshold drift: {tunable}[{task_type}] moved {drift:.2f} "
        f"({origin:g} -> {after:g}) within {DRIFT_WINDOW.total_seconds() / 3600:g} h"
    )
