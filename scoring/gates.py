"""Confidence gates and escalation rules (docs/adr/0003-confidence-gates-and-validators.md).

Below ``review_below`` an answer waits for a person (``pending_review``); from ``approve_at`` it is
``approved``; in between it is a ``warning``. On the fast and medium tiers an answer below
``escalate_below`` is asked of the next tier, within a step and a cost budget.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields

from providers.models import TIER_ORDER

from .tunables import TUNABLES

APPROVED = "approved"
WARNING = "warning"
PENDING_REVIEW = "pending_review"

ESCALATING_TIERS = ("fast", "medium")


@dataclass(frozen=True, slots=True)
class GateConfig:
    """The effective tunables for one task type."""

    review_below: float = TUNABLES["review_below"].default
    approve_at: float = TUNABLES["approve_at"].default
    escalate_below: float = TUNABLES["escalate_below"].default
    max_escalation_steps: float = TUNABLES["max_escalation_steps"].default
    max_escalation_cost_usd: float = TUNABLES["max_escalation_cost_usd"].default
    sample_warning: float = TUNABLES["sample_warning"].default
    sample_approved: float = TUNABLES["sample_approved"].default
    exploration_share: float = TUNABLES["exploration_share"].default
    sample_explored: float = TUNABLES["sample_explored"].default

    @classmethod
    def from_overrides(cls, *layers: dict[str, float]) -> GateConfig:
        """Defaults, then each layer of overrides in turn (global, then the task type's)."""
        values = {f.name: getattr(cls(), f.name) for f in fields(cls)}
        for layer in layers:
            values.update({k: v for k, v in layer.items() if k in values})
        return cls(**values)

    def status_for(self, confidence: float) -> str:
        if confidence < self.review_below:
            return PENDING_REVIEW
        if confidence >= self.approve_at:
            return APPROVED
        return WARNING

    def review_reason(self, status: str, *, explored: bool = False) -> str:
        """Why the answer goes to the review queue ("" when it does not). An answer from an
        exploration tier is sampled at ``sample_explored``: those reviews are the evidence the
        assignments cycle needs about that tier."""
        if status == PENDING_REVIEW:
            return "low_confidence"
        if explored and self.sample_explored > 0 and random.random() < self.sample_explored:
            return "explored"
        rate = self.sample_warning if status == WARNING else self.sample_approved
        return "sampled" if rate > 0 and random.random() < rate else ""

    def explore(self, tier: str, available: set[str]) -> str:
        """The tier to start at: usually ``tier``; for a small share, a neighbour that has
        deployments (docs/adr/0009)."""
        if self.exploration_share <= 0 or random.random() >= self.exploration_share:
            return tier
        index = TIER_ORDER.index(tier)
        neighbours = [
            TIER_ORDER[i]
            for i in (index - 1, index + 1)
            if 0 <= i < len(TIER_ORDER) and TIER_ORDER[i] in available
        ]
        return random.choice(neighbours) if neighbours else tier

    def may_escalate(self, *, confidence: float, tier: str, steps: int, cost_usd: float) -> bool:
        return (
            confidence < self.escalate_below
            and tier in ESCALATING_TIERS
            and steps < self.max_escalation_steps
            and cost_usd < self.max_escalation_cost_usd
        )
