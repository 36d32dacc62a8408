"""Validators score every answer 0-10; the scorer combines them into one confidence.

The public API: ``score_answer(context, settings) -> Confidence``, the registry ``VALIDATORS``,
``DEFAULT_SETTINGS``, ``validator_choices()``, ``validator_defaults(name)`` and
``validator_param_problems(name, params)`` for the admin, and
``warm_up()`` to load the language model and jsonschema before the first answer needs them.
"""

from scoring.validators.base import AnswerContext, Validator, ValidatorResult, ValidatorSetting
from scoring.validators.registry import (
    DEFAULT_SETTINGS,
    VALIDATORS,
    validator_choices,
    validator_defaults,
    validator_param_problems,
    warm_up,
)
from scoring.validators.scoring import Confidence, score_answer

__all__ = [
    "DEFAULT_SETTINGS",
    "VALIDATORS",
    "AnswerContext",
    "Confidence",
    "Validator",
    "ValidatorResult",
    "ValidatorSetting",
    "score_answer",
    "validator_choices",
    "validator_defaults",
    "validator_param_problems",
    "warm_up",
]
