"""The validators cycle, per task type with at least ``MIN_SAMPLE`` decided review items in the
last ``WINDOW``, for every validator in the items' breakdowns (counted or shadow, weight 0; results
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

The arithmetic (``auc``, ``untied_share``, ``next_weight``, ``agreement``) is pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from scoring.gates import GateConfig
from scoring.selectors import caller_gate_configs, gate_configs
from scoring.validators.registry import VALIDATORS

from ..replay import replay_validator_weight
from .evidence import Scores, validator_scores
from .plans import MIN_SAMPLE, WINDOW, Plan, Proposal
from .targets import validator_effective

MIN_CLASS = 5
MIN_UNTIED = 0.2  # below this share of pairs scored differently, an AUC carries no evidence
AUC_GOOD = 0.75
AUC_CHANCE = 0.55
STEP_UP = 1.25
STEP_DOWN = 0.8
MIN_WEIGHT = 0.2
MAX_WEIGHT = 3.0


# --- the arithmetic -------------------------------------------------------------------------------


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


def untied_share(accepted: Sequence[float], rejected: Sequence[float]) -> float:
    """The share of (accepted, rejected) pairs the validator scored differently."""
    if not accepted or not rejected:
        return 0.0
    untied = sum(1 for a in accepted for r in rejected if a != r)
    return untied / (len(accepted) * len(rejected))


def next_weight(weight: float, score: float) -> float:
    """The weight after a cycle that measured an AUC of ``score``: up by ``STEP_UP`` (a shadow
    validator back at ``MIN_WEIGHT``) when it predicts the verdict, down by ``STEP_DOWN`` (to 0
    under ``MIN_WEIGHT``) near chance, else unchanged."""
    if score >= AUC_GOOD:
        return MIN_WEIGHT if weight <= 0 else round(min(MAX_WEIGHT, weight * STEP_UP), 3)
    if score <= AUC_CHANCE and weight > 0:
        lowered = round(weight * STEP_DOWN, 3)
        return 0.0 if lowered < MIN_WEIGHT else lowered
    return weight


def agreement(
    accepted: Sequence[float], rejected: Sequence[float], *, score: float | None, weight: float
) -> dict[str, Any]:
    """A validator's agreement with reviewers (``score``: its AUC on these scores), as kept in
    the run's data and a change's evidence."""
    return {
        "n": len(accepted) + len(rejected),
        "accepted": len(accepted),
        "not_accepted": len(rejected),
        "auc": None if score is None else round(score, 4),
        "untied_pairs": round(untied_share(accepted, rejected), 4),
        "weight": weight,
    }


# --- the plan -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Scope:
    """Whose validator weights are weighed: a task type's, or one caller's requests of it."""

    task_type: str
    caller: str
    gate: GateConfig
    since: datetime

    @property
    def label(self) -> str:
        return f"{self.task_type}/{self.caller}" if self.caller else self.task_type


def validators_plan() -> Plan:
    """What the validators cycle would change, from the last ``WINDOW`` of review verdicts: per
    task type, and per caller of it where the caller's own reviews are enough."""
    since = timezone.now() - WINDOW
    by_key, reviewed = validator_scores(since)
    default, per_task = gate_configs()
    per_caller = caller_gate_configs()
    plan = Plan()
    agreements: dict[str, dict[str, dict[str, Any]]] = {}
    plan.data_used = {
        "window_days": WINDOW.days,
        "min_sample": MIN_SAMPLE,
        "reviewed": {t: n for (t, c), n in sorted(reviewed.items()) if not c},
        "reviewed_per_caller": {f"{c}/{t}": n for (t, c), n in sorted(reviewed.items()) if c},
        "agreement": agreements,
    }
    heading: dict[tuple[str, str], float] = {}  # (task type, validator) -> its weight next
    # The task types first (caller ""), so a caller's proposals know where the task type goes.
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
        scope = _Scope(task_type, caller, gate, since)
        agreements[scope.label] = {}
        for proposal in _weight_proposals(scope, scores, agreements[scope.label], plan.notes):
            if not caller:
                heading[(task_type, proposal.validator)] = proposal.after
            elif not proposal.before_overridden and _same_weight(
                proposal.after,
                heading.get((task_type, proposal.validator), proposal.evidence["weight"]),
            ):
                continue  # the task type's own change takes this caller there anyway
            plan.proposals.append(proposal)
    return plan


def _same_weight(a: float, b: float) -> bool:
    return abs(a - b) < 1e-9


def _weight_proposals(
    scope: _Scope,
    scores: Scores,
    agreements: dict[str, dict[str, Any]],
    notes: list[str],
) -> list[Proposal]:
    """Weight changes of the validators of one task type (or one caller's requests of it)."""
    proposals = []
    for validator, (ok, not_ok) in sorted(scores.items()):
        score = auc(ok, not_ok)
        weight, own_row, _ = validator_effective(validator, scope.task_type, scope.caller)
        evidence = agreements[validator] = agreement(ok, not_ok, score=score, weight=weight)
        summary = (
            f"AUC {'n/a' if score is None else f'{score:.2f}'} on {evidence['n']} reviewed "
            f"({len(ok)} accepted, {len(not_ok)} not)"
        )
        notes.append(f"{scope.label}/{validator}: {summary}, weight {weight:g}")
        if score is None or min(len(ok), len(not_ok)) < MIN_CLASS:
            continue
        if validator not in VALIDATORS:  # no longer registered: no config to move
            continue
        untied = evidence["untied_pairs"]
        if untied < MIN_UNTIED:
            # It scored accepted and rejected answers alike (e.g. passed them all): an AUC made
            # of ties says nothing about whether it works, so its weight stays.
            notes.append(
                f"{scope.label}/{validator}: {untied:.0%} of accepted/rejected pairs scored "
                "differently; no evidence either way, weight kept"
            )
            continue
        new_weight = next_weight(weight, score)
        if _same_weight(new_weight, weight):
            continue
        proposals.append(
            _weight_proposal(scope, validator, evidence, own_row, score, summary, new_weight)
        )
    return proposals


def _weight_proposal(
    scope: _Scope,
    validator: str,
    evidence: dict[str, Any],
    own_row: bool,
    score: float,
    summary: str,
    new_weight: float,
) -> Proposal:
    weight = evidence["weight"]
    verdict = "predicts the verdict" if score >= AUC_GOOD else "is near chance"
    replay = replay_validator_weight(
        task_type=scope.task_type,
        since=scope.since,
        gate=scope.gate,
        validator=validator,
        before=weight,
        after=new_weight,
        agent=scope.caller,
    )
    return Proposal(
        tunable="",
        validator=validator,
        caller=scope.caller,
        task_type=scope.task_type,
        before=weight,
        before_overridden=own_row,
        after=new_weight,
        evidence={**evidence, "created_row": not own_row, "replay": replay.as_dict()},
        expected_effect=f"{summary}: it {verdict}"
        + (" (shadow from now on)" if new_weight == 0 else "")
        + f"; {replay.summary()}",
    )
