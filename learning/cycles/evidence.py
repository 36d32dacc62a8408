"""What the cycles read: reviewers' verdicts (review items) and what was answered (audit
records) in the cycles' window, shaped for each cycle's arithmetic."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Avg, Count, QuerySet

from reviews.models import ReviewItem
from routing.models import AuditRecord, TaskRoute

from ..models import TIER_POSITIONS
from ..replay import ANSWERED
from .plans import Verdict

Scores = dict[str, tuple[list[float], list[float]]]
"""Per validator: the scores it gave accepted answers, and those it gave the others."""

TierCounts = dict[str, list[int]]
"""Per tier: [reviewed items approved as they were, decided items]."""


def threshold_verdicts(
    since: datetime,
) -> tuple[dict[str, list[Verdict]], dict[tuple[str, str], list[Verdict]]]:
    """Decided review items with a confidence, per task type and per (caller, task type)."""
    decided = (
        ReviewItem.objects.filter(decided_at__gte=since, confidence__isnull=False)
        .exclude(status=ReviewItem.Status.PENDING)
        .exclude(task_type="")
        .values_list("task_type", "audit_record__agent", "confidence", "status")
    )
    by_task: dict[str, list[Verdict]] = {}
    by_caller: dict[tuple[str, str], list[Verdict]] = {}
    for task_type, agent, confidence, status in decided:
        if confidence is None:  # excluded by the query; mypy cannot know
            continue
        verdict = (float(confidence), status == ReviewItem.Status.APPROVED)
        by_task.setdefault(task_type, []).append(verdict)
        if agent:
            by_caller.setdefault((agent, task_type), []).append(verdict)
    return by_task, by_caller


class ReviewLoad:
    """Share of a task type's answered requests (in the window) scoring below a threshold."""

    def __init__(self, *, task_type: str, since: Any, agent: str = "") -> None:
        rows = AuditRecord.objects.filter(task_type=task_type)
        if agent:
            rows = rows.filter(agent=agent)
        self._rows = rows.filter(
            created_at__gte=since, confidence__isnull=False, status__in=ANSWERED
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


def validator_scores(
    since: datetime,
) -> tuple[dict[tuple[str, str], Scores], dict[tuple[str, str], int]]:
    """Per (task type, caller or ""): every validator's counted scores of decided answers, and
    how many were decided."""
    decided = (
        ReviewItem.objects.filter(decided_at__gte=since)
        .exclude(status=ReviewItem.Status.PENDING)
        .exclude(task_type="")
        .values_list("task_type", "audit_record__agent", "status", "audit_record__validation")
    )
    by_key: dict[tuple[str, str], Scores] = {}
    reviewed: dict[tuple[str, str], int] = {}
    for task_type, agent, status, validation in decided:
        accepted = status == ReviewItem.Status.APPROVED
        for key in ((task_type, ""), (task_type, agent)) if agent else ((task_type, ""),):
            reviewed[key] = reviewed.get(key, 0) + 1
            scores = by_key.setdefault(key, {})
            for name, score in counted_scores(validation):
                scores.setdefault(name, ([], []))[0 if accepted else 1].append(score)
    return by_key, reviewed


def counted_scores(validation: Any) -> list[tuple[str, float]]:
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


def _decided_by_tier(since: datetime) -> QuerySet[ReviewItem]:
    """Decided review items of routed task types with the tier that answered."""
    return (
        ReviewItem.objects.filter(decided_at__gte=since, tier__in=list(TIER_POSITIONS))
        .exclude(status=ReviewItem.Status.PENDING)
        .exclude(task_type__in=("", TaskRoute.DEFAULT))
    )


def tier_verdicts(since: datetime) -> dict[str, TierCounts]:
    """Per task type and tier: reviewed items approved as they were, and decided."""
    counts: dict[str, TierCounts] = {}
    decided = _decided_by_tier(since).values("task_type", "tier", "status").annotate(n=Count("id"))
    for row in decided:
        pair = counts.setdefault(row["task_type"], {}).setdefault(row["tier"], [0, 0])
        pair[1] += row["n"]
        if row["status"] == ReviewItem.Status.APPROVED:
            pair[0] += row["n"]
    return counts


def caller_tier_verdicts(since: datetime) -> dict[tuple[str, str], TierCounts]:
    """Per (agent, task type) and tier: reviewed items approved as they were, and decided."""
    counts: dict[tuple[str, str], TierCounts] = {}
    decided = (
        _decided_by_tier(since)
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
    return counts


def tier_usage(since: datetime, task_types: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per task type and tier: answered requests, their mean cost and mean latency."""
    usage: dict[str, dict[str, dict[str, Any]]] = {}
    rows = (
        AuditRecord.objects.filter(
            created_at__gte=since,
            task_type__in=task_types,
            tier__in=list(TIER_POSITIONS),
            status__in=ANSWERED,
        )
        .values("task_type", "tier")
        .annotate(requests=Count("id"), cost=Avg("cost_usd"), latency=Avg("latency_ms"))
    )
    for row in rows:
        usage.setdefault(row["task_type"], {})[row["tier"]] = row
    return usage
