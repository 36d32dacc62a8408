"""A request's bill: every upstream call the gateway makes for it, with its own tokens and cost.

A request may call several models: its answer, the escalations to bigger tiers, the second
opinion the agreement validator compares with, the classifier that named its task type. Each is
the caller's spend: the bill keeps every router attempt as it goes into the audit record (marked
with its ``purpose`` when it is not an answer), puts the tokens and cost of a call on the attempt
that answered it, and adds them up. The response's ``cost_usd`` and ``tokens``, the budget
settlement and the spend rollups (charged per attempt to the model that served it) all read the
same numbers. See docs/adr/0012-limits-and-budgets.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from providers.base import Usage

from .config import Deployment
from .router import Attempt

# Why a call that gave no answer to the caller was made (``purpose`` on its audit attempts).
SECOND_OPINION = "second_opinion"
CLASSIFICATION = "classification"


@dataclass(slots=True)
class Bill:
    """The upstream calls of one request, as audit attempts, and what they used in total."""

    attempts: list[dict[str, Any]] = field(default_factory=list)
    cost_usd: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out

    def record(self, attempts: Iterable[Attempt], *, purpose: str = "") -> list[dict[str, Any]]:
        """Add attempts that cost nothing (failures, skips); returns them as audit dicts."""
        step = [attempt.as_dict() for attempt in attempts]
        if purpose:
            for attempt in step:
                attempt["purpose"] = purpose
        self.attempts.extend(step)
        return step

    def note(self, entry: dict[str, Any], *, purpose: str = "") -> None:
        """Add an audit attempt the router did not make (a call given up before it began)."""
        self.attempts.append({**entry, "purpose": purpose} if purpose else entry)

    def charge(
        self,
        attempts: list[Attempt],
        deployment: Deployment,
        usage: Usage,
        *,
        purpose: str = "",
    ) -> tuple[list[dict[str, Any]], float]:
        """Add one answered call (the router's attempts; the last one answered): its tokens and
        cost go on that attempt. Returns the audit attempts and the cost.

        Costs are kept to 8 decimals per call, as stored, so the record's total is exactly the
        sum of its attempts' and the rollups charged per attempt add up to it.
        """
        cost = round(deployment.cost_usd(usage.input_tokens, usage.output_tokens), 8)
        step = self.record(attempts, purpose=purpose)
        step[-1].update(tokens_in=usage.input_tokens, tokens_out=usage.output_tokens, cost_usd=cost)
        self.cost_usd = round(self.cost_usd + cost, 8)
        self.tokens_in += usage.input_tokens
        self.tokens_out += usage.output_tokens
        return step, cost
