"""The scorer: how the validators' results combine into one confidence (docs/adr/0003)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest

from scoring.validators import (
    DEFAULT_SETTINGS,
    VALIDATORS,
    AnswerContext,
    Confidence,
    Validator,
    ValidatorResult,
    ValidatorSetting,
    score_answer,
    validator_choices,
    validator_defaults,
    validator_param_problems,
)
from simulator.answers import DEFAULT_WORDS, build_answer

QUESTION = "How does photosynthesis work in green plants?"
CLEAN = (
    "Photosynthesis is the process by which green plants turn sunlight, water and carbon dioxide "
    "into sugar and oxygen. It takes place in the chloroplasts, where chlorophyll absorbs light. "
    "The sugar feeds the plant and the oxygen is released into the air."
)
PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def context(output: str, **fields: Any) -> AnswerContext:
    fields.setdefault("task_type", "chat")
    fields.setdefault("prompt", QUESTION)
    fields.setdefault("finish_reason", "stop")
    return AnswerContext(output=output, **fields)


def with_params(**params: Mapping[str, Any]) -> list[ValidatorSetting]:
    """The default settings, with params for some validators."""
    return [
        ValidatorSetting(name=s.name, weight=s.weight, params=params.get(s.name, s.params))
        for s in DEFAULT_SETTINGS
    ]


def constant(validator_name: str, score: float | None, *, decisive: bool = False) -> Validator:
    """A test validator returning a fixed result (None: nothing to say)."""

    class Constant:
        name: ClassVar[str] = validator_name
        description: ClassVar[str] = "fixed"

        def __call__(
            self, context: AnswerContext, params: Mapping[str, Any]
        ) -> ValidatorResult | None:
            if score is None:
                return None
            return ValidatorResult(self.name, score, 1.0, "fixed", decisive=decisive)

    return Constant()


class Exploding:
    """A test validator that always raises."""

    name: ClassVar[str] = "exploding"
    description: ClassVar[str] = "raises"

    def __call__(self, context: AnswerContext, params: Mapping[str, Any]) -> ValidatorResult | None:
        raise RuntimeError("boom")


def test_clean_answer_is_approved():
    """A clean answer in the requested language, with every default validator, scores at least 7."""
    confidence = score_answer(context(CLEAN, language="en"))
    assert confidence.score >= 7
    assert {r.name for r in confidence.results} == {
        "completeness",
        "language",
        "refusal",
        "repetition",
    }


def test_clean_json_and_code_answers_are_approved():
    """Clean JSON matching its schema and a code answer that parses both score at least 7."""
    schema_format = {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON_SCHEMA}}
    assert (
        score_answer(context('{"name": "Ada", "age": 36}', response_format=schema_format)).score
        >= 7
    )
    code = CLEAN + "\n\n```python\ndef grow(light: float) -> float:\n    return light * 0.3\n```\n"
    assert score_answer(context(code, language="en")).score >= 7


DECISIVE_CASES: dict[str, tuple[dict[str, Any], dict[str, dict[str, Any]], str]] = {
    "empty": ({"output": ""}, {}, "completeness"),
    "truncated": ({"output": CLEAN, "finish_reason": "length"}, {}, "completeness"),
    "broken JSON": (
        {"output": '{"name": "Ada", "age": ', "response_format": {"type": "json_object"}},
        {},
        "json",
    ),
    "schema violation": (
        {
            "output": '{"name": "Ada", "age": "old"}',
            "response_format": {"type": "json_schema", "json_schema": {"schema": PERSON_SCHEMA}},
        },
        {},
        "json",
    ),
    "wrong language": ({"output": CLEAN, "language": "de"}, {}, "language"),
    "refusal": ({"output": "I'm sorry, but I can't help with that request."}, {}, "refusal"),
    "German refusal": (
        {"output": "Es tut mir leid, aber dabei kann ich nicht helfen."},
        {},
        "refusal",
    ),
    "code that does not parse": (
        {"output": CLEAN + "\n```python\ndef grow(light)\n    return light\n```"},
        {},
        "code",
    ),
    "failed must-match": ({"output": CLEAN}, {"regex": {"must_match": ["mitochondria"]}}, "regex"),
    "degenerate repetition": ({"output": CLEAN + " and so on" * 15}, {}, "repetition"),
}


@pytest.mark.parametrize("case", DECISIVE_CASES, ids=list(DECISIVE_CASES))
def test_each_decisive_failure_alone_goes_below_4(case):
    """One decisive failure pulls the confidence below 4 while every other validator is content."""
    fields, params, culprit = DECISIVE_CASES[case]
    confidence = score_answer(context(**fields), with_params(**params))
    assert confidence.score < 4, confidence.breakdown()
    assert confidence.capped_by is not None and confidence.capped_by.name == culprit
    others = [r for r in confidence.results if r.name != culprit and r.weight > 0]
    assert all(r.score >= 7 for r in others), confidence.breakdown()


def test_decisive_failure_caps_even_at_a_small_weight():
    """A decisive failure caps the confidence at its own score whatever its weight."""
    settings = [ValidatorSetting("refusal", weight=0.1), ValidatorSetting("completeness")]
    confidence = score_answer(context("I'm sorry, but I can't help with that."), settings)
    assert confidence.score == 1.0


MILD_CASES: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {
    "heavy hedging": (
        CLEAN
        + " I'm not sure, though, and I might be wrong; maybe check it, perhaps with an expert.",
        {},
    ),
    "AI disclaimer": ("As an AI language model, I have no garden. " + CLEAN, {}),
    "slightly too short": (CLEAN, {"length": {"min_words": 80}}),
    "one of two code blocks broken": (
        CLEAN
        + "\n```python\ndef grow(light)\n    return light\n```\nFixed:\n"
        + "```python\ndef grow(light):\n    return light\n```",
        {},
    ),
    "paragraph said twice": (CLEAN + "\n\n" + CLEAN, {}),
}


@pytest.mark.parametrize("case", MILD_CASES, ids=list(MILD_CASES))
def test_a_mild_issue_lands_in_the_warning_band(case):
    """One mild issue lowers the confidence into 4-7 (a warning), not below 4."""
    output, params = MILD_CASES[case]
    confidence = score_answer(context(output, language="en"), with_params(**params))
    assert 4 <= confidence.score < 7, confidence.breakdown()
    assert confidence.capped_by is None


def test_findings_multiply():
    """Counted scores multiply as fractions of 10, weights as exponents: 5 and 6 give 3."""
    registry = {"a": constant("a", 5.0), "b": constant("b", 6.0), "c": constant("c", 10.0)}
    settings = [ValidatorSetting("a"), ValidatorSetting("b"), ValidatorSetting("c")]
    assert score_answer(context(CLEAN), settings, validators=registry).score == 3.0
    doubled = [ValidatorSetting("a", weight=2.0)]
    assert score_answer(context(CLEAN), doubled, validators=registry).score == 2.5
    halved = [ValidatorSetting("a", weight=0.5)]
    assert score_answer(context(CLEAN), halved, validators=registry).score == pytest.approx(7.07)


def test_not_applicable_validators_do_not_change_the_score():
    """Validators returning None, and validators that pass, leave the score as it was."""
    registry = {
        "mild": constant("mild", 6.0),
        "silent": constant("silent", None),
        "pass": constant("pass", 10.0),
    }
    alone = score_answer(context(CLEAN), [ValidatorSetting("mild")], validators=registry)
    together = score_answer(
        context(CLEAN),
        [ValidatorSetting("mild"), ValidatorSetting("silent"), ValidatorSetting("pass")],
        validators=registry,
    )
    assert alone.score == together.score == 6.0
    assert [r.name for r in together.results] == ["mild", "pass"]
    # The built-ins alike: json, length, code, regex and agreement have nothing to say here.
    defaults = score_answer(context(CLEAN, language="en"))
    only_applicable = score_answer(
        context(CLEAN, language="en"),
        [ValidatorSetting(n) for n in ("completeness", "language", "refusal", "repetition")],
    )
    assert defaults.score == only_applicable.score


def test_a_validator_that_raises_does_not_break_scoring(caplog):
    """An exception inside a validator is logged and recorded with weight 0; the rest still counts."""
    registry = {**VALIDATORS, "exploding": Exploding()}
    settings = [*DEFAULT_SETTINGS, ValidatorSetting("exploding")]
    with caplog.at_level(logging.WARNING, logger="scoring.validators"):
        confidence = score_answer(context(CLEAN, language="en"), settings, validators=registry)
        score_answer(context(CLEAN, language="en"), settings, validators=registry)
    assert confidence.score == score_answer(context(CLEAN, language="en")).score
    failed = next(r for r in confidence.results if r.name == "exploding")
    assert failed.weight == 0 and "RuntimeError: boom" in failed.reason
    assert "validator exploding failed" in caplog.text


def test_unknown_validator_names_are_skipped_with_a_warning(caplog):
    """A setting naming no registered validator is ignored, with a logged warning."""
    settings = [*DEFAULT_SETTINGS, ValidatorSetting("no-such-validator")]
    with caplog.at_level(logging.WARNING, logger="scoring.validators"):
        confidence = score_answer(context(CLEAN), settings)
    assert confidence.score == score_answer(context(CLEAN)).score
    assert "no-such-validator" in caplog.text


def test_disabled_settings_and_zero_weights():
    """Disabled settings do not run; a weight of 0 shows the result without counting it."""
    output = "I'm sorry, but I can't help with that."
    disabled = [ValidatorSetting("completeness"), ValidatorSetting("refusal", enabled=False)]
    assert score_answer(context(output), disabled).score == 10
    observed = [ValidatorSetting("completeness"), ValidatorSetting("refusal", weight=0)]
    confidence = score_answer(context(output), observed)
    assert confidence.score == 10
    assert confidence.results[1].decisive and confidence.results[1].weight == 0


def test_confidence_breakdown_is_json_ready():
    """The breakdown lists each result's name, score (2 decimals), weight, reason and decisiveness."""
    confidence = score_answer(context("I'm sorry, but I can't help with that."))
    assert isinstance(confidence, Confidence)
    refusal = next(item for item in confidence.breakdown() if item["name"] == "refusal")
    assert refusal == {
        "name": "refusal",
        "score": 1.0,
        "weight": 1.0,
        "reason": refusal["reason"],
        "decisive": True,
    }
    assert confidence.score == round(confidence.score, 2)


def test_registry_and_admin_helpers():
    """All nine built-ins are registered, run by default, and offered to the admin with their defaults."""
    names = [
        "completeness",
        "language",
        "json",
        "refusal",
        "repetition",
        "length",
        "code",
        "regex",
        "agreement",
    ]
    assert list(VALIDATORS) == names
    assert [s.name for s in DEFAULT_SETTINGS] == names
    assert all(s.enabled and s.weight == 1.0 for s in DEFAULT_SETTINGS)
    choices = validator_choices()
    assert [name for name, _ in choices] == names and all(text for _, text in choices)
    assert validator_defaults("length") == {
        "min_words": None,
        "max_words": None,
        "min_chars": None,
        "max_chars": None,
    }
    assert validator_defaults("nope") == {}


# The upstream simulator: the end-to-end tests rely on its good answers being approved and its bad
# ones going to review.


@pytest.mark.parametrize("words", [DEFAULT_WORDS, 100])
@pytest.mark.parametrize("language", ["en", "de", "fr", "es"])
def test_simulator_good_answers_are_approved(language, words):
    """Simulator quality=good answers score at least 7 in every language."""
    output = build_answer(QUESTION, quality="good", language=language, words=words)
    assert score_answer(context(output, language=language)).score >= 7


@pytest.mark.parametrize("words", [DEFAULT_WORDS, 100])
@pytest.mark.parametrize("language", ["en", "de", "fr", "es"])
def test_simulator_bad_answers_go_to_review(language, words):
    """Simulator quality=bad answers (a refusal stuck in a loop) score below 4 in every language."""
    output = build_answer(QUESTION, quality="bad", language=language, words=words)
    assert score_answer(context(output, language=language)).score < 4


@pytest.mark.parametrize("language", ["en", "de", "fr", "es"])
def test_simulator_json_valid_approved_broken_to_review(language):
    """Simulator json=valid answers to a JSON request score at least 7, json=broken below 4."""
    json_format = {"type": "json_object"}
    valid = build_answer(QUESTION, language=language, json_mode="valid")
    broken = build_answer(QUESTION, language=language, json_mode="broken")
    assert score_answer(context(valid, language=language, response_format=json_format)).score >= 7
    assert score_answer(context(broken, language=language, response_format=json_format)).score < 4


def test_param_problems_for_the_admin():
    """The admin learns of unknown parameters, wrong types, bad patterns and unparseable languages."""
    assert validator_param_problems("length", {"min_words": 10}) == []
    problems = validator_param_problems("length", {"max_word": 5, "max_chars": "many"})
    assert len(problems) == 2 and "unknown parameter 'max_word'" in problems[0]
    assert "invalid pattern" in validator_param_problems("regex", {"must_match": ["(bad"]})[0]
    assert "cannot parse 'rust'" in validator_param_problems("code", {"languages": ["rust"]})[0]
    assert validator_param_problems("refusal", {"check_hedging": "yes"}) == [
        "'check_hedging' should be true or false, not 'yes'"
    ]
    assert validator_param_problems("nope", {}) == ["unknown validator 'nope'"]
