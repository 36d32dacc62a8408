"""The assignments cycle, per task type (not the ``default`` route's own) with reviewed answers in
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
- Per agent and task type, where the agent's own reviews are enough and lead elsewhere than the
  task type's route, the agent's start tier moves instead (a caller preference).
- Not done yet: exploration traffic (sending a share of requests to a tier without enough reviews),
  so a tier that is never used is never measured.

The arithmetic (Wilson bounds, tier estimates, the choice of tier and the step toward it) is pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.utils import timezone

from scoring.selectors import gate_configs

from ..models import TIER_POSITIONS, LearningChange, tier_at
from ..replay import replay_start_tier
from .evidence import TierCounts, caller_tier_verdicts, tier_usage, tier_verdicts
from .plans import WINDOW, Plan, Proposal, pct
from .targets import caller_effective, route_effective

QUALITY_TARGET = 0.9
TIER_MIN_SAMPLE = 20
WILSON_Z = 1.96  # 95 %


# --- the arithmetic -------------------------------------------------------------------------------


def wilson_lower(accepted: int, n: int, z: float = WILSON_Z) -> float | None:
    """The Wilson score interval's lower bound of an acceptance rate (None without data)."""
    if n <= 0:
        return None
    p = accepted / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return (centre - spread) / (1 + z2 / n)


def tier_estimates(
    counts: TierCounts, usage: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per tier, cheapest first: reviewers' acceptance and its Wilson lower bound, from
    ``counts`` ([accepted, decided]), and requests, mean cost and latency, from ``usage``;
    tiers with neither are left out."""
    per_tier: dict[str, dict[str, Any]] = {}
    for tier in TIER_POSITIONS:
        accepted, n = counts.get(tier, [0, 0])
        used = usage.get(tier, {})
        if not n and not used:
            continue
        bound = wilson_lower(accepted, n)
        cost, latency = used.get("cost"), used.get("latency")
        per_tier[tier] = {
            "n": n,
            "accepted": accepted,
            "acceptance": round(accepted / n, 4) if n else None,
            "wilson_lower": None if bound is None else round(bound, 4),
            "requests": used.get("requests", 0),
            "mean_cost_usd": None if cost is None else round(float(cost), 8),
            "mean_latency_ms": None if latency is None else round(float(latency), 1),
        }
    return per_tier


def caller_tier_estimates(counts: TierCounts) -> dict[str, dict[str, Any]]:
    """Per tier one agent's requests were answered on: its reviews and their Wilson lower bound
    (0 without data)."""
    return {
        tier: {
            "n": n,
            "accepted": accepted,
            "wilson_lower": round(wilson_lower(accepted, n) or 0.0, 4),
        }
        for tier, (accepted, n) in counts.items()
    }


def cheapest_meeting(estimates: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The cheapest tier whose acceptance's lower bound reaches ``QUALITY_TARGET`` on at least
    ``TIER_MIN_SAMPLE`` reviews (None: no tier does)."""
    meets = [
        tier
        for tier, e in estimates.items()
        if e["n"] >= TIER_MIN_SAMPLE and (e["wilson_lower"] or 0.0) >= QUALITY_TARGET
    ]
    return min(meets, key=TIER_POSITIONS.__getitem__) if meets else None


def one_tier_toward(current: str, best: str) -> str:
    """The tier next to ``current`` in the direction of ``best`` (a cycle moves one tier)."""
    here, there = TIER_POSITIONS[current], TIER_POSITIONS[best]
    return tier_at(here + (1 if there > here else -1))


def cost_change(
    per_tier: Mapping[str, Mapping[str, Any]], current: str, new: str
) -> tuple[float | None, float | None, float | None]:
    """The mean cost per request on ``current`` and on ``new``, and the difference (None when a
    tier has no audit records)."""
    before = (per_tier.get(current) or {}).get("mean_cost_usd")
    after = (per_tier.get(new) or {}).get("mean_cost_usd")
    return before, after, None if before is None or after is None else after - before


def estimates_line(task_type: str, per_tier: Mapping[str, Mapping[str, Any]]) -> str:
    """A task type's estimates per tier, as one note of the run."""
    return f"{task_type}: " + "; ".join(
        f"{tier} n={e['n']} acceptance {pct(e['acceptance'])} "
        f"lower {pct(e['wilson_lower'])} cost {e['mean_cost_usd']} "
        f"latency {e['mean_latency_ms']} ms"
        for tier, e in per_tier.items()
    )


# --- the plan -------------------------------------------------------------------------------------


def assignments_plan() -> Plan:
    """What the assignments cycle would change, from the last ``WINDOW`` of review verdicts
    (acceptance per tier) and audit records (cost and latency per tier)."""
    since = timezone.now() - WINDOW
    counts = tier_verdicts(since)
    usage = tier_usage(since, list(counts))
    plan = Plan()
    estimates: dict[str, dict[str, dict[str, Any]]] = {}
    plan.data_used = {
        "window_days": WINDOW.days,
        "min_sample": TIER_MIN_SAMPLE,
        "quality_target": QUALITY_TARGET,
        "estimates": estimates,
    }
    for task_type in sorted(counts):
        per_tier = tier_estimates(counts[task_type], usage.get(task_type, {}))
        estimates[task_type] = per_tier
        plan.notes.append(estimates_line(task_type, per_tier))
        proposal = _assignment_proposal(task_type, per_tier, plan.notes, since)
        if proposal is not None:
            plan.proposals.append(proposal)
    plan.proposals += _caller_assignment_proposals(since, plan)
    return plan


def _assignment_proposal(
    task_type: str, per_tier: dict[str, dict[str, Any]], notes: list[str], since: datetime
) -> Proposal | None:
    """One tier toward the cheapest tier meeting the target, if that is not the current one."""
    best = cheapest_meeting(per_tier)
    if best is None:
        notes.append(
            f"{task_type}: no tier with {TIER_MIN_SAMPLE}+ reviewed items has a 95 % lower "
            f"bound of acceptance of {pct(QUALITY_TARGET)}; left as it is"
        )
        return None
    current, pinned, own = route_effective(task_type)
    if pinned:
        notes.append(f"{task_type}: the route pins {pinned}; left alone")
        return None
    if current not in TIER_POSITIONS or current == best:
        return None
    new = one_tier_toward(current, best)
    before_cost, after_cost, delta = cost_change(per_tier, current, new)
    direction = "down" if TIER_POSITIONS[best] < TIER_POSITIONS[current] else "up"
    reason = (
        f"{best} is the cheapest tier meeting {pct(QUALITY_TARGET)} acceptance "
        f"(95 % lower bound {pct(per_tier[best]['wilson_lower'])} on {per_tier[best]['n']})"
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
        before=float(TIER_POSITIONS[current]),
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


def _caller_assignment_proposals(since: datetime, plan: Plan) -> list[Proposal]:
    """Per agent and task type, where the agent's own reviews are enough: move the agent's start
    tier one tier toward the cheapest tier that meets the target *for its requests*, when that
    differs from where the task type's route is going (agents ask differently)."""
    counts = caller_tier_verdicts(since)
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
        estimates = caller_tier_estimates(per_tier)
        by_caller.setdefault(caller, {})[task_type] = estimates
        proposal = _caller_assignment_proposal(caller, task_type, estimates, task_targets)
        if proposal is not None:
            proposals.append(proposal)
    return proposals


def _caller_assignment_proposal(
    caller: str,
    task_type: str,
    estimates: dict[str, dict[str, Any]],
    task_targets: Mapping[str, str],
) -> Proposal | None:
    """One tier toward the cheapest tier meeting the target on this agent's own reviews, when
    the task type's route is not going there anyway."""
    best = cheapest_meeting(estimates)
    if best is None:
        return None  # not enough of the agent's own evidence: the task type's route decides
    current, pinned, own = caller_effective(caller, task_type)
    if pinned or current not in TIER_POSITIONS or current == best:
        return None
    route_tier, _, _ = route_effective(task_type)
    if not own and best == task_targets.get(task_type, route_tier):
        return None  # the task type's route is going there anyway: no preference needed
    new = one_tier_toward(current, best)
    direction = "down" if TIER_POSITIONS[best] < TIER_POSITIONS[current] else "up"
    chosen = estimates[best]
    return Proposal(
        tunable="",
        kind=LearningChange.TargetKind.CALLER_ROUTE,
        caller=caller,
        task_type=task_type,
        before=float(TIER_POSITIONS[current]),
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
            f"move {direction} one tier for {caller}: {best} is "
            f"the cheapest tier meeting {pct(QUALITY_TARGET)} acceptance on this "
            f"agent's own reviews (95 % lower bound {pct(chosen['wilson_lower'])} on "
            f"{chosen['n']})"
        ),
    )
