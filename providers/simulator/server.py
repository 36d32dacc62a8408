"""An aiohttp server that impersonates LLM providers on their real wire protocols.

One process speaks four dialects side by side:

* OpenAI     ``POST /v1/chat/completions``, ``GET /v1/models``
* Ollama     ``POST /api/chat``, ``GET /api/tags``, ``GET /api/version``, ``GET /``
* Anthropic  ``POST /v1/messages`` (``GET /v1/models`` when ``anthropic-version`` is sent)
* Gemini     ``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent``
  (SSE with ``?alt=sse``, otherwise a streamed JSON array), ``GET /v1beta/models``

Behaviour is steered by *knobs* (latency, errors, broken streams, answer style, a share of
plausibly wrong answers, rate limits reported in the providers' headers...), set per model at start,
through the control API under ``/_sim/``, or per request with a ``[[sim key=value]]`` directive
inside any message. An outage (``PUT /_sim/outage``) makes every provider endpoint of some or all
protocols answer an error, model lists included, as a provider that is down does. Answers are
deterministic, except that ``wrong_rate`` draws per request
whether a good answer is the wrong variant (``answers.is_wrong`` tells). The module never imports
Django so it can run standalone; it is the baseline the gateway is benchmarked against, so the
request path avoids logging and per-request work that can be done once.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import random
import re
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, ClassVar, Final
from urllib.parse import unquote

import orjson
from aiohttp import web

from . import answers

__all__ = [
    "SIMULATOR",
    "KnobError",
    "Knobs",
    "Simulator",
    "build_app",
    "parse_knobs",
    "parse_model_spec",
    "run",
    "start_in_background",
    "wrong_rate_for",
]

PROTOCOLS: Final = ("openai", "ollama", "anthropic", "gemini")

# --------------------------------------------------------------------------------------------
# Knobs
# --------------------------------------------------------------------------------------------


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
_DEFAULT_KNOBS: Final = Knobs()
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def _as_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
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


RATELIMIT_STYLES: Final = ("openai", "cerebras")


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
        return _as_int(name, value, 0)
    if name in ("chunk_words", "words", "ratelimit_requests", "ratelimit_tokens"):
        return _as_int(name, value, 1)
    if name == "ratelimit_window_s":
        return _as_positive(name, value)
    if name == "ratelimit_style":
        return _as_choice(name, value, RATELIMIT_STYLES)
    if name == "status":
        return _as_int(name, value, 100, 599)
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


# --------------------------------------------------------------------------------------------
# Request / answer model shared by the dialects
# --------------------------------------------------------------------------------------------


class BadRequest(ValueError):
    """The request body cannot be understood (answered with a 400 in the dialect's format)."""


@dataclass(slots=True)
class Chat:
    """A chat request, reduced to what the simulator needs."""

    model: str
    messages: list[tuple[str, str]]  # (role, text), system prompt included
    stream: bool
    max_tokens: int | None = None
    json_requested: bool = False
    stops: tuple[str, ...] = ()
    include_usage: bool = False


@dataclass(frozen=True, slots=True)
class Completion:
    """The answer to one request, ready to be framed by a dialect."""

    id: str
    model: str
    created: int
    text: str
    finish: str  # "stop", "length" or "stop_sequence"
    stop_sequence: str | None
    input_tokens: int
    output_tokens: int
    include_usage: bool
    duration_ns: int
    report_usage: bool = True


def _text_of(content: object) -> str:
    """Text of a message content: a string, or a list of parts/blocks carrying ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        ]
        return "\n".join(texts)
    return ""


def _stops(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(s for s in value if isinstance(s, str))
    return ()


def _limit(value: object) -> int | None:
    """A max-tokens field; absent or negative (Ollama's "unlimited") means no limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"max tokens must be an integer, got {value!r}")
    return int(value) if value >= 0 else None


def _model_of(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required")
    return model


def _messages_of(body: Mapping[str, Any]) -> list[Any]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array")
    return messages


# orjson escapes the NUL characters, so this marker can never come out of a real payload.
_SENTINEL: Final = "\x00sim-delta\x00"
_SENTINEL_JSON: Final = orjson.dumps(_SENTINEL)


def _template(payload: object) -> tuple[bytes, bytes]:
    """Encode ``payload`` (holding the sentinel where the delta text goes) once.

    Returns the bytes before and after the sentinel, so each stream chunk costs one small
    ``orjson.dumps`` of its text instead of encoding the whole object again.
    """
    before, _, after = orjson.dumps(payload).partition(_SENTINEL_JSON)
    return before, after


def _now_rfc3339() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


_STATUS_MESSAGES: Final = {
    400: "Invalid request.",
    401: "Invalid API key.",
    403: "Permission denied.",
    404: "The requested model was not found.",
    408: "Request timed out.",
    413: "Request too large.",
    429: "Rate limit reached, please retry later.",
    500: "The server had an error while processing your request.",
    502: "Bad gateway.",
    503: "The service is temporarily unavailable.",
    504: "Deadline exceeded.",
    529: "Overloaded.",
}


def _status_message(status: int) -> str:
    return _STATUS_MESSAGES.get(status, f"Simulated upstream error (HTTP {status}).")


# --------------------------------------------------------------------------------------------
# Rate limits
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Budget:
    """One simulated rate limit of a model: ``capacity`` units that refill steadily over
    ``window`` seconds (a token bucket, as OpenAI, Groq and Anthropic describe theirs), or, when
    ``fixed``, come back all at once when the window starts over (Cerebras' per-day windows)."""

    capacity: int
    window: float
    fixed: bool
    level: float
    since: float  # monotonic: last refill (bucket) or start of the window (fixed)

    def refresh(self, now: float) -> None:
        if self.fixed:
            if now - self.since >= self.window:
                elapsed_windows = (now - self.since) // self.window
                self.since += elapsed_windows * self.window
                self.level = float(self.capacity)
        else:
            refill = (now - self.since) * self.capacity / self.window
            self.level = min(float(self.capacity), self.level + refill)
            self.since = now

    @property
    def remaining(self) -> int:
        return max(0, math.floor(self.level + 1e-9))

    def reset_in(self, now: float) -> float:
        """Seconds until the budget is whole again (bucket) or starts over (fixed)."""
        if self.fixed:
            return max(0.0, self.since + self.window - now)
        return (self.capacity - self.level) * self.window / self.capacity

    def available_in(self, now: float) -> float:
        """Seconds until one unit is available."""
        if self.level >= 1:
            return 0.0
        if self.fixed:
            return self.reset_in(now)
        return (1 - self.level) * self.window / self.capacity

    def take(self, amount: int) -> None:
        # Never below zero: what one answer overdraws is forgiven, so what the headers say is
        # never more than what the next request finds.
        self.level = max(0.0, self.level - amount)


def go_duration(seconds: float) -> str:
    """A Go-style duration as OpenAI writes resets (``20ms``, ``1.5s``, ``6m0s``), rounded up to
    the millisecond so a client that trusts it is never early."""
    ms = math.ceil(seconds * 1000 - 1e-6)
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def rfc3339_after(seconds: float) -> str:
    """The wall-clock time ``seconds`` from now, rounded up to the second, as Anthropic writes
    resets."""
    when = datetime.fromtimestamp(math.ceil(time.time() + seconds), UTC)
    return when.isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------
# Dialects: one per wire protocol
# --------------------------------------------------------------------------------------------


class Dialect:
    """How one provider frames requests, answers, streams and errors."""

    name: ClassVar[str]
    stream_content_type: ClassVar[str] = "text/event-stream"
    # What ends one stream frame; used to terminate a deliberately broken frame.
    frame_end: ClassVar[bytes] = b"\n\n"

    def parse(self, body: Mapping[str, Any], request: web.Request) -> Chat:
        """Reduce a request body to a :class:`Chat`; raises :class:`BadRequest`."""
        raise NotImplementedError

    def error_payload(self, status: int, message: str) -> object:
        """The JSON error body for ``status``."""
        raise NotImplementedError

    def response(self, done: Completion) -> object:
        """The JSON body of a non-streamed answer."""
        raise NotImplementedError

    def stream(self, done: Completion, deltas: list[str]) -> tuple[bytes, list[bytes], bytes]:
        """Frame a streamed answer as (preamble, one frame per delta, terminator)."""
        raise NotImplementedError

    def error(
        self,
        status: int,
        message: str | None = None,
        retry_after: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        """An HTTP error response in this dialect's format."""
        body = orjson.dumps(self.error_payload(status, message or _status_message(status)))
        extra = dict(headers or {})
        if retry_after is not None:
            extra["Retry-After"] = retry_after
        return web.Response(
            status=status, body=body, content_type="application/json", headers=extra or None
        )

    def ratelimit_headers(
        self, budgets: Mapping[str, Budget], style: str, now: float
    ) -> dict[str, str]:
        """The rate-limit headers this provider sends ("requests"/"tokens" budgets); none by
        default (Ollama and Gemini send none)."""
        return {}

    def broken_stream(self, done: Completion, deltas: list[str]) -> bytes:
        """A stream whose first data frame is cut in the middle of its JSON, then nothing."""
        head, frames, tail = self.stream(done, deltas)
        frame = frames[0] if frames else tail
        start = max(frame.find(b"{"), 0)
        return head + frame[: start + (len(frame) - start) // 2] + self.frame_end


def _sse(payload: object, event: str | None = None) -> bytes:
    data = b"data: " + orjson.dumps(payload) + b"\n\n"
    return b"event: " + event.encode() + b"\n" + data if event else data


class OpenAI(Dialect):
    """OpenAI Chat Completions."""

    name = "openai"

    def ratelimit_headers(
        self, budgets: Mapping[str, Budget], style: str, now: float
    ) -> dict[str, str]:
        headers: dict[str, str] = {}
        for kind, budget in budgets.items():
            if style == "cerebras":
                # Cerebras names the window and gives the reset in seconds.
                suffix = "-day" if kind == "requests" else "-minute"
                reset = f"{budget.reset_in(now) + 1e-6:.6f}"
            else:
                suffix, reset = "", go_duration(budget.reset_in(now))
            headers[f"x-ratelimit-limit-{kind}{suffix}"] = str(budget.capacity)
            headers[f"x-ratelimit-remaining-{kind}{suffix}"] = str(budget.remaining)
            headers[f"x-ratelimit-reset-{kind}{suffix}"] = reset
        return headers

    def parse(self, body: Mapping[str, Any], request: web.Request) -> Chat:
        messages = [
            (str(m.get("role", "user")), _text_of(m.get("content")))
            for m in _messages_of(body)
            if isinstance(m, dict)
        ]
        response_format = body.get("response_format")
        options = body.get("stream_options")
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        return Chat(
            model=_model_of(body),
            messages=messages,
            stream=body.get("stream") is True,
            max_tokens=_limit(limit),
            json_requested=isinstance(response_format, dict)
            and response_format.get("type") in ("json_object", "json_schema"),
            stops=_stops(body.get("stop")),
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        )

    def error_payload(self, status: int, message: str) -> object:
        if status == 401:
            kind, code = "invalid_request_error", "invalid_api_key"
        elif status == 404:
            kind, code = "invalid_request_error", "model_not_found"
        elif status == 429:
            kind, code = "requests", "rate_limit_exceeded"
        elif status >= 500:
            kind, code = "server_error", None
        else:
            kind, code = "invalid_request_error", None
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    @staticmethod
    def _finish(done: Completion) -> str:
        return "length" if done.finish == "length" else "stop"

    def _usage(self, done: Completion) -> dict[str, int]:
        return {
            "prompt_tokens": done.input_tokens,
            "completion_tokens": done.output_tokens,
            "total_tokens": done.input_tokens + done.output_tokens,
        }

    def response(self, done: Completion) -> object:
        return {
            "id": done.id,
            "object": "chat.completion",
            "created": done.created,
            "model": done.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": done.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": self._finish(done),
                }
            ],
            **({"usage": self._usage(done)} if done.report_usage else {}),
            "system_fingerprint": "fp_simulator",
        }

    def stream(self, done: Completion, deltas: list[str]) -> tuple[bytes, list[bytes], bytes]:
        base = {
            "id": done.id,
            "object": "chat.completion.chunk",
            "created": done.created,
            "model": done.model,
            "system_fingerprint": "fp_simulator",
        }

        def chunk(delta: object, finish: str | None) -> dict[str, object]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**base, "choices": [choice]}

        head = _sse(chunk({"role": "assistant", "content": "", "refusal": None}, None))
        before, after = _template(chunk({"content": _SENTINEL}, None))
        frames = [b"data: " + before + orjson.dumps(d) + after + b"\n\n" for d in deltas]
        tail = _sse(chunk({}, self._finish(done)))
        if done.include_usage and done.report_usage:
            tail += _sse({**base, "choices": [], "usage": self._usage(done)})
        return head, frames, tail + b"data: [DONE]\n\n"


class Ollama(Dialect):
    """Ollama's native chat API (NDJSON streaming, on by default)."""

    name = "ollama"
    stream_content_type = "application/x-ndjson"
    frame_end = b"\n"

    def parse(self, body: Mapping[str, Any], request: web.Request) -> Chat:
        messages = [
            (str(m.get("role", "user")), _text_of(m.get("content")))
            for m in _messages_of(body)
            if isinstance(m, dict)
        ]
        options = body.get("options")
        options = options if isinstance(options, dict) else {}
        fmt = body.get("format")
        return Chat(
            model=_model_of(body),
            messages=messages,
            stream=body.get("stream", True) is not False,
            max_tokens=_limit(options.get("num_predict")),
            json_requested=fmt == "json" or isinstance(fmt, dict),
            stops=_stops(options.get("stop")),
        )

    def error_payload(self, status: int, message: str) -> object:
        return {"error": message}

    def _final(self, done: Completion, created_at: str, content: str) -> dict[str, object]:
        # Durations are the planned delays (not measured), so the object is reproducible.
        prompt_ns = done.duration_ns // 4
        return {
            "model": done.model,
            "created_at": created_at,
            "message": {"role": "assistant", "content": content},
            "done_reason": "length" if done.finish == "length" else "stop",
            "done": True,
            "total_duration": done.duration_ns,
            "load_duration": 0,
            "prompt_eval_duration": prompt_ns,
            "eval_duration": done.duration_ns - prompt_ns,
            **(
                {"prompt_eval_count": done.input_tokens, "eval_count": done.output_tokens}
                if done.report_usage
                else {}
            ),
        }

    def response(self, done: Completion) -> object:
        return self._final(done, _now_rfc3339(), done.text)

    def stream(self, done: Completion, deltas: list[str]) -> tuple[bytes, list[bytes], bytes]:
        created_at = _now_rfc3339()
        before, after = _template(
            {
                "model": done.model,
                "created_at": created_at,
                "message": {"role": "assistant", "content": _SENTINEL},
                "done": False,
            }
        )
        frames = [before + orjson.dumps(d) + after + b"\n" for d in deltas]
        tail = orjson.dumps(self._final(done, created_at, "")) + b"\n"
        return b"", frames, tail


class Anthropic(Dialect):
    """Anthropic Messages API."""

    name = "anthropic"

    def ratelimit_headers(
        self, budgets: Mapping[str, Budget], style: str, now: float
    ) -> dict[str, str]:
        headers: dict[str, str] = {}
        for kind, budget in budgets.items():
            headers[f"anthropic-ratelimit-{kind}-limit"] = str(budget.capacity)
            headers[f"anthropic-ratelimit-{kind}-remaining"] = str(budget.remaining)
            headers[f"anthropic-ratelimit-{kind}-reset"] = rfc3339_after(budget.reset_in(now))
        return headers

    def parse(self, body: Mapping[str, Any], request: web.Request) -> Chat:
        if "max_tokens" not in body:
            raise BadRequest("max_tokens: Field required")
        messages: list[tuple[str, str]] = []
        system = _text_of(body.get("system"))
        if system:
            messages.append(("system", system))
        messages.extend(
            (str(m.get("role", "user")), _text_of(m.get("content")))
            for m in _messages_of(body)
            if isinstance(m, dict)
        )
        return Chat(
            model=_model_of(body),
            messages=messages,
            stream=body.get("stream") is True,
            max_tokens=_limit(body.get("max_tokens")),
            stops=_stops(body.get("stop_sequences")),
        )

    def error_payload(self, status: int, message: str) -> object:
        kinds = {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            413: "request_too_large",
            429: "rate_limit_error",
            529: "overloaded_error",
        }
        default = "api_error" if status >= 500 else "invalid_request_error"
        return {"type": "error", "error": {"type": kinds.get(status, default), "message": message}}

    @staticmethod
    def _stop_reason(done: Completion) -> str:
        return {"length": "max_tokens", "stop_sequence": "stop_sequence"}.get(
            done.finish, "end_turn"
        )

    @staticmethod
    def _usage(done: Completion, output_tokens: int) -> dict[str, object]:
        if not done.report_usage:
            return {}
        return {"usage": {"input_tokens": done.input_tokens, "output_tokens": output_tokens}}

    def response(self, done: Completion) -> object:
        return {
            "id": done.id,
            "type": "message",
            "role": "assistant",
            "model": done.model,
            "content": [{"type": "text", "text": done.text}],
            "stop_reason": self._stop_reason(done),
            "stop_sequence": done.stop_sequence,
            **self._usage(done, done.output_tokens),
        }

    def stream(self, done: Completion, deltas: list[str]) -> tuple[bytes, list[bytes], bytes]:
        message: dict[str, object] = {
            "id": done.id,
            "type": "message",
            "role": "assistant",
            "model": done.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            **self._usage(done, 1),
        }
        head = (
            _sse({"type": "message_start", "message": message}, "message_start")
            + _sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            )
            + _sse({"type": "ping"}, "ping")
        )
        before, after = _template(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": _SENTINEL},
            }
        )
        prefix = b"event: content_block_delta\ndata: " + before
        frames = [prefix + orjson.dumps(d) + after + b"\n\n" for d in deltas]
        tail = (
            _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
            + _sse(
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": self._stop_reason(done),
                        "stop_sequence": done.stop_sequence,
                    },
                    **(
                        {"usage": {"output_tokens": done.output_tokens}}
                        if done.report_usage
                        else {}
                    ),
                },
                "message_delta",
            )
            + _sse({"type": "message_stop"}, "message_stop")
        )
        return head, frames, tail


_GEMINI_STATUS: Final = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class Gemini(Dialect):
    """Google Gemini ``generateContent`` / ``streamGenerateContent?alt=sse``."""

    name = "gemini"
    # Without alt=sse Gemini streams one JSON array, element by element (see GeminiArray).
    sse: ClassVar[bool] = True

    def parse(self, body: Mapping[str, Any], request: web.Request) -> Chat:
        target = request.match_info["target"]
        model, _, action = target.rpartition(":")
        if action not in ("generateContent", "streamGenerateContent") or not model:
            raise BadRequest(f"unknown method {action!r}")
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise BadRequest("contents is not specified")
        messages: list[tuple[str, str]] = []
        system = body.get("systemInstruction") or body.get("system_instruction")
        if isinstance(system, dict):
            messages.append(("system", _text_of(system.get("parts"))))
        for content in contents:
            if isinstance(content, dict):
                role = "assistant" if content.get("role") == "model" else "user"
                messages.append((role, _text_of(content.get("parts"))))
        config = body.get("generationConfig") or body.get("generation_config")
        config = config if isinstance(config, dict) else {}
        mime = config.get("responseMimeType") or config.get("response_mime_type")
        return Chat(
            model=model,
            messages=messages,
            stream=action == "streamGenerateContent",
            max_tokens=_limit(config.get("maxOutputTokens", config.get("max_output_tokens"))),
            json_requested=mime == "application/json",
            stops=_stops(config.get("stopSequences", config.get("stop_sequences"))),
        )

    def error_payload(self, status: int, message: str) -> object:
        default = "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"
        return {
            "error": {
                "code": status,
                "message": message,
                "status": _GEMINI_STATUS.get(status, default),
            }
        }

    def _usage(self, done: Completion) -> dict[str, int]:
        return {
            "promptTokenCount": done.input_tokens,
            "candidatesTokenCount": done.output_tokens,
            "totalTokenCount": done.input_tokens + done.output_tokens,
        }

    def _chunk(self, done: Completion, text: str, final: bool) -> dict[str, object]:
        candidate: dict[str, object] = {
            "content": {"parts": [{"text": text}], "role": "model"},
            "index": 0,
        }
        chunk: dict[str, object] = {"candidates": [candidate]}
        if final:
            candidate["finishReason"] = "MAX_TOKENS" if done.finish == "length" else "STOP"
            if done.report_usage:
                chunk["usageMetadata"] = self._usage(done)
        chunk["modelVersion"] = done.model
        chunk["responseId"] = done.id
        return chunk

    def response(self, done: Completion) -> object:
        return self._chunk(done, done.text, final=True)

    def stream(self, done: Completion, deltas: list[str]) -> tuple[bytes, list[bytes], bytes]:
        before, after = _template(self._chunk(done, _SENTINEL, final=False))
        final = orjson.dumps(self._chunk(done, "", final=True))
        if self.sse:
            # Google separates its SSE events with CRLF pairs.
            frames = [b"data: " + before + orjson.dumps(d) + after + b"\r\n\r\n" for d in deltas]
            return b"", frames, b"data: " + final + b"\r\n\r\n"
        frames = [
            (b",\r\n" if i else b"") + before + orjson.dumps(d) + after
            for i, d in enumerate(deltas)
        ]
        return b"[", frames, (b",\r\n" if frames else b"") + final + b"]"


class GeminiArray(Gemini):
    """Gemini ``streamGenerateContent`` without ``alt=sse``: a JSON array sent piece by piece."""

    sse = False
    stream_content_type = "application/json"
    frame_end = b""


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------

_OPENAI: Final = OpenAI()
_OLLAMA: Final = Ollama()
_ANTHROPIC: Final = Anthropic()
_GEMINI_SSE: Final = Gemini()
_GEMINI_ARRAY: Final = GeminiArray()
_ID_PREFIX: Final = {
    "openai": "chatcmpl-sim",
    "ollama": "",
    "anthropic": "msg_sim",
    "gemini": "sim",
}


def _make_knobs(config: Mapping[str, object]) -> Knobs:
    """Build :class:`Knobs` from settings already checked by :func:`parse_knobs`."""
    return Knobs(**config)  # type: ignore[arg-type]


def _public(config: Mapping[str, object]) -> dict[str, object]:
    """A model config for the control API: ``wrong_rate`` pairs shown as a JSON object."""
    rates = config.get("wrong_rate")
    if not isinstance(rates, tuple):
        return dict(config)
    return {**config, "wrong_rate": dict(rates)}


def _orjson_response(payload: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


class Simulator:
    """Mutable state of one simulator: model configs, failure counters and call statistics."""

    def __init__(
        self,
        models: Mapping[str, Mapping[str, object]] | None = None,
        require_key: str | None = None,
    ) -> None:
        self.require_key = require_key or None
        # Start-up configuration, restored by POST /_sim/reset.
        self._initial = {name: parse_knobs(cfg) for name, cfg in (models or {}).items()}
        self._ids = itertools.count(1)
        self.started_iso = _now_rfc3339()
        self.started = int(time.time())
        self.reset()

    def reset(self) -> None:
        """Back to the start-up model configs, with every counter at zero."""
        self.configs: dict[str, dict[str, object]] = {k: dict(v) for k, v in self._initial.items()}
        self._knobs: dict[str, Knobs] = {k: _make_knobs(v) for k, v in self.configs.items()}
        self.failures: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.wrong: Counter[str] = Counter()  # plausibly wrong answers served, per model
        self.rate_limited: Counter[str] = Counter()  # 429 answers, per model
        # Tokens of the answers served, per model: what a real upstream would bill.
        self.tokens_in: Counter[str] = Counter()
        self.tokens_out: Counter[str] = Counter()
        # Per model: the knobs its budgets were made for, and its "requests"/"tokens" budgets.
        self.budgets: dict[str, tuple[tuple[object, ...], dict[str, Budget]]] = {}
        self.by_protocol: dict[str, int] = dict.fromkeys(PROTOCOLS, 0)
        self.seen: set[str] = set()
        # An outage: the status every provider endpoint of these protocols answers; None: up.
        self.outage: tuple[int, frozenset[str]] | None = None

    def set_outage(self, raw: Mapping[str, object]) -> dict[str, object]:
        """Start an outage: ``status`` (5xx or 4xx, default 503) for ``protocols`` (default
        all); raises :class:`KnobError` on anything else."""
        unknown = set(raw) - {"status", "protocols"}
        if unknown:
            raise KnobError(f"unknown outage field(s): {', '.join(sorted(unknown))}")
        status = _as_int("status", raw.get("status", 503), 400, 599)
        protocols = raw.get("protocols", list(PROTOCOLS))
        if (
            not isinstance(protocols, list)
            or not protocols
            or not all(isinstance(p, str) and p in PROTOCOLS for p in protocols)
        ):
            raise KnobError(f"protocols: a non-empty list of {', '.join(PROTOCOLS)}")
        self.outage = (status, frozenset(str(p) for p in protocols))
        return self.outage_info()

    def outage_info(self) -> dict[str, object]:
        if self.outage is None:
            return {"outage": None}
        status, protocols = self.outage
        return {"outage": {"status": status, "protocols": sorted(protocols)}}

    def outage_status(self, protocol: str) -> int | None:
        """The status an endpoint of ``protocol`` answers during an outage (None: no outage)."""
        outage = self.outage
        if outage is None or protocol not in outage[1]:
            return None
        return outage[0]

    def configure(self, model: str, knobs: Mapping[str, object]) -> dict[str, object]:
        """Replace ``model``'s config (validated) and restart its ``fail_times`` count."""
        config = parse_knobs(knobs)
        self.configs[model] = config
        self._knobs[model] = _make_knobs(config)
        self.failures.pop(model, None)
        self.budgets.pop(model, None)
        return config

    def unconfigure(self, model: str) -> bool:
        """Forget ``model``'s config; returns whether there was one."""
        self._knobs.pop(model, None)
        self.failures.pop(model, None)
        self.budgets.pop(model, None)
        return self.configs.pop(model, None) is not None

    def knobs_for(self, model: str, overrides: Mapping[str, object]) -> Knobs:
        """Effective knobs: defaults, then the model's config, then the request's directives."""
        base = self._knobs.get(model, _DEFAULT_KNOBS)
        if not overrides:
            return base
        return _make_knobs({**self.configs.get(model, {}), **overrides})

    def known_models(self) -> list[str]:
        """Configured models plus every model a request has named."""
        return sorted(self.seen.union(self.configs))

    def authorized(self, request: web.Request) -> bool:
        """Whether the request carries the required key in any provider's usual place."""
        key = self.require_key
        if key is None:
            return True
        headers = request.headers
        return (
            headers.get("Authorization") == f"Bearer {key}"
            or headers.get("x-api-key") == key
            or headers.get("x-goog-api-key") == key
            or request.query.get("key") == key
        )

    def failure_status(self, model: str, knobs: Knobs) -> int | None:
        """The error status this request must get, if any (honouring ``fail_times``)."""
        status = knobs.status
        if status is None or status == 200:
            return None
        if knobs.fail_times is not None:
            if self.failures[model] >= knobs.fail_times:
                return None
            self.failures[model] += 1
        return status

    def stats(self) -> dict[str, object]:
        """Calls per model and per protocol, wrong answers, 429 answers and the tokens of the
        answers served per model, since start or the last reset."""
        return {
            "calls": dict(self.calls),
            "by_protocol": dict(self.by_protocol),
            "wrong": dict(self.wrong),
            "rate_limited": dict(self.rate_limited),
            "tokens": {
                model: {"in": self.tokens_in[model], "out": self.tokens_out[model]}
                for model in self.tokens_in
            },
        }

    def budgets_for(self, model: str, knobs: Knobs, now: float) -> dict[str, Budget]:
        """The model's rate-limit budgets (made, or made again when their knobs changed),
        refreshed to ``now``; empty when the model has no rate limit."""
        spec = (
            knobs.ratelimit_requests,
            knobs.ratelimit_tokens,
            knobs.ratelimit_window_s,
            knobs.ratelimit_style,
        )
        held = self.budgets.get(model)
        if held is None or held[0] != spec:
            fixed = knobs.ratelimit_style == "cerebras"
            budgets = {
                kind: Budget(capacity, knobs.ratelimit_window_s, fixed, float(capacity), now)
                for kind, capacity in (
                    ("requests", knobs.ratelimit_requests),
                    ("tokens", knobs.ratelimit_tokens),
                )
                if capacity is not None
            }
            held = self.budgets[model] = (spec, budgets)
        for budget in held[1].values():
            budget.refresh(now)
        return held[1]

    # ---------------------------------------------------------------- the chat request path

    async def chat(self, request: web.Request, dialect: Dialect) -> web.StreamResponse:
        """Answer one chat request in ``dialect``."""
        if self.outage is not None and (down := self.outage_status(dialect.name)) is not None:
            return dialect.error(down)
        if not self.authorized(request):
            return dialect.error(401)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return dialect.error(400, "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return dialect.error(400, "The request body must be a JSON object.")
        try:
            chat = dialect.parse(body, request)
            overrides: dict[str, object] = {}
            messages = [
                (role, strip_directives(text, overrides) if "[[sim" in text else text)
                for role, text in chat.messages
            ]
            knobs = self.knobs_for(chat.model, overrides)
        except ValueError as exc:  # BadRequest or KnobError
            return dialect.error(400, str(exc))

        model = chat.model
        self.calls[model] += 1
        self.by_protocol[dialect.name] += 1
        self.seen.add(model)

        budgets: dict[str, Budget] = {}
        now = 0.0
        if knobs.ratelimit_requests is not None or knobs.ratelimit_tokens is not None:
            now = time.monotonic()
            budgets = self.budgets_for(model, knobs, now)
            spent = [b for b in budgets.values() if b.level < 1]
            if spent:
                # Only a request that finds a budget already spent is refused.
                self.rate_limited[model] += 1
                wait = max(b.available_in(now) for b in spent)
                return dialect.error(
                    429,
                    retry_after=str(max(1, math.ceil(wait))),
                    headers=dialect.ratelimit_headers(budgets, knobs.ratelimit_style, now),
                )

        first_delay = knobs.first_delay_ms if chat.stream else knobs.latency_ms
        status = self.failure_status(model, knobs)
        if status is not None:
            if status == 429:
                self.rate_limited[model] += 1
            if first_delay:
                await asyncio.sleep(first_delay / 1000)
            return dialect.error(status, retry_after=knobs.retry_after)

        done = self._complete(dialect, chat, messages, knobs)
        self.tokens_in[model] += done.input_tokens
        self.tokens_out[model] += done.output_tokens
        headers: dict[str, str] | None = None
        if budgets:
            if "requests" in budgets:
                budgets["requests"].take(1)
            if "tokens" in budgets:
                budgets["tokens"].take(done.input_tokens + done.output_tokens)
            headers = dialect.ratelimit_headers(budgets, knobs.ratelimit_style, now) or None
        if chat.stream:
            return await self._stream(request, dialect, done, knobs, headers)
        if first_delay:
            await asyncio.sleep(first_delay / 1000)
        payload = orjson.dumps(dialect.response(done))
        if knobs.malformed:
            payload = payload[: len(payload) // 2]
        return web.Response(body=payload, content_type="application/json", headers=headers)

    def _complete(
        self, dialect: Dialect, chat: Chat, messages: list[tuple[str, str]], knobs: Knobs
    ) -> Completion:
        question = next((text for role, text in reversed(messages) if role == "user"), "")
        json_mode = knobs.json or ("valid" if chat.json_requested else None)
        wrong = (
            bool(knobs.wrong_rate)
            and knobs.quality == "good"
            and knobs.reply is None
            and random.random() < wrong_rate_for(knobs.wrong_rate, question)
        )
        text = answers.build_answer(
            question,
            quality=knobs.quality,
            language=knobs.language,
            json_mode=json_mode,
            words=knobs.words,
            reply=knobs.reply,
            wrong=wrong,
        )
        finish = "stop"
        text, stop_sequence = answers.apply_stop(text, chat.stops)
        if stop_sequence is not None:
            finish = "stop_sequence"
        if chat.max_tokens is not None:
            text, cut = answers.truncate_words(text, chat.max_tokens)
            if cut:
                finish, stop_sequence = "length", None
        if wrong and answers.is_wrong(text):  # not when cut before the wrong statement
            self.wrong[chat.model] += 1
        output_tokens = answers.count_words(text)
        planned_ms = knobs.latency_ms
        if chat.stream:
            chunks = math.ceil(output_tokens / knobs.chunk_words)
            planned_ms = knobs.first_delay_ms + knobs.token_interval_ms * max(0, chunks - 1)
        return Completion(
            id=f"{_ID_PREFIX[dialect.name]}{next(self._ids):012d}",
            model=chat.model,
            created=int(time.time()),
            text=text,
            finish=finish,
            stop_sequence=stop_sequence,
            input_tokens=answers.count_input_tokens(sum(len(t) for _, t in messages)),
            output_tokens=output_tokens,
            include_usage=chat.include_usage,
            report_usage=knobs.usage,
            # A 1 ms floor keeps clients that compute tokens per second from dividing by zero.
            duration_ns=(planned_ms + 1) * 1_000_000,
        )

    async def _stream(
        self,
        request: web.Request,
        dialect: Dialect,
        done: Completion,
        knobs: Knobs,
        headers: Mapping[str, str] | None = None,
    ) -> web.StreamResponse:
        deltas = answers.split_chunks(done.text, knobs.chunk_words)
        if knobs.first_delay_ms:
            await asyncio.sleep(knobs.first_delay_ms / 1000)
        response = web.StreamResponse(
            headers={
                "Content-Type": dialect.stream_content_type,
                "Cache-Control": "no-cache",
                **(headers or {}),
            }
        )
        head, frames, tail = dialect.stream(done, deltas)
        reset = knobs.reset_after_chunks
        if reset is not None:
            frames, tail = frames[:reset], b""
        interval = knobs.token_interval_ms / 1000
        try:
            await response.prepare(request)
            if knobs.malformed:
                await response.write(dialect.broken_stream(done, deltas))
                await response.write_eof()
                return response
            if not interval or len(frames) <= 1:
                # Nothing to pace: a single write is the cheapest way to send the whole stream.
                await response.write(head + b"".join(frames) + tail)
            else:
                last = len(frames) - 1
                for index, frame in enumerate(frames):
                    if index:
                        await asyncio.sleep(interval)
                    await response.write(
                        (head if index == 0 else b"") + frame + (tail if index == last else b"")
                    )
            if reset is not None:
                _drop_connection(request)
                return response
            await response.write_eof()
        except ConnectionResetError:
            # The client hung up mid-stream (a load generator stopping, a cancelled request):
            # normal for a stream, nothing to report.
            pass
        return response


def _drop_connection(request: web.Request) -> None:
    """Close the socket mid-response (after flushing what was written): no stream terminator."""
    transport = request.transport
    if transport is not None:
        transport.close()


SIMULATOR: Final = web.AppKey("simulator", Simulator)


def _sim(request: web.Request) -> Simulator:
    return request.app[SIMULATOR]


# ---------------------------------------------------------------- route handlers


async def _openai_chat(request: web.Request) -> web.StreamResponse:
    return await _sim(request).chat(request, _OPENAI)


async def _ollama_chat(request: web.Request) -> web.StreamResponse:
    return await _sim(request).chat(request, _OLLAMA)


async def _anthropic_messages(request: web.Request) -> web.StreamResponse:
    return await _sim(request).chat(request, _ANTHROPIC)


async def _gemini_generate(request: web.Request) -> web.StreamResponse:
    dialect = _GEMINI_SSE if request.query.get("alt") == "sse" else _GEMINI_ARRAY
    return await _sim(request).chat(request, dialect)


async def _list_v1_models(request: web.Request) -> web.Response:
    """``GET /v1/models``: OpenAI's list, or Anthropic's when ``anthropic-version`` is sent."""
    sim = _sim(request)
    anthropic = "anthropic-version" in request.headers
    dialect: Dialect = _ANTHROPIC if anthropic else _OPENAI
    if (down := sim.outage_status(dialect.name)) is not None:
        return dialect.error(down)
    if not sim.authorized(request):
        return dialect.error(401)
    names = sim.known_models()
    if anthropic:
        created = datetime.fromtimestamp(sim.started, UTC).isoformat().replace("+00:00", "Z")
        data = [{"type": "model", "id": n, "display_name": n, "created_at": created} for n in names]
        return _orjson_response(
            {
                "data": data,
                "has_more": False,
                "first_id": names[0] if names else None,
                "last_id": names[-1] if names else None,
            }
        )
    return _orjson_response(
        {
            "object": "list",
            "data": [
                {"id": n, "object": "model", "created": sim.started, "owned_by": "simulator"}
                for n in names
            ],
        }
    )


async def _ollama_tags(request: web.Request) -> web.Response:
    sim = _sim(request)
    if (down := sim.outage_status(_OLLAMA.name)) is not None:
        return _OLLAMA.error(down)
    if not sim.authorized(request):
        return _OLLAMA.error(401)
    models = [
        {
            "name": n,
            "model": n,
            "modified_at": sim.started_iso,
            "size": 1_000_000_000 + zlib.crc32(n.encode()) % 1_000_000_000,
            "digest": hashlib.sha256(n.encode()).hexdigest(),
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "simulator",
                "families": ["simulator"],
                "parameter_size": "7B",
                "quantization_level": "Q4_0",
            },
        }
        for n in sim.known_models()
    ]
    return _orjson_response({"models": models})


async def _ollama_version(request: web.Request) -> web.Response:
    if (down := _sim(request).outage_status(_OLLAMA.name)) is not None:
        return _OLLAMA.error(down)
    return _orjson_response({"version": "0.6.0"})


async def _ollama_root(request: web.Request) -> web.Response:
    if (down := _sim(request).outage_status(_OLLAMA.name)) is not None:
        return _OLLAMA.error(down)
    return web.Response(text="Ollama is running")


async def _gemini_models(request: web.Request) -> web.Response:
    sim = _sim(request)
    if (down := sim.outage_status(_GEMINI_SSE.name)) is not None:
        return _GEMINI_SSE.error(down)
    if not sim.authorized(request):
        return _GEMINI_SSE.error(401)
    models = [
        {
            "name": f"models/{n}",
            "version": "001",
            "displayName": n,
            "inputTokenLimit": 1_048_576,
            "outputTokenLimit": 8192,
            "supportedGenerationMethods": ["generateContent", "streamGenerateContent"],
        }
        for n in sim.known_models()
    ]
    return _orjson_response({"models": models})


# ---------------------------------------------------------------- control API


async def _control_put_model(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    try:
        raw = orjson.loads(await request.read() or b"{}")
        if not isinstance(raw, dict):
            raise KnobError("the body must be a JSON object of knobs")
        config = _sim(request).configure(name, raw)
    except (orjson.JSONDecodeError, KnobError) as exc:
        return _orjson_response({"error": str(exc)}, status=400)
    return _orjson_response({"model": name, "knobs": _public(config)})


async def _control_delete_model(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    return _orjson_response({"model": name, "deleted": _sim(request).unconfigure(name)})


async def _control_list_models(request: web.Request) -> web.Response:
    configs = {name: _public(config) for name, config in _sim(request).configs.items()}
    return _orjson_response({"models": configs, "knobs": list(KNOB_NAMES)})


async def _control_put_outage(request: web.Request) -> web.Response:
    try:
        raw = orjson.loads(await request.read() or b"{}")
        if not isinstance(raw, dict):
            raise KnobError("the body must be a JSON object: {status, protocols}")
        return _orjson_response(_sim(request).set_outage(raw))
    except (orjson.JSONDecodeError, KnobError) as exc:
        return _orjson_response({"error": str(exc)}, status=400)


async def _control_get_outage(request: web.Request) -> web.Response:
    return _orjson_response(_sim(request).outage_info())


async def _control_delete_outage(request: web.Request) -> web.Response:
    sim = _sim(request)
    sim.outage = None
    return _orjson_response(sim.outage_info())


async def _control_reset(request: web.Request) -> web.Response:
    _sim(request).reset()
    return _orjson_response({"status": "ok"})


async def _control_stats(request: web.Request) -> web.Response:
    return _orjson_response(_sim(request).stats())


async def _control_health(request: web.Request) -> web.Response:
    return _orjson_response({"status": "ok"})


def build_app(
    models: Mapping[str, Mapping[str, object]] | None = None, require_key: str | None = None
) -> web.Application:
    """Create the simulator application.

    ``models`` maps model names to knobs (typed values or strings, validated here);
    ``require_key`` makes every provider endpoint demand that API key.
    """
    # LLM prompts can be large; aiohttp's 1 MiB default would reject them.
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[SIMULATOR] = Simulator(models, require_key)
    app.router.add_post("/v1/chat/completions", _openai_chat)
    app.router.add_get("/v1/models", _list_v1_models)
    app.router.add_post("/api/chat", _ollama_chat)
    app.router.add_get("/api/tags", _ollama_tags)
    app.router.add_get("/api/version", _ollama_version)
    app.router.add_get("/", _ollama_root)
    app.router.add_post("/v1/messages", _anthropic_messages)
    for version in ("v1beta", "v1"):
        app.router.add_post(f"/{version}/models/{{target}}", _gemini_generate)
    app.router.add_get("/v1beta/models", _gemini_models)
    app.router.add_put("/_sim/models/{name:.+}", _control_put_model)
    app.router.add_delete("/_sim/models/{name:.+}", _control_delete_model)
    app.router.add_get("/_sim/models", _control_list_models)
    app.router.add_put("/_sim/outage", _control_put_outage)
    app.router.add_get("/_sim/outage", _control_get_outage)
    app.router.add_delete("/_sim/outage", _control_delete_outage)
    app.router.add_post("/_sim/reset", _control_reset)
    app.router.add_get("/_sim/stats", _control_stats)
    app.router.add_get("/_sim/health", _control_health)
    return app


async def start_in_background(
    host: str = "127.0.0.1",
    port: int = 0,
    models: Mapping[str, Mapping[str, object]] | None = None,
    require_key: str | None = None,
) -> tuple[web.AppRunner, int]:
    """Start the simulator inside the running event loop; returns the runner and the bound port.

    ``port=0`` picks a free port. Stop it with ``await runner.cleanup()``. The :class:`Simulator`
    state is reachable as ``runner.app[SIMULATOR]``.
    """
    runner = web.AppRunner(build_app(models, require_key), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    return runner, int(bound)


def run(
    host: str = "127.0.0.1",
    port: int = 9100,
    models: Mapping[str, Mapping[str, object]] | None = None,
    require_key: str | None = None,
) -> None:
    """Serve until interrupted (the CLI and the management command end up here)."""
    loop: asyncio.AbstractEventLoop | None = None
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional
        pass
    else:
        loop = uvloop.new_event_loop()
    app = build_app(models, require_key)
    names = ", ".join(models or {}) or "any model"
    print(f"LLM upstream simulator on http://{host}:{port} ({names})", flush=True)
    web.run_app(
        app, host=host, port=port, access_log=None, print=None, shutdown_timeout=1.0, loop=loop
    )
