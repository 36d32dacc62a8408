"""Validators of an answer's shape: complete, of the expected length, valid JSON when JSON was asked.

Scores follow the scale of docs/adr/0003: 10 nothing found, 7-9 a blemish, 4-7 a warning-level
issue, below 4 a decisive failure that caps the confidence on its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar, Final

import orjson

from scoring.validators.base import AnswerContext, ValidatorResult
from scoring.validators.params import BuiltinValidator
from scoring.validators.text import count_words, parse_json

if TYPE_CHECKING:
    from jsonschema.protocols import Validator as SchemaValidator

# An empty text answer is fine when the model answered with a tool call instead.
_TOOL_FINISH: Final = frozenset({"tool_calls", "function_call"})
_JSON_TYPES: Final = frozenset({"json_object", "json_schema"})
_MAX_REASON: Final = 200


def _clip(text: str, limit: int = _MAX_REASON) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class CompletenessValidator(BuiltinValidator):
    """Empty, cut off, filtered or interrupted answers are decisive failures."""

    name: ClassVar[str] = "completeness"
    description: ClassVar[str] = (
        "The answer is not empty and was not cut off (token limit, content filter, broken stream)."
    )
    defaults: ClassVar[Mapping[str, Any]] = {
        # Fewer non-blank characters than this count as an empty answer.
        "min_chars": 1,
    }

    def __call__(self, context: AnswerContext, params: Mapping[str, Any]) -> ValidatorResult | None:
        text = context.output.strip()
        finish = context.finish_reason
        if not text and finish in _TOOL_FINISH:
            return None
        if finish == "content_filter":
            return self.result(1, "blocked by the provider's content filter", decisive=True)
        if not text:
            return self.result(0, "empty answer", decisive=True)
        if context.stream_interrupted:
            return self.result(2, "the stream broke off before the answer ended", decisive=True)
        if finish == "length":
            return self.result(
                2, "cut off at the token limit (finish_reason=length)", decisive=True
            )
        if finish == "error":
            return self.result(1, "the provider reported an error mid-answer", decisive=True)
        min_chars = self.param_int(params, "min_chars") or 1
        if len(text) < min_chars:
            return self.result(
                1, f"only {len(text)} characters (at least {min_chars} expected)", decisive=True
            )
        return self.result(10, f"complete (finish_reason={finish or 'unknown'})")


class LengthValidator(BuiltinValidator):
    """Outside the configured range is a warning, never decisive: short answers can be right."""

    name: ClassVar[str] = "length"
    description: ClassVar[str] = (
        "The answer's length is within the task type's range (min/max words or characters)."
    )
    defaults: ClassVar[Mapping[str, Any]] = {
        "min_words": None,
        "max_words": None,
        "min_chars": None,
        "max_chars": None,
    }
    # Within a factor of two of the range is "slightly" outside.
    SLIGHTLY_OUTSIDE: ClassVar[float] = 6.0
    FAR_OUTSIDE: ClassVar[float] = 4.0

    def __call__(self, context: AnswerContext, params: Mapping[str, Any]) -> ValidatorResult | None:
        bounds = {key: self.param_int(params, key) for key in self.defaults}
        if all(value is None for value in bounds.values()):
            return None
        text = context.output.strip()
        measured = {"words": count_words(text), "chars": len(text)}
        worst: tuple[float, str] | None = None
        for unit, actual in measured.items():
            low, high = bounds[f"min_{unit}"], bounds[f"max_{unit}"]
            problem: tuple[float, str] | None = None
            if low is not None and actual < low:
                ratio = actual / low
                problem = (ratio, f"{actual} {unit}, fewer than the minimum {low}")
            elif high is not None and actual > high > 0:
                ratio = high / actual
                problem = (ratio, f"{actual} {unit}, more than the maximum {high}")
            if problem is not None and (worst is None or problem[0] < worst[0]):
                worst = problem
        if worst is None:
            shown = ", ".join(f"{value} {unit}" for unit, value in measured.items())
            return self.result(10, f"within the expected range ({shown})")
        ratio, reason = worst
        score = self.SLIGHTLY_OUTSIDE if ratio >= 0.5 else self.FAR_OUTSIDE
        return self.result(score, reason)


def load_jsonschema() -> None:
    """Import jsonschema now (about 50 ms), not on the first answer checked against a schema."""
    import jsonschema.validators  # noqa: F401  (imported for its side effect: it is loaded)


def _schema_key(schema: Mapping[str, Any]) -> bytes:
    """A canonical byte string for a schema: equal schemas share one compiled validator."""
    try:
        return orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # a Mapping that is not a dict
        return json.dumps(schema, sort_keys=True, default=dict).encode()


@lru_cache(maxsize=256)
def _compiled_schema(key: bytes) -> SchemaValidator | str:
    """The validator for a schema (the draft its ``$schema`` names, else 2020-12), or why not."""
    # Imported on first use: jsonschema takes 50 ms to import and most processes never need it.
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    schema = orjson.loads(key)
    if not isinstance(schema, dict):
        return "the schema is not an object"
    cls = validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as error:
        return f"invalid schema: {_clip(error.message, 120)}"
    return cls(schema)


def _schema_verdict(schema: Mapping[str, Any], value: Any) -> str:
    """ "matches the schema", "does not match the schema at ...", or "schema not checked: ..."."""
    # Imported on first use, as in _compiled_schema (jsonschema pulls in referencing).
    from jsonschema.exceptions import best_match
    from referencing.exceptions import Unresolvable

    compiled = _compiled_schema(_schema_key(schema))
    if isinstance(compiled, str):
        return f"schema not checked: {compiled}"
    try:
        error = best_match(compiled.iter_errors(value))
    except Unresolvable as unresolvable:
        return f"schema not checked: {_clip(str(unresolvable), 120)}"
    if error is None:
        return "matches the schema"
    return f"does not match the schema at {error.json_path}: {_clip(error.message)}"


def _requested_schema(response_format: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if not response_format or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    if schema is None:  # some clients put it beside the type
        schema = response_format.get("schema")
    return schema if isinstance(schema, Mapping) else None


class JsonValidator(BuiltinValidator):
    """JSON that does not parse, or breaks the schema, is a decisive failure when JSON was asked."""

    name: ClassVar[str] = "json"
    description: ClassVar[str] = (
        "When JSON is expected (response_format or the task type), the answer parses as JSON "
        "and matches the schema."
    )
    defaults: ClassVar[Mapping[str, Any]] = {
        # The task type expects JSON even when the request has no response_format.
        "expect_json": False,
        # A JSON Schema every answer of the task type must match (besides the request's own).
        "schema": None,
        # A single ```json fence around the document costs a little; false makes it decisive.
        "allow_fence": True,
    }

    def __call__(self, context: AnswerContext, params: Mapping[str, Any]) -> ValidatorResult | None:
        response_format = context.response_format or {}
        format_type = response_format.get("type")
        schemas = [
            schema
            for schema in (
                _requested_schema(response_format),
                self.param_mapping(params, "schema"),
            )
            if schema is not None
        ]
        if (
            format_type not in _JSON_TYPES
            and not schemas
            and not self.param_bool(params, "expect_json")
        ):
            return None
        parsed = parse_json(context.output)
        if not parsed.ok:
            score = 0 if not context.output.strip() else 1
            return self.result(score, f"not valid JSON: {_clip(parsed.error)}", decisive=True)
        if format_type == "json_object" and not isinstance(parsed.value, dict):
            kind = type(parsed.value).__name__
            return self.result(2, f"valid JSON but a {kind}, not an object", decisive=True)
        notes = []
        for schema in schemas:
            verdict = _schema_verdict(schema, parsed.value)
            if verdict.startswith("does not match"):
                return self.result(2, verdict, decisive=True)
            notes.append(verdict)
        if parsed.fenced:
            if not self.param_bool(params, "allow_fence"):
                return self.result(2, "JSON wrapped in a ``` fence", decisive=True)
            notes.append("wrapped in a ``` fence that strict parsers reject")
        reason = "; ".join(["valid JSON", *notes])
        return self.result(8 if parsed.fenced else 10, reason)
