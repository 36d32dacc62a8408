"""What every validator sees and returns (docs/adr/0003-confidence-gates-and-validators.md).

A validator looks at one answer and returns a score from 0 (certainly bad) to 10 (certainly fine),
the weight its score should carry, and a short reason a reviewer can read. It returns ``None`` when
it has nothing to say about this answer (the language check without a requested language, the JSON
check when no JSON was asked for), so it neither helps nor hurts the confidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol


@dataclass(frozen=True, slots=True)
class AnswerContext:
    """One answer and what was asked."""

    task_type: str
    prompt: str  # the last user message
    output: str
    finish_reason: str  # "stop", "length", "content_filter", "error"
    language: str = ""  # requested answer language (ISO 639-1, e.g. "de"); "" when none
    # OpenAI-style response_format of the request, e.g. {"type": "json_object"} or
    # {"type": "json_schema", "json_schema": {"schema": {...}}}.
    response_format: Mapping[str, Any] | None = None
    stream_interrupted: bool = False
    # For the agreement check: another model's answer to the same request, when one was asked.
    second_opinion: str | None = None


@dataclass(frozen=True, slots=True)
class ValidatorResult:
    name: str
    score: float  # 0..10
    # >= 0. The scorer multiplies it by the setting's weight; 0 records the result for the reviewer
    # without counting it (a configuration problem, a validator that failed).
    weight: float
    reason: str
    # A decisive failure (empty, broken JSON, wrong language, refusal...) caps the confidence at
    # this score whatever the other validators say (docs/adr/0003).
    decisive: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "score": round(self.score, 2),
            "weight": self.weight,
            "reason": self.reason,
            "decisive": self.decisive,
        }


@dataclass(frozen=True, slots=True)
class ValidatorSetting:
    """How one validator runs for one task type (from the admin; defaults when not configured)."""

    name: str
    weight: float = 1.0
    enabled: bool = True
    params: Mapping[str, Any] = field(default_factory=dict)


class Validator(Protocol):
    """A check of one aspect of an answer; pure, fast (it runs on every answer) and stateless."""

    name: ClassVar[str]
    description: ClassVar[str]

    def __call__(
        self, context: AnswerContext, params: Mapping[str, Any]
    ) -> ValidatorResult | None: ...
