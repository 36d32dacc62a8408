"""Knobs: what steers the simulator's behaviour per model and per request (latency, errors,
broken streams, answer style, a share of plausibly wrong answers, rate limits...), their
validation, and the text forms they come in (``--model NAME:k=v,...`` and ``[[sim k=v]]``)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Final
from urllib.parse import unquote

from . import answers


class KnobError(ValueError):
    """A knob name or value is not understood."""


@dataclass(frozen=True, slots=True)
class Knobs:
    """The effective behaviour for one request (defaults < model config < directive)."""

    latency_ms: int = 0
    ttft_ms: int | None = None  # None: same as latency_ms
    token_interval_ms: int = 0
    chunk_words: int = 1
    status: int | None = None
    retry_after: str | None = None
    fail_times: int | None = None
    reset_after_chunks: int | None = None
    malformed: bool = False
    quality: str = "good"
    # (topic, rate) pairs: the probability that a good answer is plausibly wrong, by the first
    # topic the question contains; "*" is the fallback. Empty: never wrong.
    wrong_rate: tuple[tuple[str, float], ...] = ()
    language: str = "en"
    json: str | None = None
    reply: str | None = None
    words: int = answers.DEFAULT_WORDS
    # A rate limit of the model: this many requests / tokens, refilled steadily over
    # ratelimit_window_s (style "openai"; "cerebras": a fixed window that starts over). Reported
    # in the OpenAI and Anthropic dialects' rate-limit headers; only a request that finds it
    # already spent gets a 429 (in every dialect).
    ratelimit_requests: int | None = None
    ratelimit_tokens: int | None = None
    ratelimit_window_s: float = 60.0
    ratelimit_style: str = "openai"
    # False: the answer carries no token usage, as some servers send (the gateway must count).
    usage: bool = True

    @property
    def first_delay_ms(self) -> int:
        """Delay before the first stream chunk."""
        return self.latency_ms if self.ttft_ms is None else self.ttft_ms


KNOB_NAMES: Final = tuple(f.name for f in fields(Knobs))
DEFAULT_KNOBS: Final = Knobs()
RATELIMIT_STYLES: Final = ("openai", "cerebras")
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def make_knobs(config: Mapping[str, object]) -> Knobs:
    """Build :class:`Knobs` from settings already checked by :func:`parse_knobs`."""
    return Knobs(**config)  # type: ignore[arg-type]


def as_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    """An integer knob (or outage field) within its range."""
    if isinstance(value, bool):
        raise KnobError(f"{name} must be an integer")
    try:
        number = int(value) if isinstance(value, int | str) else int(str(value))
    except ValueError:
        raise KnobError(f"{name} must be an integer, got {value!r}") from None
    if number < minimum or (maximum is not None and number > maximum):
        raise KnobError(f"{name} is out of range: {number}")
    return number


def _as_choice(name: str, value: object, choices: Iterable[str]) -> str:
    text = str(value).lower()
    if text not in choices:
        raise KnobError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return text


def _as_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise KnobError(f"{name} must be true or false, got {value!r}")


def _as_seconds(name: str, value: object) -> str:
    try:
        seconds = float(str(value))
    except ValueError:
        raise KnobError(f"{name} must be a number of seconds, got {value!r}") from None
    if seconds < 0:
        raise KnobError(f"{name} must not be negative")
    return str(int(seconds)) if seconds.is_integer() else str(seconds)


def _as_positive(name: str, value: object) -> float:
    try:
        number = float(str(value))
    except ValueError:
        raise KnobError(f"{name} must be a number, got {value!r}") from None
    if not number > 0 or not math.isfinite(number):
        raise KnobError(f"{name} must be a positive number, got {value!r}")
    return number


def _as_rate(name: str, value: object) -> float:
    problem = f"{name} rates must be numbers from 0 to 1, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise KnobError(problem)
    try:
        rate = float(value)
    except ValueError:
        raise KnobError(problem) from None
    if not 0 <= rate <= 1:  # also rejects NaN
        raise KnobError(f"{name} rate is out of range (0 to 1): {value!r}")
    return rate


def _as_rates(name: str, value: object) -> tuple[tuple[str, float], ...]:
    """A rate (``0.1``) or rates per topic: a mapping, (topic, rate) pairs, or the text form
    ``python:0.5/summarize:0.02/*:0.1``. Topics are kept in order, lower-cased."""
    pairs: list[tuple[object, object]]
    if isinstance(value, str) and ":" in value:
        pairs = []
        for item in value.split("/"):
            word, sep, number = item.partition(":")
            if not sep:
                raise KnobError(
                    f"bad {name} item {item!r} in {value!r}: expected topic:rate "
                    "(e.g. python:0.5/*:0.1)"
                )
            pairs.append((word, number))
    elif isinstance(value, int | float | str):
        return (("*", _as_rate(name, value)),)
    elif isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, list | tuple) and all(
        isinstance(pair, list | tuple) and len(pair) == 2 for pair in value
    ):
        pairs = [(topic, rate) for topic, rate in value]
    else:
        raise KnobError(
            f"{name} must be a rate from 0 to 1 or rates per topic "
            f"(e.g. {{'python': 0.5, '*': 0.1}} or python:0.5/*:0.1), got {value!r}"
        )
    rates: dict[str, float] = {}
    for topic, rate in pairs:
        key = topic.strip().lower() if isinstance(topic, str) else ""
        if not key:
            raise KnobError(f"{name} topics must be non-empty words, got {topic!r}")
        if key in rates:
            raise KnobError(f"{name} names the topic {key!r} twice")
        rates[key] = _as_rate(name, rate)
    return tuple(rates.items())


def wrong_rate_for(rates: Iterable[tuple[str, float]], question: str) -> float:
    """The ``wrong_rate`` for ``question``: the first topic it contains (ignoring case) wins,
    then ``*``; no match gives 0."""
    lowered = question.lower()
    fallback = 0.0
    for topic, rate in rates:
        if topic == "*":
            fallback = rate
        elif topic in lowered:
            return rate
    return fallback


def _convert(name: str, value: object, *, decode: bool) -> object:
    """Validate one knob and convert it to its typed value."""
    if name in ("latency_ms", "ttft_ms", "token_interval_ms", "fail_times", "reset_after_chunks"):
        return as_int(name, value, 0)
    if name in ("chunk_words", "words", "ratelimit_requests", "ratelimit_tokens"):
        return as_int(name, value, 1)
    if name == "ratelimit_window_s":
        return _as_positive(name, value)
    if name == "ratelimit_style":
        return _as_choice(name, value, RATELIMIT_STYLES)
    if name == "status":
        return as_int(name, value, 100, 599)
    if name == "retry_after":
        return _as_seconds(name, value)
    if name in ("malformed", "usage"):
        return _as_bool(name, value)
    if name == "quality":
        return _as_choice(name, value, answers.QUALITIES)
    if name == "wrong_rate":
        return _as_rates(name, value)
    if name == "language":
        return _as_choice(name, value, answers.LANGUAGES)
    if name == "json":
        return _as_choice(name, value, answers.JSON_MODES)
    if name == "reply":
        text = str(value)
        return unquote(text) if decode else text
    raise KnobError(f"unknown simulator knob {name!r} (known: {', '.join(KNOB_NAMES)})")


def parse_knobs(raw: Mapping[str, object], *, decode: bool = False) -> dict[str, object]:
    """Validate knob settings and return them typed.

    ``decode`` URL-decodes ``reply`` (used for the text forms: directives and ``--model``).
    Raises :class:`KnobError` on an unknown knob or a bad value.
    """
    return {name: _convert(name, value, decode=decode) for name, value in raw.items()}


_SPEC_RE: Final = re.compile(r"^(?P<name>.+?)(?::(?P<knobs>[a-z_]+=.*))?$", re.DOTALL)


def parse_model_spec(spec: str) -> tuple[str, dict[str, object]]:
    """Parse ``NAME:key=value,key=value`` (the ``--model`` option) into a name and knobs.

    The name may itself contain colons (``llama3.2:1b:latency_ms=5``): the knobs start at the
    first colon followed by ``knob=``. Values are URL-decoded, so ``reply=a%2Cb`` gives ``a,b``.
    """
    match = _SPEC_RE.match(spec.strip())
    if match is None:
        raise KnobError(f"bad model spec {spec!r}")
    raw: dict[str, str] = {}
    for item in (match["knobs"] or "").split(","):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise KnobError(f"bad knob {item!r} in {spec!r}: expected key=value")
        raw[key.strip()] = value.strip()
    return match["name"], parse_knobs(raw, decode=True)


_DIRECTIVE_RE: Final = re.compile(r"\[\[sim(?:\s+([^\]]*))?\]\]")


def strip_directives(text: str, into: dict[str, object]) -> str:
    """Remove ``[[sim key=value ...]]`` directives from ``text``, merging their knobs ``into``."""

    def collect(match: re.Match[str]) -> str:
        raw: dict[str, str] = {}
        for token in (match[1] or "").split():
            key, sep, value = token.partition("=")
            if not sep:
                raise KnobError(f"bad directive token {token!r}: expected key=value")
            raw[key] = value
        into.update(parse_knobs(raw, decode=True))
        return ""

    return _DIRECTIVE_RE.sub(collect, text).strip()
