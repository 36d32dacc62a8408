"""The thresholds cycle, per task type with at least ``MIN_SAMPLE`` decided review items in the
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

The arithmetic (the functions above ``thresholds_plan``) is pure: verdicts in, thresholds out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from scoring.gates import GateConfig
from scoring.models import TunableOverride
from scoring.selectors import caller_gate_configs, gate_configs

from ..replay import replay_thresholds
from .evidence import ReviewLoad, threshold_verdicts
from .plans import MIN_SAMPLE, WINDOW, Plan, Proposal, Verdict, pct

MIN_BAND_SAMPLE = 10
TARGET_ACCEPTANCE = 0.95
COMFORT_MARGIN = 0.03
TARGET_REVIEW_LOAD = 0.20
MAX_STEP = 0.5
GRID = 0.1

STEPS = tuple(round(GRID * i, 1) for i in range(1, round(MAX_STEP / GRID) + 1))
"""The moves one cycle may make, smallest first: 0.1 to ``MAX_STEP``."""


# --- the arithmetic -------------------------------------------------------------------------------


def acceptance(verdicts: Sequence[Verdict]) -> float | None:
    """The share of verdicts accepted (None without any)."""
    return sum(ok for _, ok in verdicts) / len(verdicts) if verdicts else None


def band_from(verdicts: Sequence[Verdict], threshold: float) -> list[Verdict]:
    """The verdicts on answers scoring at least ``threshold``."""
    return [v for v in verdicts if v[0] >= threshold]


def raising_helps(verdicts: Sequence[Verdict], approve_at: float, band_rate: float) -> bool:
    """Whether some higher threshold (with ``MIN_BAND_SAMPLE`` reviewed items above it) has a
    clearly better acceptance than the current approved band: only then can raising help."""
    for tenth in range(round(approve_at * 10) + 1, 101):
        above = [ok for score, ok in verdicts if score >= tenth / 10]
        if len(above) < MIN_BAND_SAMPLE:
            break
        if sum(above) / len(above) >= band_rate + COMFORT_MARGIN:
            return True
    return False


def approve_at_next(
    verdicts: Sequence[Verdict], *, approve_at: float, review_below: float, load: float | None
) -> float | None:
    """Where ``approve_at`` goes: up when the approved band falls short of the target, down when
    it is comfortably clean while the review load is over target, else where it is. None when
    the band falls short but no higher score does better (raising would only add reviews)."""
    band = band_from(verdicts, approve_at)
    band_rate = acceptance(band)
    if band_rate is None or len(band) < MIN_BAND_SAMPLE:
        return approve_at
    if band_rate < TARGET_ACCEPTANCE:
        if not raising_helps(verdicts, approve_at, band_rate):
            return None
        return approve_at_raised(verdicts, approve_at)
    if (
        band_rate >= TARGET_ACCEPTANCE + COMFORT_MARGIN
        and load is not None
        and load > TARGET_REVIEW_LOAD
    ):
        return approve_at_lowered(verdicts, approve_at, review_below)
    return approve_at


def approve_at_raised(verdicts: Sequence[Verdict], approve_at: float) -> float:
    """The smallest step up whose band reaches the target acceptance (``MAX_STEP`` when none
    does); never above 10."""
    for step in STEPS:
        candidate = min(10.0, round(approve_at + step, 1))
        rate = acceptance(band_from(verdicts, candidate))
        if rate is not None and rate >= TARGET_ACCEPTANCE:
            return candidate
    return min(10.0, round(approve_at + MAX_STEP, 1))


def approve_at_lowered(
    verdicts: Sequence[Verdict], approve_at: float, review_below: float
) -> float:
    """The largest step down whose band keeps the target acceptance, staying above
    ``review_below`` (``approve_at`` when none does)."""
    for step in reversed(STEPS):
        candidate = round(approve_at - step, 1)
        rate = acceptance(band_from(verdicts, candidate))
        if candidate > review_below and rate is not None and rate >= TARGET_ACCEPTANCE:
            return candidate
    return approve_at


def review_below_next(
    verdicts: Sequence[Verdict],
    *,
    review_below: float,
    load: float | None,
    load_at: Callable[[float], float | None],
) -> float:
    """Where ``review_below`` goes: down when the review load (``load``, at ``review_below``) is
    over target, up when it is under, else (no answered requests) where it is. ``load_at`` gives
    the load at another threshold."""
    if load is None:
        return review_below
    if load > TARGET_REVIEW_LOAD:
        return review_below_lowered(verdicts, review_below)
    return review_below_raised(verdicts, review_below, load_at)


def review_below_lowered(verdicts: Sequence[Verdict], review_below: float) -> float:
    """The largest step down where the reviewed items between the two thresholds were accepted
    on target (reviews there are wasted); ``review_below`` when no step qualifies."""
    for step in reversed(STEPS):
        candidate = max(0.0, round(review_below - step, 1))
        below = [v for v in verdicts if candidate <= v[0] < review_below]
        rate = acceptance(below)
        if len(below) >= MIN_BAND_SAMPLE and rate is not None and rate >= TARGET_ACCEPTANCE:
            return candidate
    return review_below


def review_below_raised(
    verdicts: Sequence[Verdict],
    review_below: float,
    load_at: Callable[[float], float | None],
) -> float:
    """When the reviewed items just above ``review_below`` fall short of the target, the largest
    step up that keeps the review load on target; ``review_below`` otherwise."""
    above = [v for v in verdicts if review_below <= v[0] < review_below + MAX_STEP]
    rate = acceptance(above)
    if len(above) < MIN_BAND_SAMPLE or rate is None or rate >= TARGET_ACCEPTANCE:
        return review_below
    for step in reversed(STEPS):
        candidate = min(10.0, round(review_below + step, 1))
        new_load = load_at(candidate)
        if new_load is not None and new_load <= TARGET_REVIEW_LOAD:
            return candidate
    return review_below


def warning_band_kept(review_below: float, approve_at: float) -> float:
    """``review_below`` kept at least a grid step under ``approve_at`` (and not negative), so
    the warning band stays between the two."""
    return max(0.0, min(review_below, round(approve_at - GRID, 1)))


# --- the plan -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Scope:
    """Whose thresholds are weighed: a task type's, or one caller's requests of it."""

    task_type: str
    caller: str
    gate: GateConfig
    since: datetime
    overrides: set[tuple[str, str, str]]

    @property
    def label(self) -> str:
        return f"{self.task_type}{'/' + self.caller if self.caller else ''}"

    def overridden(self, tunable: str) -> bool:
        return (tunable, self.task_type, self.caller) in self.overrides


def thresholds_plan() -> Plan:
    """What the thresholds cycle would change, from the last ``WINDOW`` of review verdicts."""
    since = timezone.now() - WINDOW
    by_task, by_caller = threshold_verdicts(since)
    default, per_task = gate_configs()
    overrides = set(
        TunableOverride.objects.filter(name__in=("approve_at", "review_below")).values_list(
            "name", "task_type", "caller"
        )
    )
    plan = Plan()
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
        scope = _Scope(task_type, "", per_task.get(task_type, default), since, overrides)
        plan.proposals += _proposals(scope, verdicts, plan.notes)
    plan.data_used["reviewed_per_caller"] = {
        f"{caller}/{task}": len(v) for (caller, task), v in sorted(by_caller.items())
    }
    gates = (default, per_task)
    plan.proposals += _caller_proposals(by_task, by_caller, gates, since, overrides, plan)
    return plan


def _caller_proposals(
    by_task: dict[str, list[Verdict]],
    by_caller: dict[tuple[str, str], list[Verdict]],
    gates: tuple[GateConfig, dict[str, GateConfig]],
    since: datetime,
    overrides: set[tuple[str, str, str]],
    plan: Plan,
) -> list[Proposal]:
    """Per caller of a task type with enough reviews of its own: the threshold moves where
    they lead elsewhere than the task type's (``gates``: the global and per task type configs)."""
    default, per_task = gates
    per_caller = caller_gate_configs()
    task_after = {(p.tunable, p.task_type): p.after for p in plan.proposals}
    proposals = []
    for (caller, task_type), verdicts in sorted(by_caller.items()):
        if len(verdicts) < MIN_SAMPLE or len(verdicts) == len(by_task[task_type]):
            continue  # too few of its own, or the task type's reviews are all this caller's
        task_config = per_task.get(task_type, default)
        config = per_caller.get((caller, task_type)) or per_caller.get((caller, "")) or task_config
        scope = _Scope(task_type, caller, config, since, overrides)
        for proposal in _proposals(scope, verdicts, plan.notes):
            # Only where this caller's own reviews lead elsewhere than the task type's.
            heading = task_after.get(
                (proposal.tunable, task_type), getattr(task_config, proposal.tunable)
            )
            if proposal.before_overridden or abs(proposal.after - heading) > 1e-9:
                proposals.append(proposal)
    return proposals


def _proposals(scope: _Scope, verdicts: list[Verdict], notes: list[str]) -> list[Proposal]:
    """Threshold proposals for a task type, or for one caller's requests of it."""
    approve_at, review_below = scope.gate.approve_at, scope.gate.review_below
    load_at = ReviewLoad(task_type=scope.task_type, since=scope.since, agent=scope.caller)
    load = load_at(review_below)
    band = band_from(verdicts, approve_at)
    band_rate = acceptance(band)
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
    new_approve = approve_at_next(
        verdicts, approve_at=approve_at, review_below=review_below, load=load
    )
    if new_approve is None:
        # Reviewers reject answers as often at every higher score: the validators cannot
        # tell these answers apart, and a higher threshold would only send more to review.
        notes.append(
            f"{scope.label}: approved-band acceptance {pct(band_rate)} is under target, but no "
            "higher score does better; approve_at left as it is"
        )
        new_approve = approve_at
    new_review = review_below_next(verdicts, review_below=review_below, load=load, load_at=load_at)
    new_review = warning_band_kept(new_review, new_approve)
    proposals = []
    if abs(new_approve - approve_at) > 1e-9:
        proposals.append(_approve_at_proposal(scope, verdicts, base, new_approve))
    if abs(new_review - review_below) > 1e-9:
        proposals.append(_review_below_proposal(scope, base, load_at, new_review))
    return proposals


def _approve_at_proposal(
    scope: _Scope, verdicts: list[Verdict], base: dict[str, Any], new_approve: float
) -> Proposal:
    approve_at = scope.gate.approve_at
    rate = acceptance(band_from(verdicts, new_approve))
    replay = replay_thresholds(
        task_type=scope.task_type,
        since=scope.since,
        gate=scope.gate,
        review_below=scope.gate.review_below,
        approve_at=new_approve,
        agent=scope.caller,
    )
    return Proposal(
        tunable="approve_at",
        task_type=scope.task_type,
        caller=scope.caller,
        before=approve_at,
        before_overridden=scope.overridden("approve_at"),
        after=new_approve,
        evidence={**base, "approved_band_acceptance_after": rate, "replay": replay.as_dict()},
        expected_effect=(
            f"approved-band acceptance {pct(base['approved_band_acceptance'])} -> {pct(rate)} "
            f"on {base['approved_band']} reviewed items (target {pct(TARGET_ACCEPTANCE)}); "
            f"{replay.summary()}"
        ),
    )


def _review_below_proposal(
    scope: _Scope, base: dict[str, Any], load_at: ReviewLoad, new_review: float
) -> Proposal:
    new_load = load_at(new_review)
    replay = replay_thresholds(
        task_type=scope.task_type,
        since=scope.since,
        gate=scope.gate,
        review_below=new_review,
        approve_at=scope.gate.approve_at,
        agent=scope.caller,
    )
    return Proposal(
        tunable="review_below",
        task_type=scope.task_type,
        caller=scope.caller,
        before=scope.gate.review_below,
        before_overridden=scope.overridden("review_below"),
        after=new_review,
        evidence={**base, "review_load_after": new_load, "replay": replay.as_dict()},
        expected_effect=(
            f"review load {pct(base['review_load'])} -> {pct(new_load)} of {load_at.total} "
            f"answers (target {pct(TARGET_REVIEW_LOAD)}); {replay.summary()}"
        ),
    )
