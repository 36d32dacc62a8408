"""What every cycle produces: a plan of proposed changes, with the data it used and its notes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from ..models import LearningChange

MIN_SAMPLE = 30  # decided review items a task type (or caller) needs before a cycle moves it
WINDOW = timedelta(days=14)  # how far back the cycles read reviews and audit records

Verdict = tuple[float, bool]
"""A reviewed answer: (its confidence, whether the reviewer approved it as it was)."""


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
class Plan:
    """One cycle's proposals, the data it read (kept on the run) and lines for its outcome."""

    proposals: list[Proposal] = field(default_factory=list)
    data_used: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def outcome_text(verb: str, plan: Plan, alerts: Sequence[str]) -> str:
    """A run's outcome: its alerts, the changes ``verb`` (applied, proposed...), then the notes."""
    lines = [*alerts]
    if plan.proposals:
        lines.append(f"{len(plan.proposals)} change(s) {verb}:")
        lines += [f"  {p.line()}" for p in plan.proposals]
    else:
        lines.append(f"no change ({verb})")
    lines += plan.notes
    return "\n".join(lines)


def pct(rate: float | None) -> str:
    """A rate as a whole percentage, ``n/a`` without one."""
    return "n/a" if rate is None else f"{rate:.0%}"
