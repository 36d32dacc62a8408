"""The built-in validators by name, the settings used when a task type configures none, and the
choices and parameter defaults the admin shows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from scoring.validators.agreement import AgreementValidator
from scoring.validators.base import Validator, ValidatorSetting
from scoring.validators.code import PARSEABLE, TAGS, CodeValidator
from scoring.validators.language import LanguageValidator, load_language_model
from scoring.validators.patterns import (
    RefusalValidator,
    RegexValidator,
    RepetitionValidator,
    compile_pattern,
)
from scoring.validators.structure import (
    CompletenessValidator,
    JsonValidator,
    LengthValidator,
    load_jsonschema,
)

VALIDATORS: Final[dict[str, Validator]] = {
    validator.name: validator
    for validator in (
        CompletenessValidator(),
        LanguageValidator(),
        JsonValidator(),
        RefusalValidator(),
        RepetitionValidator(),
        LengthValidator(),
        CodeValidator(),
        RegexValidator(),
        AgreementValidator(),
    )
}

# Every built-in with weight 1 and its documented defaults. The ones with nothing to judge drop
# out per answer: language without a requested language, json when no JSON was asked for, length
# and regex until the admin sets a range or patterns, code without a tagged code block, agreement
# without a second opinion.
DEFAULT_SETTINGS: Final[tuple[ValidatorSetting, ...]] = tuple(
    ValidatorSetting(name=name) for name in VALIDATORS
)


# The JSON types a parameter may take, by the type of its default...
_KINDS: Final[dict[type, tuple[type | tuple[type, ...], str]]] = {
    bool: (bool, "true or false"),
    int: ((int, float), "a number"),
    float: ((int, float), "a number"),
    str: (str, "a string"),
    list: ((list, str), "a list of strings"),
}
# ...or by name where the default is None.
_UNSET_KINDS: Final[dict[str, tuple[type | tuple[type, ...], str]]] = {
    **dict.fromkeys(
        ("min_words", "max_words", "min_chars", "max_chars"), ((int, float), "a number")
    ),
    "schema": (dict, "a JSON object (a JSON Schema)"),
}


def validator_choices() -> list[tuple[str, str]]:
    """(name, description) of every registered validator, for the admin's choice field."""
    return [(name, validator.description) for name, validator in VALIDATORS.items()]


def validator_defaults(name: str) -> dict[str, Any]:
    """The parameters a validator reads and their defaults ({} for an unknown name)."""
    validator = VALIDATORS.get(name)
    return dict(getattr(validator, "defaults", {})) if validator is not None else {}


def validator_param_problems(name: str, params: Mapping[str, Any]) -> list[str]:
    """What is wrong with a validator's parameters, for the admin form to show. The request path
    never fails on them: there a bad value is logged once and its default used instead."""
    validator = VALIDATORS.get(name)
    if validator is None:
        return [f"unknown validator {name!r}"]
    defaults: Mapping[str, Any] = getattr(validator, "defaults", {})
    problems = []
    for key, value in params.items():
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            problems.append(f"unknown parameter {key!r} (known: {known})")
            continue
        default = defaults[key]
        kind = _UNSET_KINDS.get(key) if default is None else _KINDS.get(type(default))
        if kind is None or value is None:
            continue
        types, wording = kind
        is_bool = isinstance(default, bool) or (default is None and types is bool)
        if isinstance(value, bool) != is_bool or not isinstance(value, types):
            problems.append(f"{key!r} should be {wording}, not {value!r}")
        elif isinstance(value, list) and not all(isinstance(item, str) for item in value):
            problems.append(f"{key!r} should be {wording}")
    if name == "code":
        for key in ("languages", "untagged_as"):
            value = params.get(key) or []
            for language in [value] if isinstance(value, str) else value:
                if isinstance(language, str) and language.strip().lower() not in TAGS:
                    problems.append(
                        f"{key!r}: cannot parse {language!r}; one of {sorted(PARSEABLE)}"
                    )
    if name == "regex":
        for key in ("must_match", "must_not_match"):
            patterns = params.get(key) or []
            for pattern in [patterns] if isinstance(patterns, str) else patterns:
                if isinstance(pattern, str):
                    compiled = compile_pattern(pattern, bool(params.get("ignore_case")))
                    if isinstance(compiled, str):
                        problems.append(compiled)
    return problems


def warm_up() -> None:
    """Load what the validators load lazily (the language model, jsonschema): about 150 ms once
    per process, better spent at start-up than inside the first request that needs them."""
    load_language_model()
    load_jsonschema()
