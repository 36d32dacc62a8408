"""What the dialects share: a request reduced to what the simulator needs (:class:`Chat`), the
answer ready to be framed (:class:`Completion`), the :class:`Dialect` base each wire protocol
implements, and the helpers that read request bodies and encode frames."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

import orjson
from aiohttp import web

from .ratelimits import Budget


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


def text_of(content: object) -> str:
    """Text of a message content: a string, or a list of parts/blocks carrying ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        ]
        return "\n".join(texts)
    return ""


def stops_of(value: object) -> tuple[str, ...]:
    """Stop sequences: one string or a list of them."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(s for s in value if isinstance(s, str))
    return ()


def limit_of(value: object) -> int | None:
    """A max-tokens field; absent or negative (Ollama's "unlimited") means no limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"max tokens must be an integer, got {value!r}")
    return int(value) if value >= 0 else None


def model_of(body: Mapping[str, Any]) -> str:
    """The requested model; raises :class:`BadRequest` without one."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required")
    return model


def messages_of(body: Mapping[str, Any]) -> list[Any]:
    """The request's messages; raises :class:`BadRequest` unless a non-empty array."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array")
    return messages


# orjson escapes the NUL characters, so this marker can never come out of a real payload.
SENTINEL: Final = "\x00sim-delta\x00"
_SENTINEL_JSON: Final = orjson.dumps(SENTINEL)


def template(payload: object) -> tuple[bytes, bytes]:
    """Encode ``payload`` (holding the sentinel where the delta text goes) once.

    Returns the bytes before and after the sentinel, so each stream chunk costs one small
    ``orjson.dumps`` of its text instead of encoding the whole object again.
    """
    before, _, after = orjson.dumps(payload).partition(_SENTINEL_JSON)
    return before, after


def now_rfc3339() -> str:
    """Now, in UTC, as Ollama writes times."""
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


def status_message(status: int) -> str:
    """The error message a provider gives with ``status``."""
    return _STATUS_MESSAGES.get(status, f"Simulated upstream error (HTTP {status}).")


class Dialect:
    """How one provider frames requests, answers, streams and errors."""

    name: ClassVar[str]
    id_prefix: ClassVar[str]  # how the provider's answer ids begin
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
        body = orjson.dumps(self.error_payload(status, message or status_message(status)))
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


def sse(payload: object, event: str | None = None) -> bytes:
    """One server-sent event carrying ``payload`` as JSON (named ``event`` when given)."""
    data = b"data: " + orjson.dumps(payload) + b"\n\n"
    return b"event: " + event.encode() + b"\n" + data if event else data


def json_response(payload: object, status: int = 200) -> web.Response:
    """A JSON response encoded with orjson."""
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")
