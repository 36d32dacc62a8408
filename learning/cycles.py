"""Learning cycles: runs that look at reviewers' verdicts and move the gate tunables, the
validators' weights and the task types' start tiers.

Every change goes through ``tunable_set``, ``validator_config_save`` or ``config_object_save``
(hot reload) and is kept as a ``LearningChange`` with its evidence, so it can be reverted.

The thresholds cycle, per task type with at least ``MIN_SAMPLE`` decided review items in the
last ``WINDOW``:

- "accepted" means the reviewer approved the answer as it was. A corrected answer counts as not
  accepted: the agent got a wrong answer, which is what an auto-approve threshold must prevent.
- ``approve_at`` goes up when fewer than ``TARGET_ACCEPTANCE`` of the reviewed items scoring at
  least ``approve_at`` were accepted (to the smallest step that would have reached it), and down
  when that band is comfortably clean (``TARGET_ACCEPTANCE + COMFORT_MARGIN``) while the review
  load is over ``TARGET_REVIEW_LOAD`` (to the largest step that keeps the band on target).
- ``review_below`` goes down when the review load is over target and the reviewed items just below
  it were accepted on target (reviews there are wasted), and up when the load is under target and
  the sampled items just above it fall short (as far as the load stays on target).
- The review load is the share of answered requests (audit records) scoring below
  ``review_below``; the review queue itself over-represents low scores, so it cannot say.
- One cycle moves a threshold by at most ``MAX_STEP``; 0 <= review_below < approve_at <= 10.
  Task types without a name are left alone: their thresholds are the global ones.

The validators cycle, per task type with at least ``MIN_SAMPLE`` decided review items in the last
``WINDOW``, for every validator in the items' breakdowns (counted or shadow, weight 0; results
"not counted" because the validator failed are left out):

- how well its score predicts the verdict is its AUC: the chance that an accepted answer scored
  higher than a not accepted one (ties count half; the Mann-Whitney U over the two groups'
  sizes). 1 separates them perfectly, 0.5 is chance. It needs ``MIN_CLASS`` answers on each side.
- AUC >= ``AUC_GOOD``: the weight is multiplied by ``STEP_UP`` (to at most ``MAX_WEIGHT``; a shadow
  validator comes back at ``MIN_WEIGHT``). AUC <= ``AUC_CHANCE``: by ``STEP_DOWN``, and to 0
  (shadow: still run and measured, not counted) once under ``MIN_WEIGHT``.
- The weight is written on the task type's ``ValidatorConfig`` row, created from the effective
  setting (the all-task-types row, or the default) when there is none; a revert deletes a row the
  change created. Every validator's AUC is in the run's ``data_used["agreement"]``.

The assignments cycle, per task type (not the ``default`` route's own) with reviewed answers in
the last ``WINDOW``, per tier (the tier that answered, copied on the review item):

- acceptance = reviewed items approved as they were / decided items, from reviews only: an audit
  record's ``approved`` status is the confidence gate's own verdict, so counting it would grade the
  gate by itself. Its 95 % Wilson lower bound is what must reach ``QUALITY_TARGET``, on at least
  ``TIER_MIN_SAMPLE`` decided items (so a perfect record needs about 35 reviews to qualify).
- mean cost and latency per request come from the answered audit records of that tier.
- the cheapest tier meeting the target, if it is not the current start tier (the task type's
  route, else the default route's), moves the start tier one tier toward it, through
  ``config_object_save``; a task type without a route gets one (a revert deletes it). Routes
  pinning a model are left alone. Every tier's estimates are in ``data_used["estimates"]``.
- Not done yet: exploration traffic (sending a share of requests to a tier without enough reviews),
  so a tier that is never used is never measured.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Avg, Count
from django.utils import timezone

from providers.services import config_object_delete, config_object_save
from reviews.models import ReviewItem
from routing.models import AuditRecord, CallerPreference, TaskRoute
from scoring.gates import GateConfig
from scoring.models import TunableOverride, ValidatorConfig
from scoring.selectors import caller_gate_configs, gate_configs
from scoring.services import tunable_set, validator_config_delete, validator_config_save
from scoring.validators.registry import VALIDATORS

from .models import TIER_POSITIONS, CycleSetting, LearningChange, LearningRun, tier_at
from .replay import replay_start_tier, replay_thresholds, replay_validator_weight

logger = logging.getLogger(__name__)

MIN_SAMPLE = 30
WINDOW = timedelta(days=14)
MIN_BAND_SAMPLE = 10
TARGET_ACCEPTANCE = 0.95
COMFORT_MARGIN = 0.03
TARGET_REVIEW_LOAD = 0.20
MAX_STEP = 0.5
GRID = 0.1
DRIFT_WINDOW = timedelta(hours=24)
MAX_DRIFT = 0.5
LOCK_TIMEOUT_S = 30 * 60

MIN_CLASS = 5
MIN_UNTIED = 0.2  # below this share of pairs scored differently, an AUC carries no evidence
AUC_GOOD = 0.75
AUC_CHANCE = 0.55
STEP_UP = 1.25
STEP_DOWN = 0.8
MIN_WEIGHT = 0.2
MAX_WEIGHT = 3.0
DEFAULT_WEIGHT = 1.0

QUALITY_TARGET = 0.9
TIER_MIN_SAMPLE = 20
WILSON_Z = 1.96  # 95 %

THRESHOLDS_SOURCE = "learning:thresholds"

_STEPS = tuple(round(GRID * i, 1) for i in range(1, round(MAX_STEP / GRID) + 1))


@dataclass(frozen=True, slots=True)
class Proposal:
    """A change a cycle wants, before it is recorded: of a tunable, or of a validator's weight
    (``validator`` set, ``tunable`` empty)."""

    tunable: str
    task_type: str
    before: float
    before_overridden: bool
    after: float
    evidence: dict[str, Any]
    expected_effect: str
    validator: str = ""
    kind: str = ""  # empty: a tunable or (``validator`` set) a validator weight
    caller: str = ""  # for a caller's start tier

    @property
    def target_kind(self) -> str:
        if self.kind:
            return self.kind
        if self.validator:
            return LearningChange.TargetKind.VALIDATOR_WEIGHT
        return LearningChange.TargetKind.TUNABLE

    def line(self) -> str:
        change = LearningChange(
            target_kind=self.target_kind,
            tunable=self.tunable,
            validator=self.validator,
            caller=self.caller,
        )
        before, after = change.value_label(self.before), change.value_label(self.after)
        where = f"{self.task_type}/{self.caller}" if self.caller else self.task_type
        return f"{change.target}[{where}] {before} -> {after}: {self.expected_effect}"


@dataclass(slots=True)
class _Plan:
    proposals: list[Proposal] = field(default_factory=list)
    data_used: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# --- entry points -------------------------------------------------------------------------------


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
        plan = planner()
        run = LearningRun(kind=kind, mode=mode, status=LearningRun.Status.SUCCEEDED)
        run.data_used = plan.data_used
        run.outcome = _outcome("dry run, nothing written", plan, [])
        run.finished_at = timezone.now()
        return run

    started = _run_start(kind=kind, mode=mode, task_id=task_id)
    if started is None:
        return LearningRun.objects.create(
            kind=kind,
            mode=mode,
            status=LearningRun.Status.SKIPPED,
            outcome=f"another {kind} cycle is running",
            finished_at=timezone.now(),
            task_id=task_id,
        )
    run = started
    try:
        _cycle(run=run, plan=planner())
    except Exception as exc:
        run.status = LearningRun.Status.FAILED
        run.outcome = f"failed: {exc!r}"
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "outcome", "finished_at"])
        raise
    return run


def cycle_mode(kind: str) -> str:
    """The mode an admin set for the cycle (apply when unset)."""
    mode = CycleSetting.objects.filter(kind=kind).values_list("mode", flat=True).first()
    return mode or LearningRun.Mode.APPLY


@transaction.atomic
def learning_change_apply(*, change: LearningChange, actor: Any) -> LearningChange:
    """Apply a proposed change, if the tunable still has the value the proposal was made on."""
    change = LearningChange.objects.select_for_update().get(pk=change.pk)
    if change.state != LearningChange.State.PROPOSED:
        raise ValueError(f"change {change.pk} is {change.state}, not proposed")
    if change.target_kind == LearningChange.TargetKind.TASK_ROUTE:
        tier, pinned, _ = _route_effective(change.task_type)
        if pinned or tier != tier_at(change.before):
            now = f"pinned to {pinned}" if pinned else tier
            raise ValueError(
                f"start tier[{change.task_type}] is {now} now, "
                f"not {tier_at(change.before)}: the proposal is stale"
            )
        _route_tier_set(
            task_type=change.task_type, tier=tier_at(change.after), run_id=change.run_id
        )
    elif change.target_kind == LearningChange.TargetKind.CALLER_ROUTE:
        tier, pinned, _ = _caller_effective(change.caller, change.task_type)
        if pinned or tier != tier_at(change.before):
            now = f"pinned to {pinned}" if pinned else tier
            raise ValueError(
                f"start tier of {change.caller}[{change.task_type}] is {now} now, "
                f"not {tier_at(change.before)}: the proposal is stale"
            )
        _caller_tier_set(
            caller=change.caller,
            task_type=change.task_type,
            tier=tier_at(change.after),
            run_id=change.run_id,
        )
    elif change.target_kind == LearningChange.TargetKind.VALIDATOR_WEIGHT:
        current_weight, _, _ = _validator_effective(
            change.validator, change.task_type, change.caller
        )
        if abs(current_weight - change.before) > 1e-9:
            raise ValueError(
                f"{change.target}[{change.task_type}] is {current_weight:g} now, "
                f"not {change.before:g}: the proposal is stale"
            )
        _validator_weight_set(
            validator=change.validator,
            task_type=change.task_type,
            caller=change.caller,
            weight=change.after,
        )
    else:
        current, _ = _effective(change.tunable, change.task_type, change.caller)
        if abs(current - change.before) > 1e-9:
            raise ValueError(
                f"{change.tunable}[{change.task_type}] is {current:g} now, "
                f"not {change.before:g}: the proposal is stale"
            )
        tunable_set(
            name=change.tunable,
            task_type=change.task_type,
            caller=change.caller,
            value=change.after,
            actor=actor,
            source=f"learning:{change.run.kind}",
            reason=f"proposed by learning run {change.run_id}: {change.expected_effect}"[:300],
        )
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
    if change.target_kind == LearningChange.TargetKind.CALLER_ROUTE:
        preference = CallerPreference.objects.filter(
            caller=change.caller, task_type=change.task_type
        ).first()
        if preference is not None and not change.before_overridden:
            config_object_delete(obj=preference)
        elif preference is not None:
            preference.start_tier = tier_at(change.before)
            config_object_save(obj=preference)
    elif change.target_kind == LearningChange.TargetKind.TASK_ROUTE:
        route = TaskRoute.objects.filter(task_type=change.task_type).first()
        if route is not None and not change.before_overridden:
            config_object_delete(obj=route)
        elif route is not None:
            route.start_tier = tier_at(change.before)
            config_object_save(obj=route)
    elif change.target_kind == LearningChange.TargetKind.VALIDATOR_WEIGHT:
        if change.before_overridden:
            _validator_weight_set(
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
    change.state = LearningChange.State.REVERTED
    change.reverted_at = timezone.now()
    change.save(update_fields=["state", "reverted_at"])
    return change


# --- the lock -----------------------------------------------------------------------------------


def _run_start(*, kind: str, mode: str, task_id: str) -> LearningRun | None:
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


# --- the thresholds cycle -------------------------------------------------------------------------


def _cycle(*, run: LearningRun, plan: _Plan) -> None:
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
            if apply and proposal.kind == LearningChange.TargetKind.TASK_ROUTE:
                _route_tier_set(
                    task_type=proposal.task_type, tier=tier_at(proposal.after), run_id=run.pk
                )
            elif apply and proposal.kind == LearningChange.TargetKind.CALLER_ROUTE:
                _caller_tier_set(
                    caller=proposal.caller,
                    task_type=proposal.task_type,
                    tier=tier_at(proposal.after),
                    run_id=run.pk,
                )
            elif apply and proposal.validator:
                _validator_weight_set(
                    validator=proposal.validator,
                    task_type=proposal.task_type,
                    caller=proposal.caller,
                    weight=proposal.after,
                )
            elif apply:
                tunable_set(
                    name=proposal.tunable,
                    task_type=proposal.task_type,
                    caller=proposal.caller,
                    value=proposal.after,
                    source=f"learning:{run.kind}",
                    reason=f"learning run {run.pk}: {proposal.expected_effect}"[:300],
                )
                alert = _drift_alert(change)
                if alert:
                    logger.error(alert)
                    alerts.append(alert)
        run.status = LearningRun.Status.SUCCEEDED
        run.data_used = plan.data_used
        run.outcome = _outcome("applied" if apply else "proposed", plan, alerts)
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "data_used", "outcome", "finished_at"])


def _outcome(verb: str, plan: _Plan, alerts: Sequence[str]) -> str:
    lines = [*alerts]
    if plan.proposals:
        lines.append(f"{len(plan.proposals)} change(s) {verb}:")
        lines += [f"  {p.line()}" for p in plan.proposals]
    else:
        lines.append(f"no change ({verb})")
    lines += plan.notes
    return "\n".join(lines)


def _drift_alert(change: LearningChange) -> str:
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
    drift = abs(change.after - origin)
    if drift <= MAX_DRIFT + 1e-9:
        return ""
    return (
        f"ALERT threshold drift: {change.tunable}[{change.task_type}] moved {drift:.2f} "
        f"({origin:g} -> {change.after:g}) within {DRIFT_WINDOW.total_seconds() / 3600:g} h"
    )


def _effective(name: str, task_type: str, caller: str = "") -> tuple[float, bool]:
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


def _rate(verdicts: Sequence[tuple[float, bool]]) -> float | None:
    return sum(ok for _, ok in verdicts) / len(verdicts) if verdicts else None


def _thresholds_plan() -> _Plan:
    """What the thresholds cycle would change, from the last ``WINDOW`` of review verdicts."""
    since = timezone.now() - WINDOW
    decided = (
        ReviewItem.objects.filter(decided_at__gte=since, confidence__isnull=False)
        .exclude(status=ReviewItem.Status.PENDING)
        .exclude(task_type="")
        .values_list("task_type", "audit_record__agent", "confidence", "status")
    )
    by_task: dict[str, list[tuple[float, bool]]] = {}
    by_caller: dict[tuple[str, str], list[tuple[float, bool]]] = {}
    for task_type, agent, confidence, status in decided:
        if confidence is None:  # excluded by the query; mypy cannot know
            continue
        verdict = (float(confidence), status == ReviewItem.Status.APPROVED)
        by_task.setdefault(task_type, []).append(verdict)
        if agent:
            by_caller.setdefault((agent, task_type), []).append(verdict)
    default, per_task = gate_configs()
    per_caller = caller_gate_configs()
    overrides = set(
        TunableOverride.objects.filter(name__in=("approve_at", "review_below")).values_list(
            "name", "task_type", "caller"
        )
    )
    plan = _Plan()
    plan.data_used = {
        "window_days": WINDOW.days,
        "min_sample": MIN_SAMPLE,
        "reviewed": {t: len(v) for t, v in sorted(by_task.items())},
    }
    for task_type, verdicts in sorted(by_task.items()):
        if len(verdicts) < MIN_SAMPLE:
            plan.notes.append(
                f"{task_type}: {len(verdicts)} reviewed items, fewer than {MIN_SAMPLE}"
            )
            continue
        plan.proposals += _task_proposals(
            task_type=task_type,
            verdicts=verdicts,
            config=per_task.get(task_type, default),
            overrides=overrides,
            since=since,
            notes=plan.notes,
        )
    plan.data_used["reviewed_per_caller"] = {
        f"{caller}/{task}": len(v) for (caller, task), v in sorted(by_caller.items())
    }
    task_after = {(p.tunable, p.task_type): p.after for p in plan.proposals}
    for (caller, task_type), verdicts in sorted(by_caller.items()):
        if len(verdicts) < MIN_SAMPLE or len(verdicts) == len(by_task[task_type]):
            continue  # too few of its own, or the task type's reviews are all this caller's
        config = (
            per_caller.get((caller, task_type))
            or per_caller.get((caller, ""))
            or per_task.get(task_type, default)
        )
        task_config = per_task.get(task_type, default)
        for proposal in _task_proposals(
            task_type=task_type,
            verdicts=verdicts,
            config=config,
            overrides=overrides,
            since=since,
            notes=plan.notes,
            caller=caller,
        ):
            # Only where this caller's own reviews lead elsewhere than the task type's.
            heading = task_after.get(
                (proposal.tunable, task_type), getattr(task_config, proposal.tunable)
            )
            if proposal.before_overridden or abs(proposal.after - heading) > 1e-9:
                plan.proposals.append(proposal)
    return plan


def _task_proposals(
    *,
    task_type: str,
    verdicts: list[tuple[float, bool]],
    config: GateConfig,
    overrides: set[tuple[str, str, str]],
    since: Any,
    notes: list[str],
    caller: str = "",
) -> list[Proposal]:
    """Threshold proposals for a task type, or for one caller's requests of it."""
    approve_at, review_below = config.approve_at, config.review_below
    load_at = _ReviewLoad(task_type=task_type, since=since, agent=caller)
    load = load_at(review_below)
    band = [v for v in verdicts if v[0] >= approve_at]
    band_rate = _rate(band)
    base = {
        "reviewed": len(verdicts),
        "accepted": sum(ok for _, ok in verdicts),
        "approve_at": approve_at,
        "review_below": review_below,
        "approved_band": len(band),
        "approved_band_acceptance": band_rate,
        "review_load": load,
        "answered": load_at.total,
    }

    new_approve = approve_at
    if band_rate is not None and len(band) >= MIN_BAND_SAMPLE:
        if band_rate < TARGET_ACCEPTANCE and not _better_above(verdicts, approve_at, band_rate):
            # Reviewers reject answers as often at every higher score: the validators cannot
            # tell these answers apart, and a higher threshold would only send more to review.
            notes.append(
                f"{task_type}{'/' + caller if caller else ''}: approved-band acceptance "
                f"{_pct(band_rate)} is under target, but no higher score does better; "
                "approve_at left as it is"
            )
        elif band_rate < TARGET_ACCEPTANCE:
            new_approve = min(10.0, round(approve_at + MAX_STEP, 1))
            for step in _STEPS:
                candidate = min(10.0, round(approve_at + step, 1))
                rate = _rate([v for v in verdicts if v[0] >= candidate])
                if rate is not None and rate >= TARGET_ACCEPTANCE:
                    new_approve = candidate
                    break
        elif (
            band_rate >= TARGET_ACCEPTANCE + COMFORT_MARGIN
            and load is not None
            and load > TARGET_REVIEW_LOAD
        ):
            for step in reversed(_STEPS):
                candidate = round(approve_at - step, 1)
                rate = _rate([v for v in verdicts if v[0] >= candidate])
                if candidate > review_below and rate is not None and rate >= TARGET_ACCEPTANCE:
                    new_approve = candidate
                    break

    new_review = review_below
    if load is not None and load > TARGET_REVIEW_LOAD:
        for step in reversed(_STEPS):
            candidate = max(0.0, round(review_below - step, 1))
            below = [v for v in verdicts if candidate <= v[0] < review_below]
            rate = _rate(below)
            if len(below) >= MIN_BAND_SAMPLE and rate is not None and rate >= TARGET_ACCEPTANCE:
                new_review = candidate
                break
    elif load is not None:
        above = [v for v in verdicts if review_below <= v[0] < review_below + MAX_STEP]
        rate = _rate(above)
        if len(above) >= MIN_BAND_SAMPLE and rate is not None and rate < TARGET_ACCEPTANCE:
            for step in reversed(_STEPS):
                candidate = min(10.0, round(review_below + step, 1))
                new_load = load_at(candidate)
                if new_load is not None and new_load <= TARGET_REVIEW_LOAD:
                    new_review = candidate
                    break
    # Keep the warning band between the two.
    new_review = max(0.0, min(new_review, round(new_approve - GRID, 1)))

    proposals = []
    if abs(new_approve - approve_at) > 1e-9:
        rate = _rate([v for v in verdicts if v[0] >= new_approve])
        replay = replay_thresholds(
            task_type=task_type,
            since=since,
            gate=config,
            review_below=review_below,
            approve_at=new_approve,
            agent=caller,
        )
        proposals.append(
            Proposal(
                tunable="approve_at",
                task_type=task_type,
                caller=caller,
                before=approve_at,
                before_overridden=("approve_at", task_type, caller) in overrides,
                after=new_approve,
                evidence={
                    **base,
                    "approved_band_acceptance_after": rate,
                    "replay": replay.as_dict(),
                },
                expected_effect=(
                    f"approved-band acceptance {_pct(band_rate)} -> {_pct(rate)} "
                    f"on {len(band)} reviewed items (target {_pct(TARGET_ACCEPTANCE)}); "
                    f"{replay.summary()}"
                ),
            )
        )
    if abs(new_review - review_below) > 1e-9:
        new_load = load_at(new_review)
        replay = replay_thresholds(
            task_type=task_type,
            since=since,
            gate=config,
            review_below=new_review,
            approve_at=approve_at,
            agent=caller,
        )
        proposals.append(
            Proposal(
                tunable="review_below",
                task_type=task_type,
                caller=caller,
                before=review_below,
                before_overridden=("review_below", task_type, caller) in overrides,
                after=new_review,
                evidence={**base, "review_load_after": new_load, "replay": replay.as_dict()},
                expected_effect=(
                    f"review load {_pct(load)} -> {_pct(new_load)} of {load_at.total} answers "
                    f"(target {_pct(TARGET_REVIEW_LOAD)}); {replay.summary()}"
                ),
            )
        )
    return proposals


def _better_above(verdicts: list[tuple[float, bool]], approve_at: float, band_rate: float) -> bool:
    """Whether some higher threshold (with ``MIN_BAND_SAMPLE`` reviewed items above it) has a
    clearly better acceptance than the current approved band: only then can raising help."""
    for tenth in range(round(approve_at * 10) + 1, 101):
        above = [ok for score, ok in verdicts if score >= tenth / 10]
        if len(above) < MIN_BAND_SAMPLE:
            break
        if sum(above) / len(above) >= band_rate + COMFORT_MARGIN:
            return True
    return False


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.0%}"


class _ReviewLoad:
    """Share of a task type's answered requests (in the window) scoring below a threshold."""

    def __init__(self, *, task_type: str, since: Any, agent: str = "") -> None:
        rows = AuditRecord.objects.filter(task_type=task_type)
        if agent:
            rows = rows.filter(agent=agent)
        self._rows = rows.filter(
            created_at__gte=since,
            confidence__isnull=False,
            status__in=(
                AuditRecord.Status.APPROVED,
                AuditRecord.Status.WARNING,
                AuditRecord.Status.PENDING_REVIEW,
            ),
        )
        self.total = self._rows.count()
        self._cache: dict[float, float | None] = {}

    def __call__(self, threshold: float) -> float | None:
        if not self.total:
            return None
        if threshold not in self._cache:
            below = self._rows.filter(confidence__lt=threshold).count()
            self._cache[threshold] = below / self.total
        return self._cache[threshold]


# --- the validators cycle -------------------------------------------------------------------------


def auc(accepted: Sequence[float], rejected: Sequence[float]) -> float | None:
    """The chance that an accepted answer scored higher than a not accepted one (ties half):
    Mann-Whitney U / (n_accepted * n_rejected). None when a side is empty."""
    if not accepted or not rejected:
        return None
    wins = 0.0
    for a in accepted:
        for r in rejected:
            wins += 1.0 if a > r else 0.5 if a == r else 0.0
    return wins / (len(accepted) * len(rejected))


def _untied_share(accepted: Sequence[float], rejected: Sequence[float]) -> float:
    """The share of (accepted, rejected) pairs the validator scored differently."""
    if not accepted or not rejected:
        return 0.0
    untied = sum(1 for a in accepted for r in rejected if a != r)
    return untied / (len(accepted) * len(rejected))


def _validator_effective(
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


def _validator_weight_set(
    *, validator: str, task_type: str, weight: float, caller: str = ""
) -> None:
    """Write a validator's weight on the task type's (and caller's) row, creating it from the
    effective setting when missing."""
    existing = ValidatorConfig.objects.select_for_update().filter(
        validator=validator, task_type=task_type, caller=caller
    )
    row = existing.first()
    if row is None:
        _, _, row = _validator_effective(validator, task_type, caller)
    row.weight = weight
    validator_config_save(config=row)


def _next_weight(weight: float, score: float) -> float:
    if score >= AUC_GOOD:
        return MIN_WEIGHT if weight <= 0 else round(min(MAX_WEIGHT, weight * STEP_UP), 3)
    if score <= AUC_CHANCE and weight > 0:
        lowered = round(weight * STEP_DOWN, 3)
        return 0.0 if lowered < MIN_WEIGHT else lowered
    return weight


def _validators_plan() -> _Plan:
    """What the validators cycle would change, from the last ``WINDOW`` of review verdicts: per
    task type, and per caller of it where the caller's own reviews are enough."""
    since = timezone.now() - WINDOW
    decided = (
        ReviewItem.objects.filter(decided_at__gte=since)
        .exclude(status=ReviewItem.Status.PENDING)
        .exclude(task_type="")
        .values_list("task_type", "audit_record__agent", "status", "audit_record__validation")
    )
    # (task type, caller or "") -> validator -> (scores of accepted answers, of the others)
    by_key: dict[tuple[str, str], dict[str, tuple[list[float], list[float]]]] = {}
    reviewed: dict[tuple[str, str], int] = {}
    for task_type, agent, status, validation in decided:
        accepted = status == ReviewItem.Status.APPROVED
        for key in ((task_type, ""), (task_type, agent)) if agent else ((task_type, ""),):
            reviewed[key] = reviewed.get(key, 0) + 1
            scores = by_key.setdefault(key, {})
            for name, score in _counted_scores(validation):
                scores.setdefault(name, ([], []))[0 if accepted else 1].append(score)
    default, per_task = gate_configs()
    per_caller = caller_gate_configs()
    plan = _Plan()
    agreement: dict[str, dict[str, dict[str, Any]]] = {}
    plan.data_used = {
        "window_days": WINDOW.days,
        "min_sample": MIN_SAMPLE,
        "reviewed": {t: n for (t, c), n in sorted(reviewed.items()) if not c},
        "reviewed_per_caller": {f"{c}/{t}": n for (t, c), n in sorted(reviewed.items()) if c},
        "agreement": agreement,
    }
    heading: dict[tuple[str, str], float] = {}  # (task type, validator) -> its weight next
    for (task_type, caller), scores in sorted(by_key.items(), key=lambda item: item[0][1]):
        count = reviewed[(task_type, caller)]
        if caller and (count < MIN_SAMPLE or count == reviewed[(task_type, "")]):
            continue  # too few of its own, or the task type's reviews are all this caller's
        if count < MIN_SAMPLE:
            plan.notes.append(f"{task_type}: {count} reviewed items, fewer than {MIN_SAMPLE}")
            continue
        gate = per_task.get(task_type, default)
        if caller:
            gate = per_caller.get((caller, task_type)) or per_caller.get((caller, "")) or gate
        label = f"{task_type}/{caller}" if caller else task_type
        agreement[label] = {}
        for proposal in _weight_proposals(
            task_type, caller, scores, since, gate, agreement[label], plan.notes
        ):
            if not caller:
                heading[(task_type, proposal.validator)] = proposal.after
            elif (
                not proposal.before_overridden
                and abs(
                    proposal.after
                    - heading.get((task_type, proposal.validator), proposal.evidence["weight"])
                )
                < 1e-9
            ):
                continue  # the task type's own change takes this caller there anyway
            plan.proposals.append(proposal)
    return plan


def _counted_scores(validation: Any) -> list[tuple[str, float]]:
    """(validator, score) of a stored breakdown, leaving out results that were not counted
    because the validator failed."""
    found = []
    for result in validation if isinstance(validation, list) else []:
        if not isinstance(result, dict) or not isinstance(result.get("name"), str):
            continue
        score = result.get("score")
        if not isinstance(score, int | float) or str(result.get("reason", "")).startswith(
            "not counted"
        ):
            continue
        found.append((result["name"], float(score)))
    return found


def _weight_proposals(
    task_type: str,
    caller: str,
    scores: dict[str, tuple[list[float], list[float]]],
    since: Any,
    gate: GateConfig,
    agreement: dict[str, dict[str, Any]],
    notes: list[str],
) -> list[Proposal]:
    """Weight changes of the validators of one task type (or one caller's requests of it)."""
    label = f"{task_type}/{caller}" if caller else task_type
    proposals = []
    for validator, (ok, not_ok) in sorted(scores.items()):
        score = auc(ok, not_ok)
        weight, own_row, _ = _validator_effective(validator, task_type, caller)
        evidence: dict[str, Any] = {
            "n": len(ok) + len(not_ok),
            "accepted": len(ok),
            "not_accepted": len(not_ok),
            "auc": None if score is None else round(score, 4),
            "untied_pairs": round(_untied_share(ok, not_ok), 4),
            "weight": weight,
        }
        agreement[validator] = evidence
        summary = (
            f"AUC {'n/a' if score is None else f'{score:.2f}'} on {evidence['n']} reviewed "
            f"({len(ok)} accepted, {len(not_ok)} not)"
        )
        notes.append(f"{label}/{validator}: {summary}, weight {weight:g}")
        if score is None or min(len(ok), len(not_ok)) < MIN_CLASS:
            continue
        if validator not in VALIDATORS:  # no longer registered: no config to move
            continue
        untied = evidence["untied_pairs"]
        if untied < MIN_UNTIED:
            # It scored accepted and rejected answers alike (e.g. passed them all): an AUC made
            # of ties says nothing about whether it works, so its weight stays.
            notes.append(
                f"{label}/{validator}: {untied:.0%} of accepted/rejected pairs scored "
                "differently; no evidence either way, weight kept"
            )
            continue
        new_weight = _next_weight(weight, score)
        if abs(new_weight - weight) < 1e-9:
            continue
        verdict = "predicts the verdict" if score >= AUC_GOOD else "is near chance"
        replay = replay_validator_weight(
            task_type=task_type,
            since=since,
            gate=gate,
            validator=validator,
            before=weight,
            after=new_weight,
            agent=caller,
        )
        proposals.append(
            Proposal(
                tunable="",
                validator=validator,
                caller=caller,
                task_type=task_type,
                before=weight,
                before_overridden=own_row,
                after=new_weight,
                evidence={**evidence, "created_row": not own_row, "replay": replay.as_dict()},
                expected_effect=f"{summary}: it {verdict}"
                + (" (shadow from now on)" if new_weight == 0 else "")
                + f"; {replay.summary()}",
            )
        )
    return proposals


# --- the assignments cycle ------------------------------------------------------------------------


def wilson_lower(accepted: int, n: int, z: float = WILSON_Z) -> float | None:
    """The Wilson score interval's lower bound of an acceptance rate (None without data)."""
    if n <= 0:
        return None
    p = accepted / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return (centre - spread) / (1 + z2 / n)


def _route_effective(task_type: str) -> tuple[str, str, bool]:
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


def _route_tier_set(*, task_type: str, tier: str, run_id: int | None) -> None:
    """Set a task type's start tier through ``config_object_save`` (every process reloads),
    creating its route when it has none."""
    route = TaskRoute.objects.select_for_update().filter(task_type=task_type).first()
    if route is None:
        route = TaskRoute(
            task_type=task_type, description=f"Created by learning run {run_id} (assignments)."
        )
    route.start_tier = tier
    config_object_save(obj=route)


def _caller_effective(caller: str, task_type: str) -> tuple[str, str, bool]:
    """Where a caller's requests of a task type start: its tier, pinned model (empty when none),
    and whether the caller has a preference of its own for the task type."""
    preferences = {
        p.task_type: p
        for p in CallerPreference.objects.filter(caller=caller, task_type__in=(task_type, ""))
    }
    preference = preferences.get(task_type) or preferences.get("")
    own = task_type in preferences
    if preference is None:
        tier, pinned, _ = _route_effective(task_type)
        return tier, pinned, own
    return preference.start_tier, preference.pinned_model, own


def _caller_tier_set(*, caller: str, task_type: str, tier: str, run_id: int | None) -> None:
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


def _assignments_plan() -> _Plan:
    """What the assignments cycle would change, from the last ``WINDOW`` of review verdicts
    (acceptance per tier) and audit records (cost and latency per tier)."""
    since = timezone.now() - WINDOW
    counts: dict[str, dict[str, list[int]]] = {}  # task type -> tier -> [accepted, decided]
    decided = (
        ReviewItem.objects.filter(decided_at__gte=since, tier__in=list(TIER_POSITIONS))
        .exclude(status=ReviewItem.Status.PENDING)
        .exclude(task_type__in=("", TaskRoute.DEFAULT))
        .values("task_type", "tier", "status")
        .annotate(n=Count("id"))
    )
    for row in decided:
        pair = counts.setdefault(row["task_type"], {}).setdefault(row["tier"], [0, 0])
        pair[1] += row["n"]
        if row["status"] == ReviewItem.Status.APPROVED:
            pair[0] += row["n"]
    usage = {
        (row["task_type"], row["tier"]): row
        for row in AuditRecord.objects.filter(
            created_at__gte=since,
            task_type__in=list(counts),
            tier__in=list(TIER_POSITIONS),
            status__in=(
                AuditRecord.Status.APPROVED,
                AuditRecord.Status.WARNING,
                AuditRecord.Status.PENDING_REVIEW,
            ),
        )
        .values("task_type", "tier")
        .annotate(requests=Count("id"), cost=Avg("cost_usd"), latency=Avg("latency_ms"))
    }
    plan = _Plan()
    estimates: dict[str, dict[str, dict[str, Any]]] = {}
    plan.data_used = {
        "window_days": WINDOW.days,
        "min_sample": TIER_MIN_SAMPLE,
        "quality_target": QUALITY_TARGET,
        "estimates": estimates,
    }
    for task_type in sorted(counts):
        per_tier: dict[str, dict[str, Any]] = {}
        for tier in TIER_POSITIONS:
            accepted, n = counts[task_type].get(tier, [0, 0])
            used = usage.get((task_type, tier), {})
            bound = wilson_lower(accepted, n)
            cost, latency = used.get("cost"), used.get("latency")
            if not n and not used:
                continue
            per_tier[tier] = {
                "n": n,
                "accepted": accepted,
                "acceptance": round(accepted / n, 4) if n else None,
                "wilson_lower": None if bound is None else round(bound, 4),
                "requests": used.get("requests", 0),
                "mean_cost_usd": None if cost is None else round(float(cost), 8),
                "mean_latency_ms": None if latency is None else round(float(latency), 1),
            }
        estimates[task_type] = per_tier
        plan.notes.append(
            f"{task_type}: "
            + "; ".join(
                f"{tier} n={e['n']} acceptance {_pct(e['acceptance'])} "
                f"lower {_pct(e['wilson_lower'])} cost {e['mean_cost_usd']} "
                f"latency {e['mean_latency_ms']} ms"
                for tier, e in per_tier.items()
            )
        )
        proposal = _assignment_proposal(task_type, per_tier, plan.notes, since)
        if proposal is not None:
            plan.proposals.append(proposal)
    plan.proposals += _caller_assignment_proposals(since, plan)
    return plan


def _caller_assignment_proposals(since: Any, plan: _Plan) -> list[Proposal]:
    """Per agent and task type, where the agent's own reviews are enough: move the agent's start
    tier one tier toward the cheapest tier that meets the target *for its requests*, when that
    differs from where the task type's route is going (agents ask differently)."""
    counts: dict[tuple[str, str], dict[str, list[int]]] = {}
    decided = (
        ReviewItem.objects.filter(decided_at__gte=since, tier__in=list(TIER_POSITIONS))
        .exclude(status=ReviewItem.Status.PENDING)
        .exclude(task_type__in=("", TaskRoute.DEFAULT))
        .exclude(audit_record__agent="")
        .values("audit_record__agent", "task_type", "tier", "status")
        .annotate(n=Count("id"))
    )
    for row in decided:
        per_tier = counts.setdefault((row["audit_record__agent"], row["task_type"]), {})
        pair = per_tier.setdefault(row["tier"], [0, 0])
        pair[1] += row["n"]
        if row["status"] == ReviewItem.Status.APPROVED:
            pair[0] += row["n"]
    # Where each task type's route is heading (its own proposal's target).
    task_targets = {
        p.task_type: str(p.evidence["best_tier"])
        for p in plan.proposals
        if p.kind == LearningChange.TargetKind.TASK_ROUTE
    }
    by_caller: dict[str, dict[str, dict[str, Any]]] = {}
    plan.data_used["callers"] = by_caller
    proposals = []
    for (caller, task_type), per_tier in sorted(counts.items()):
        estimates: dict[str, dict[str, Any]] = {
            tier: {
                "n": n,
                "accepted": accepted,
                "wilson_lower": round(wilson_lower(accepted, n) or 0.0, 4),
            }
            for tier, (accepted, n) in per_tier.items()
        }
        by_caller.setdefault(caller, {})[task_type] = estimates
        meets = [
            tier
            for tier, e in estimates.items()
            if e["n"] >= TIER_MIN_SAMPLE and (e["wilson_lower"] or 0.0) >= QUALITY_TARGET
        ]
        if not meets:
            continue  # not enough of the agent's own evidence: the task type's route decides
        best = min(meets, key=TIER_POSITIONS.__getitem__)
        current, pinned, own = _caller_effective(caller, task_type)
        if pinned or current not in TIER_POSITIONS or current == best:
            continue
        route_tier, _, _ = _route_effective(task_type)
        task_best = task_targets.get(task_type, route_tier)
        if not own and best == task_best:
            continue  # the task type's route is going there anyway: no preference needed
        here, there = TIER_POSITIONS[current], TIER_POSITIONS[best]
        new = tier_at(here + (1 if there > here else -1))
        chosen = estimates[best]
        proposals.append(
            Proposal(
                tunable="",
                kind=LearningChange.TargetKind.CALLER_ROUTE,
                caller=caller,
                task_type=task_type,
                before=float(here),
                before_overridden=own,
                after=float(TIER_POSITIONS[new]),
                evidence={
                    "tier_before": current,
                    "tier_after": new,
                    "best_tier": best,
                    "created_preference": not own,
                    "tiers": estimates,
                },
                expected_effect=(
                    f"move {'down' if there < here else 'up'} one tier for {caller}: {best} is "
                    f"the cheapest tier meeting {_pct(QUALITY_TARGET)} acceptance on this "
                    f"agent's own reviews (95 % lower bound {_pct(chosen['wilson_lower'])} on "
                    f"{chosen['n']})"
                ),
            )
        )
    return proposals


def _assignment_proposal(
    task_type: str, per_tier: dict[str, dict[str, Any]], notes: list[str], since: Any
) -> Proposal | None:
    """One tier toward the cheapest tier meeting the target, if that is not the current one."""
    meets = [
        tier
        for tier, e in per_tier.items()
        if e["n"] >= TIER_MIN_SAMPLE and (e["wilson_lower"] or 0.0) >= QUALITY_TARGET
    ]
    if not meets:
        notes.append(
            f"{task_type}: no tier with {TIER_MIN_SAMPLE}+ reviewed items has a 95 % lower "
            f"bound of acceptance of {_pct(QUALITY_TARGET)}; left as it is"
        )
        return None
    best = min(meets, key=TIER_POSITIONS.__getitem__)
    current, pinned, own = _route_effective(task_type)
    if pinned:
        notes.append(f"{task_type}: the route pins {pinned}; left alone")
        return None
    if current not in TIER_POSITIONS or current == best:
        return None
    here, there = TIER_POSITIONS[current], TIER_POSITIONS[best]
    new = tier_at(here + (1 if there > here else -1))  # at most one tier per cycle
    before_cost = (per_tier.get(current) or {}).get("mean_cost_usd")
    after_cost = (per_tier.get(new) or {}).get("mean_cost_usd")
    delta = None if before_cost is None or after_cost is None else after_cost - before_cost
    direction = "down" if there < here else "up"
    reason = (
        f"{best} is the cheapest tier meeting {_pct(QUALITY_TARGET)} acceptance "
        f"(95 % lower bound {_pct(per_tier[best]['wilson_lower'])} on {per_tier[best]['n']})"
    )
    effect = (
        "cost per request n/a (no audit records of a tier)"
        if delta is None
        else f"cost per request {before_cost:.6f} -> {after_cost:.6f} USD ({delta:+.6f})"
    )
    default, per_task = gate_configs()
    replay = replay_start_tier(
        task_type=task_type,
        since=since,
        gate=per_task.get(task_type, default),
        tier_before=current,
        tier_after=new,
    )
    return Proposal(
        tunable="",
        kind=LearningChange.TargetKind.TASK_ROUTE,
        task_type=task_type,
        before=float(here),
        before_overridden=own,
        after=float(TIER_POSITIONS[new]),
        evidence={
            "tier_before": current,
            "tier_after": new,
            "best_tier": best,
            "created_route": not own,
            "cost_change_usd": None if delta is None else round(delta, 8),
            "tiers": per_tier,
            "replay": replay.as_dict(),
        },
        expected_effect=f"move {direction} one tier: {reason}; {effect}; {replay.summary()}",
    )


_PLANNERS = {
    LearningRun.Kind.THRESHOLDS.value: _thresholds_plan,
    LearningRun.Kind.VALIDATORS.value: _validators_plan,
    LearningRun.Kind.ASSIGNMENTS.value: _assignments_plan,
}
