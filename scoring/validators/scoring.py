"""One confidence score from the validators' results (docs/adr/0003-confidence-gates-and-validators.md).

The confidence is 10 times the product of the counted scores (each scaled to 0..1) raised to their
weights, capped by the lowest decisive failure:

    confidence = min(10 * prod((score_i / 10) ** weight_i), min(score_d for decisive d))

A validator with nothing to say returns None and drops out; a passing one (10) multiplies by 1,
so neither changes the score. One finding at 5 gives 5 whatever else passed; two at 7 give 4.9.
A decisive failure caps the confidence at its own score (below 4) even when its weight is small.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from scoring.validators.base import AnswerContext, Validator, ValidatorResult, ValidatorSetting
from scoring.validators.registry import DEFAULT_SETTINGS, VALIDATORS

__all__ = ["DEFAULT_SETTINGS", "Confidence", "score_answer"]

logger = logging.getLogger("scoring.validators")

_reported: set[tuple[str, str]] = set()
_MAX_REPORTED: Final = 1000


@dataclass(frozen=True, slots=True)
class Confidence:
    """The confidence of one answer (0-10, two decimals) and every result that went into it."""

    score: float
    results: list[ValidatorResult]

    @property
    def capped_by(self) -> ValidatorResult | None:
        """The lowest counted decisive failure, if any: on its own it holds the score at or below
        its own (other findings may push it lower still)."""
        decisive = [r for r in self.results if r.decisive and r.weight > 0]
        return min(decisive, key=lambda r: r.score, default=None)

    def breakdown(self) -> list[dict[str, Any]]:
        """The results as JSON-ready dicts, as the audit record and the review queue store them."""
        return [result.as_dict() for result in self.results]


def _first_time(kind: str, name: str) -> bool:
    marker = (kind, name)
    if marker in _reported:
        return False
    if len(_reported) < _MAX_REPORTED:
        _reported.add(marker)
    return True


def _run(
    validator: Validator, setting: ValidatorSetting, context: AnswerContext
) -> ValidatorResult | None:
    """Run one validator; an exception becomes a result that is shown but not counted."""
    try:
        return validator(context, setting.params)
    except Exception as error:
        if _first_time(f"error:{type(error).__name__}", setting.name):
            logger.exception("validator %s failed; its result is not counted", setting.name)
        else:
            logger.warning("validator %s failed again: %r", setting.name, error)
        return ValidatorResult(
            name=setting.name,
            score=10.0,
            weight=0.0,
            reason=f"not counted: the validator failed ({type(error).__name__}: {error})"[:300],
        )


def _weight(setting: ValidatorSetting, result: ValidatorResult) -> float:
    weight = setting.weight * result.weight
    if not math.isfinite(weight) or weight < 0:
        if _first_time("weight", setting.name):
            logger.warning(
                "validator %s: weight %r is not usable; counted as 0", setting.name, setting.weight
            )
        return 0.0
    return weight


def score_answer(
    context: AnswerContext,
    settings: Sequence[ValidatorSetting] = DEFAULT_SETTINGS,
    *,
    validators: Mapping[str, Validator] | None = None,
) -> Confidence:
    """Run the enabled validators of ``settings`` on one answer and combine their scores.

    Never raises for a validator's sake: unknown names are skipped with a warning (logged once
    per name), and a validator that raises is recorded as not counted. ``validators`` replaces
    the registry (tests, plug-ins).
    """
    registry = VALIDATORS if validators is None else validators
    results: list[ValidatorResult] = []
    product = 1.0
    cap = 10.0
    for setting in settings:
        if not setting.enabled:
            continue
        validator = registry.get(setting.name)
        if validator is None:
            if _first_time("unknown", setting.name):
                logger.warning("unknown validator %r in the settings; skipped", setting.name)
            continue
        result = _run(validator, setting, context)
        if result is None:
            continue
        score = result.score if math.isfinite(result.score) else 0.0
        score = min(10.0, max(0.0, score))
        weight = _weight(setting, result)
        result = replace(result, score=score, weight=round(weight, 4))
        results.append(result)
        if weight > 0:
            product *= (score / 10.0) ** weight
            if result.decisive:
                cap = min(cap, score)
    return Confidence(score=round(min(10.0 * product, cap), 2), results=results)
