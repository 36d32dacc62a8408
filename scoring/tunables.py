"""Tunables: numbers that steer the gates, declared here with a default and a description.

The database stores overrides (globally or per task type) with their history; an override for a
task type beats the global one, which beats the default. Learning cycles will move some of them.
See docs/adr/0003-confidence-gates-and-validators.md.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Tunable:
    name: str
    default: float
    description: str
    minimum: float
    maximum: float


TUNABLES: dict[str, Tunable] = {
    t.name: t
    for t in (
        Tunable(
            "review_below",
            4.0,
            "Answers scoring below this go to human review (status pending_review).",
            0,
            10,
        ),
        Tunable(
            "approve_at",
            7.0,
            "Answers scoring at least this are approved; between the two they are a warning.",
            0,
            10,
        ),
        Tunable(
            "escalate_below",
            5.0,
            "On the fast or medium tier, an answer scoring below this is asked of the next tier.",
            0,
            10,
        ),
        Tunable(
            "max_escalation_steps",
            2,
            "How many times one request may be escalated to a bigger tier.",
            0,
            3,
        ),
        Tunable(
            "max_escalation_cost_usd",
            0.05,
            "No further escalation once a request has cost this much (USD).",
            0,
            100,
        ),
        Tunable(
            "sample_warning",
            0.1,
            "Share of warning answers also sent to review, so learning sees that band.",
            0,
            1,
        ),
        Tunable(
            "exploration_share",
            0.05,
            "Share of a task type's routed requests started one tier up or down, so the "
            "assignments cycle keeps fresh evidence about the neighbouring tiers.",
            0,
            0.5,
        ),
        Tunable(
            "sample_explored",
            0.5,
            "Share of the answers of exploration traffic sent to review: the evidence the "
            "assignments cycle needs about the neighbouring tiers.",
            0,
            1,
        ),
        Tunable(
            "sample_approved",
            0.02,
            "Share of approved answers also sent to review (audit sampling).",
            0,
            1,
        ),
    )
}
