"""Replay estimates: what a learning change would have done to recent traffic.

Each estimate replays the task type's answered requests of the cycle's window (the newest
``MAX_REPLAYED`` for the validator rescoring) under the value before and after the change, and
reports, per request: mean cost (USD), approval rate (share of answers the gate approves on its
own), review load (share sent to review for low confidence), and the reviewers' acceptance of the
answers approved, on the reviewed ones. Thresholds and weights do not change which model answers,
so their cost is unchanged; a start tier's estimate uses what that tier did for the task type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Avg, Count, Q, QuerySet

from reviews.models import ReviewItem
from routing.models import AuditRecord
from scoring.gates import APPROVED, PENDING_REVIEW, GateConfig

MAX_REPLAYED = 5000

ANSWERED = (
    AuditRecord.Status.APPROVED,
    AuditRecord.Status.WARNING,
    AuditRecord.Status.PENDING_REVIEW,
)


@dataclass(frozen=True, slots=True)
class Side:
    """Recent traffic as it went, or as it would have gone."""

    cost_usd: float | None
    approval_rate: float | None
    review_load: float | None
    approved_acceptance: float | None  # reviewers' acceptance of the approved answers

    def as_dict(self) -> dict[str, float | None]:
        return {
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 8),
            "approval_rate": _round(self.approval_rate),
            "review_load": _round(self.review_load),
            "approved_acceptance": _round(self.approved_acceptance),
        }


@dataclass(frozen=True, slots=True)
class Replay:
    requests: int
    reviewed: int
    before: Side
    after: Side

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "reviewed": self.reviewed,
            "before": self.before.as_dict(),
            "after": self.after.as_dict(),
        }

    def summary(self) -> str:
        return summary(self.as_dict())


def summary(replay: dict[str, Any]) -> str:
    """One line from a replay's dict (as stored in a change's evidence)."""
    before, after = replay["before"], replay["after"]

    def pair(key: str, fmt: Any) -> str:
        return f"{fmt(before.get(key))} -> {fmt(after.get(key))}"

    return (
        f"replayed on {replay['requests']} requests ({replay['reviewed']} reviewed): "
        f"cost/request {pair('cost_usd', _usd)}, approval rate {pair('approval_rate', _pct)}, "
        f"review load {pair('review_load', _pct)}, "
        f"reviewers accept approved {pair('approved_acceptance', _pct)}"
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _usd(value: float | None) -> str:
    return "n/a" if value is None else f"${value:.6f}"


def _answered(task_type: str, since: datetime, agent: str = "") -> QuerySet[AuditRecord]:
    rows = AuditRecord.objects.filter(
        task_type=task_type, created_at__gte=since, status__in=ANSWERED, confidence__isnull=False
    )
    return rows.filter(agent=agent) if agent else rows


def _reviewed(task_type: str, since: datetime, agent: str = "") -> QuerySet[ReviewItem]:
    items = ReviewItem.objects.filter(
        task_type=task_type, decided_at__gte=since, confidence__isnull=False
    ).exclude(status=ReviewItem.Status.PENDING)
    return items.filter(audit_record__agent=agent) if agent else items


def _verdicts(items: QuerySet[ReviewItem]) -> list[tuple[float, bool]]:
    """(confidence, accepted as it was) of decided review items."""
    return [
        (confidence or 0.0, status == ReviewItem.Status.APPROVED)
        for confidence, status in items.values_list("confidence", "status")
    ]


def _acceptance(verdicts: list[tuple[float, bool]], approve_at: float) -> float | None:
    band = [ok for confidence, ok in verdicts if confidence >= approve_at]
    return sum(band) / len(band) if band else None


def replay_thresholds(
    *,
    task_type: str,
    since: datetime,
    gate: GateConfig,
    review_below: float,
    approve_at: float,
    agent: str = "",
) -> Replay:
    """The task type's recent answers (one agent's, when given) under other thresholds (cost
    does not change)."""
    rows = _answered(task_type, since, agent)
    totals = rows.aggregate(
        n=Count("id"),
        cost=Avg("cost_usd"),
        approved_before=Count("id", filter=Q(confidence__gte=gate.approve_at)),
        approved_after=Count("id", filter=Q(confidence__gte=approve_at)),
        review_before=Count("id", filter=Q(confidence__lt=gate.review_below)),
        review_after=Count("id", filter=Q(confidence__lt=review_below)),
    )
    n = totals["n"]
    cost = None if totals["cost"] is None else float(totals["cost"])
    verdicts = _verdicts(_reviewed(task_type, since, agent))

    def side(approved: int, review: int, threshold: float) -> Side:
        return Side(
            cost_usd=cost,
            approval_rate=approved / n if n else None,
            review_load=review / n if n else None,
            approved_acceptance=_acceptance(verdicts, threshold),
        )

    return Replay(
        requests=n,
        reviewed=len(verdicts),
        before=side(totals["approved_before"], totals["review_before"], gate.approve_at),
        after=side(totals["approved_after"], totals["review_after"], approve_at),
    )


def rescore(breakdown: Any, validator: str, factor: float) -> float | None:
    """The confidence of a stored breakdown with one validator's weight multiplied by ``factor``
    (the formula of ``validators.scoring``); None when the breakdown is unusable."""
    if not isinstance(breakdown, list):
        return None
    product, cap = 1.0, 10.0
    for result in breakdown:
        if not isinstance(result, dict):
            return None
        score, weight = result.get("score"), result.get("weight")
        if not isinstance(score, int | float) or not isinstance(weight, int | float):
            return None
        if result.get("name") == validator and not str(result.get("reason", "")).startswith(
            "not counted"
        ):
            # A shadow validator (weight 0) comes back at its own weight: factor is the new one.
            weight = weight * factor if weight > 0 else factor
        if weight > 0 and math.isfinite(weight):
            product *= (min(10.0, max(0.0, float(score))) / 10.0) ** weight
            if result.get("decisive"):
                cap = min(cap, float(score))
    return round(min(10.0 * product, cap), 2)


def replay_validator_weight(
    *,
    task_type: str,
    since: datetime,
    gate: GateConfig,
    validator: str,
    before: float,
    after: float,
    agent: str = "",
) -> Replay:
    """The newest ``MAX_REPLAYED`` answers of the task type (one agent's, when given) rescored
    with the validator's new weight, gated by the current thresholds."""
    factor = after / before if before > 0 else after
    rows = list(
        _answered(task_type, since, agent)
        .order_by("-created_at")
        .values_list("request_id", "confidence", "validation", "cost_usd")[:MAX_REPLAYED]
    )
    rescored: dict[str, tuple[float, float]] = {}
    for request_id, confidence, validation, _ in rows:
        old = confidence or 0.0  # never None: the query asks for a confidence
        new = rescore(validation, validator, factor)
        rescored[request_id] = (old, old if new is None else new)
    reviewed = [
        (rescored[request_id], status == ReviewItem.Status.APPROVED)
        for request_id, status in _reviewed(task_type, since, agent).values_list(
            "audit_record__request_id", "status"
        )
        if request_id in rescored
    ]
    n = len(rows)
    cost = sum(float(c) for *_, c in rows) / n if n else None

    def side(which: int) -> Side:
        statuses = [gate.status_for(pair[which]) for pair in rescored.values()]
        return Side(
            cost_usd=cost,
            approval_rate=statuses.count(APPROVED) / n if n else None,
            review_load=statuses.count(PENDING_REVIEW) / n if n else None,
            approved_acceptance=_acceptance(
                [(pair[which], ok) for pair, ok in reviewed], gate.approve_at
            ),
        )

    return Replay(requests=n, reviewed=len(reviewed), before=side(0), after=side(1))


def replay_start_tier(
    *, task_type: str, since: datetime, gate: GateConfig, tier_before: str, tier_after: str
) -> Replay:
    """The task type's recent requests as its answers on ``tier_after`` went, against those on
    ``tier_before`` (each tier's own answers and reviews in the window)."""
    requests = _answered(task_type, since).count()

    def side(tier: str) -> Side:
        stats = (
            _answered(task_type, since)
            .filter(tier=tier)
            .aggregate(
                n=Count("id"),
                cost=Avg("cost_usd"),
                approved=Count("id", filter=Q(status=AuditRecord.Status.APPROVED)),
                review=Count("id", filter=Q(status=AuditRecord.Status.PENDING_REVIEW)),
            )
        )
        n = stats["n"]
        verdicts = _verdicts(_reviewed(task_type, since).filter(tier=tier))
        return Side(
            cost_usd=None if stats["cost"] is None else float(stats["cost"]),
            approval_rate=stats["approved"] / n if n else None,
            review_load=stats["review"] / n if n else None,
            approved_acceptance=_acceptance(verdicts, gate.approve_at),
        )

    reviewed = _reviewed(task_type, since).filter(tier__in=(tier_before, tier_after)).count()
    return Replay(
        requests=requests, reviewed=reviewed, before=side(tier_before), after=side(tier_after)
    )
