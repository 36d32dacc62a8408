"""Provider adapters against upstreams played by httpx.MockTransport.

Each adapter is checked for the exact request it sends, for reading whole and streamed answers,
and for the shared error table (status codes, transport failures, malformed bodies, cut streams).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

# Until the project's pytest config sets pythonpath, make the repo root importable.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from providers.adapters import (  # noqa: E402
    ADAPTER_CLASSES,
    AnthropicAdapter,
    GeminiAdapter,
    OllamaAdapter,
    OpenAICompatibleAdapter,
    UnknownProviderKind,
    adapter_for,
)
from providers.adapters._http import parse_retry_after  # noqa: E402
from providers.base import (  # noqa: E402
    ChatRequest,
    ChatResult,
    ErrorClass,
    Message,
    ProviderAdapter,
    ProviderError,
    StreamChunk,
    Target,
    Usage,
)

KEY = "sk-test-SECRET-0123456789"

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


# --- fixtures and helpers ------------------------------------------------------------------------


class Upstream:
    """A fake upstream: records every request and answers with ``respond``."""

    def __init__(self, respond: Handler) -> None:
        self.respond = respond
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        answer = self.respond(request)
        if not isinstance(answer, httpx.Response):
            answer = await answer
        return answer

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def last_json(self) -> Any:
        return orjson.loads(self.last.content)


class ScriptedBody(httpx.AsyncByteStream):
    """A response body sent in parts, optionally failing after them; records being closed."""

    def __init__(self, parts: list[bytes], error: Exception | None = None) -> None:
        self.parts = parts
        self.error = error
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            yield part
        if self.error is not None:
            raise self.error

    async def aclose(self) -> None:
        self.closed = True


def client_for(upstream: Upstream) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(upstream))


def json_response(
    status: int, payload: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(status, content=orjson.dumps(payload), headers=headers)


def make_target(case: Case, **overrides: Any) -> Target:
    values: dict[str, Any] = {
        "base_url": case.base_url,
        "upstream_model": case.model,
        "api_key": KEY,
        "connect_timeout": 2.0,
        "first_byte_timeout": 7.0,
        "total_timeout": 30.0,
    }
    values.update(overrides)
    return Target(**values)


REQUEST = ChatRequest(
    messages=(
        Message("system", "Be brief."),
        Message("user", "Hi"),
        Message("user", "Say hello"),
        Message("assistant", "Sure."),
        Message("user", "Now!"),
    ),
    max_tokens=64,
    temperature=0.5,
    top_p=0.9,
    stop=("END",),
    response_format={"type": "json_object"},
)
MINIMAL = ChatRequest(messages=(Message("user", "Hi"),))


async def collect(stream: AsyncIterator[StreamChunk]) -> list[StreamChunk]:
    return [chunk async for chunk in stream]


async def complete_error(
    case: Case, respond: Handler, **target: Any
) -> tuple[ProviderError, Upstream]:
    upstream = Upstream(respond)
    async with client_for(upstream) as client:
        adapter = case.cls(client)
        with pytest.raises(ProviderError) as info:
            await adapter.complete(REQUEST, make_target(case, **target))
    assert KEY not in str(info.value)
    return info.value, upstream


async def stream_error(
    case: Case, respond: Handler, **target: Any
) -> tuple[ProviderError, list[StreamChunk]]:
    upstream = Upstream(respond)
    got: list[StreamChunk] = []
    async with client_for(upstream) as client:
        adapter = case.cls(client)
        with pytest.raises(ProviderError) as info:
            async for chunk in adapter.stream(REQUEST, make_target(case, **target)):
                got.append(chunk)
    assert KEY not in str(info.value)
    return info.value, got


# --- one description per wire protocol -----------------------------------------------------------


def _sse(*events: tuple[str | None, Any], crlf: bool = False) -> list[bytes]:
    out = []
    for name, data in events:
        text = data if isinstance(data, str) else orjson.dumps(data).decode()
        block = (f"event: {name}\n" if name else "") + f"data: {text}\n\n"
        out.append(block.replace("\n", "\r\n").encode() if crlf else block.encode())
    return out


@dataclass
class Case:
    """How one adapter is reached and what its upstream says for 'Hello' / length / 5+2 tokens."""

    cls: type[Any]
    kind: str
    base_url: str
    model: str
    complete_url: str
    stream_url: str
    ok_body: dict[str, Any]
    # A full stream; the first ``first_text`` parts carry exactly one text chunk ("Hel").
    stream_parts: list[bytes]
    first_text: int
    error_body: Callable[[str], dict[str, Any]]
    stream_content_type: str = "text/event-stream"


OPENAI = Case(
    cls=OpenAICompatibleAdapter,
    kind="openai_compatible",
    base_url="https://api.groq.com/openai/v1/",
    model="llama-3.3-70b",
    complete_url="https://api.groq.com/openai/v1/chat/completions",
    stream_url="https://api.groq.com/openai/v1/chat/completions",
    ok_body={
        "id": "chatcmpl-1",
        "model": "llama-3.3-70b-versatile",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    },
    stream_parts=_sse(
        (None, {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
        (None, {"choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]}),
        (None, {"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": None}]}),
        (None, {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}),
        (None, {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}),
        (None, "[DONE]"),
    ),
    first_text=2,
    error_body=lambda msg: {"error": {"message": msg, "type": "invalid_request_error"}},
)

OLLAMA = Case(
    cls=OllamaAdapter,
    kind="ollama",
    base_url="http://ollama:11434",
    model="llama3.2:3b",
    complete_url="http://ollama:11434/api/chat",
    stream_url="http://ollama:11434/api/chat",
    ok_body={
        "model": "llama3.2:3b",
        "message": {"role": "assistant", "content": "Hello"},
        "done": True,
        "done_reason": "length",
        "prompt_eval_count": 5,
        "eval_count": 2,
    },
    stream_parts=[
        b'{"model":"llama3.2:3b","message":{"role":"assistant","content":"Hel"},"done":false}\n',
        b'{"model":"llama3.2:3b","message":{"role":"assistant","content":"lo"},"done":false}\n',
        b'{"model":"llama3.2:3b","message":{"role":"assistant","content":""},"done":true,'
        b'"done_reason":"length","prompt_eval_count":5,"eval_count":2}\n',
    ],
    first_text=1,
    error_body=lambda msg: {"error": msg},
    stream_content_type="application/x-ndjson",
)

ANTHROPIC = Case(
    cls=AnthropicAdapter,
    kind="anthropic",
    base_url="https://api.anthropic.com",
    model="claude-haiku-4-5",
    complete_url="https://api.anthropic.com/v1/messages",
    stream_url="https://api.anthropic.com/v1/messages",
    ok_body={
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}],
        "stop_reason": "max_tokens",
        "usage": {"input_tokens": 5, "output_tokens": 2},
    },
    stream_parts=_sse(
        (
            "message_start",
            {
                "type": "message_start",
                "message": {"id": "msg_1", "usage": {"input_tokens": 5, "output_tokens": 1}},
            },
        ),
        ("content_block_start", {"type": "content_block_start", "index": 0}),
        ("ping", {"type": "ping"}),
        (
            "content_block_delta",
            {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hel"}},
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "lo"}},
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "max_tokens"},
                "usage": {"output_tokens": 2},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ),
    first_text=4,
    error_body=lambda msg: {"type": "error", "error": {"type": "api_error", "message": msg}},
)

GEMINI = Case(
    cls=GeminiAdapter,
    kind="gemini",
    base_url="https://generativelanguage.googleapis.com",
    model="models/gemini-2.5-flash",
    complete_url=(
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    ),
    stream_url=(
        "https://generativelanguage.googleapis.com/v1beta/models/"
        "gemini-2.5-flash:streamGenerateContent?alt=sse"
    ),
    ok_body={
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "Hel"}, {"text": "lo"}]},
                "finishReason": "MAX_TOKENS",
            }
        ],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2},
        "modelVersion": "gemini-2.5-flash-001",
    },
    stream_parts=_sse(
        (
            None,
            {
                "candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}],
                "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1},
            },
        ),
        (
            None,
            {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [{"text": "lo"}]},
                        "finishReason": "MAX_TOKENS",
                    }
                ],
                "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2},
            },
        ),
        crlf=True,  # Gemini ends its SSE lines with CRLF
    ),
    first_text=1,
    error_body=lambda msg: {"error": {"code": 400, "message": msg, "status": "INVALID_ARGUMENT"}},
)

CASES = [OPENAI, OLLAMA, ANTHROPIC, GEMINI]
by_kind = pytest.mark.parametrize("case", CASES, ids=lambda c: c.kind)


def stream_response(case: Case, body: httpx.AsyncByteStream | bytes) -> httpx.Response:
    headers = {"content-type": case.stream_content_type}
    if isinstance(body, bytes):
        return httpx.Response(200, content=body, headers=headers)
    return httpx.Response(200, stream=body, headers=headers)


# --- shared behaviour: happy paths ---------------------------------------------------------------


@by_kind
@pytest.mark.asyncio
async def test_complete_reads_text_finish_and_usage(case: Case) -> None:
    upstream = Upstream(lambda request: json_response(200, case.ok_body))
    async with client_for(upstream) as client:
        result = await case.cls(client).complete(REQUEST, make_target(case))
    assert isinstance(result, ChatResult)
    assert result.text == "Hello"
    assert result.finish_reason == "length"
    assert result.usage == Usage(input_tokens=5, output_tokens=2)
    assert result.upstream_model
    assert str(upstream.last.url) == case.complete_url
    assert upstream.last.method == "POST"
    assert upstream.last.headers["content-type"] == "application/json"
    # Per-request timeouts come from the target.
    assert upstream.last.extensions["timeout"] == {
        "connect": 2.0,
        "read": 7.0,
        "write": 2.0,
        "pool": 2.0,
    }


@by_kind
@pytest.mark.asyncio
async def test_stream_yields_text_then_one_final_chunk(case: Case) -> None:
    upstream = Upstream(lambda request: stream_response(case, b"".join(case.stream_parts)))
    async with client_for(upstream) as client:
        chunks = await collect(case.cls(client).stream(REQUEST, make_target(case)))
    assert chunks == [
        StreamChunk(text="Hel"),
        StreamChunk(text="lo"),
        StreamChunk(text="", finish_reason="length", usage=Usage(5, 2)),
    ]
    assert str(upstream.last.url) == case.stream_url
    assert upstream.last.extensions["timeout"]["read"] == 7.0


@by_kind
@pytest.mark.asyncio
async def test_stream_parsing_survives_arbitrary_network_splits(case: Case) -> None:
    raw = b"".join(case.stream_parts)
    pieces = [raw[i : i + 7] for i in range(0, len(raw), 7)]
    upstream = Upstream(lambda request: stream_response(case, ScriptedBody(pieces)))
    async with client_for(upstream) as client:
        chunks = await collect(case.cls(client).stream(REQUEST, make_target(case)))
    assert "".join(c.text for c in chunks) == "Hello"
    assert chunks[-1].finish_reason == "length"


@by_kind
@pytest.mark.asyncio
async def test_consumer_stopping_early_closes_the_response(case: Case) -> None:
    body = ScriptedBody(case.stream_parts)
    upstream = Upstream(lambda request: stream_response(case, body))
    async with client_for(upstream) as client:
        async with aclosing(case.cls(client).stream(REQUEST, make_target(case))) as stream:
            async for chunk in stream:
                assert chunk.text == "Hel"
                break
        assert body.closed


@by_kind
@pytest.mark.asyncio
async def test_probe(case: Case) -> None:
    probe_paths = {
        "openai_compatible": "https://api.groq.com/openai/v1/models",
        "ollama": "http://ollama:11434/api/tags",
        "anthropic": "https://api.anthropic.com/v1/models",
        "gemini": "https://generativelanguage.googleapis.com/v1beta/models",
    }
    upstream = Upstream(lambda request: json_response(200, {"data": []}))
    async with client_for(upstream) as client:
        assert await case.cls(client).probe(make_target(case)) is True
    assert upstream.last.method == "GET"
    assert str(upstream.last.url) == probe_paths[case.kind]

    for respond in (
        lambda request: json_response(503, {}),
        lambda request: json_response(401, {}),
    ):
        async with client_for(Upstream(respond)) as client:
            assert await case.cls(client).probe(make_target(case)) is False

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with client_for(Upstream(refuse)) as client:
        assert await case.cls(client).probe(make_target(case)) is False


# --- shared behaviour: error table ---------------------------------------------------------------


@by_kind
@pytest.mark.asyncio
async def test_429_with_retry_after_seconds(case: Case) -> None:
    error, _ = await complete_error(
        case,
        lambda r: json_response(429, case.error_body("slow down"), {"Retry-After": "12"}),
    )
    assert error.error_class is ErrorClass.RATE_LIMITED
    assert not error.permanent
    assert error.status_code == 429
    assert error.retry_after == 12.0
    assert "slow down" in error.message and "429" in error.message


@by_kind
@pytest.mark.asyncio
async def test_429_with_retry_after_http_date(case: Case) -> None:
    when = formatdate(time.time() + 30, usegmt=True)
    error, _ = await complete_error(
        case, lambda r: json_response(429, case.error_body("slow"), {"Retry-After": when})
    )
    assert error.error_class is ErrorClass.RATE_LIMITED
    assert error.retry_after is not None and 27.0 <= error.retry_after <= 30.0


@by_kind
@pytest.mark.asyncio
async def test_429_with_retry_after_ms_only(case: Case) -> None:
    error, _ = await complete_error(
        case, lambda r: json_response(429, case.error_body("x"), {"retry-after-ms": "1500"})
    )
    assert error.retry_after == 1.5


@by_kind
@pytest.mark.asyncio
async def test_429_without_hint(case: Case) -> None:
    error, _ = await complete_error(case, lambda r: json_response(429, case.error_body("x")))
    assert error.error_class is ErrorClass.RATE_LIMITED
    assert error.retry_after is None


@by_kind
@pytest.mark.parametrize("status", [500, 502, 503, 504, 529, 599])
@pytest.mark.asyncio
async def test_5xx_is_transient_server_error(case: Case, status: int) -> None:
    error, _ = await complete_error(
        case,
        lambda r: json_response(status, case.error_body("overloaded"), {"Retry-After": "3"}),
    )
    assert error.error_class is ErrorClass.SERVER_ERROR
    assert not error.permanent
    assert error.status_code == status
    assert error.retry_after == 3.0
    assert "overloaded" in error.message


@by_kind
@pytest.mark.parametrize(
    ("status", "error_class", "permanent"),
    [
        (408, ErrorClass.TIMEOUT, False),
        (401, ErrorClass.AUTH, True),
        (403, ErrorClass.AUTH, True),
        (404, ErrorClass.NOT_FOUND, True),
        (400, ErrorClass.BAD_REQUEST, True),
        (413, ErrorClass.BAD_REQUEST, True),
        (422, ErrorClass.BAD_REQUEST, True),
        (418, ErrorClass.BAD_REQUEST, True),
    ],
)
@pytest.mark.asyncio
async def test_4xx_mapping(
    case: Case, status: int, error_class: ErrorClass, permanent: bool
) -> None:
    error, _ = await complete_error(case, lambda r: json_response(status, case.error_body("nope")))
    assert error.error_class is error_class
    assert error.permanent is permanent
    assert error.status_code == status
    assert error.retry_after is None
    assert "nope" in error.message and str(status) in error.message


@by_kind
@pytest.mark.asyncio
async def test_error_message_never_contains_the_api_key(case: Case) -> None:
    echo = case.error_body(f"Incorrect API key provided: {KEY}. " + "x" * 1000)
    error, upstream = await complete_error(case, lambda r: json_response(401, echo))
    assert KEY not in error.message
    assert "[redacted]" in error.message
    assert len(error.message) < 400  # upstream text is truncated
    # ...while the key was really sent upstream.
    assert KEY in " ".join(upstream.last.headers.values())


@by_kind
@pytest.mark.asyncio
async def test_non_json_error_body_is_quoted(case: Case) -> None:
    html = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    error, _ = await complete_error(case, lambda r: httpx.Response(502, content=html))
    assert error.error_class is ErrorClass.SERVER_ERROR
    assert "502 Bad Gateway" in error.message


@by_kind
@pytest.mark.parametrize(
    ("exc", "error_class"),
    [
        (httpx.ConnectError, ErrorClass.CONNECT),
        (httpx.ConnectTimeout, ErrorClass.CONNECT),
        (httpx.ReadTimeout, ErrorClass.TIMEOUT),
        (httpx.WriteTimeout, ErrorClass.TIMEOUT),
        (httpx.PoolTimeout, ErrorClass.TIMEOUT),
        (httpx.RemoteProtocolError, ErrorClass.SERVER_ERROR),
        (httpx.ReadError, ErrorClass.SERVER_ERROR),
    ],
)
@pytest.mark.asyncio
async def test_transport_failures(
    case: Case, exc: type[httpx.TransportError], error_class: ErrorClass
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise exc(f"failed talking to upstream with {KEY}", request=request)

    error, _ = await complete_error(case, fail)
    assert error.error_class is error_class
    assert not error.permanent
    assert error.status_code is None


@by_kind
@pytest.mark.asyncio
async def test_total_timeout_bounds_complete(case: Case) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return json_response(200, case.ok_body)

    started = time.monotonic()
    error, _ = await complete_error(case, slow, total_timeout=0.05)
    assert time.monotonic() - started < 2
    assert error.error_class is ErrorClass.TIMEOUT
    assert not error.permanent


@by_kind
@pytest.mark.parametrize(
    "body",
    [b"<html>maintenance</html>", b"[1, 2]", b'{"unexpected": true}', b""],
    ids=["html", "list", "wrong-object", "empty"],
)
@pytest.mark.asyncio
async def test_malformed_200_body(case: Case, body: bytes) -> None:
    error, _ = await complete_error(case, lambda r: httpx.Response(200, content=body))
    assert error.error_class is ErrorClass.MALFORMED
    assert not error.permanent


@by_kind
@pytest.mark.asyncio
async def test_stream_http_error_before_first_chunk(case: Case) -> None:
    error, got = await stream_error(
        case, lambda r: json_response(429, case.error_body("busy"), {"Retry-After": "4"})
    )
    assert got == []
    assert error.error_class is ErrorClass.RATE_LIMITED
    assert error.retry_after == 4.0
    assert "busy" in error.message


@by_kind
@pytest.mark.asyncio
async def test_stream_cut_after_first_chunk_is_interrupted(case: Case) -> None:
    body = ScriptedBody(
        case.stream_parts[: case.first_text], httpx.RemoteProtocolError("peer closed connection")
    )
    error, got = await stream_error(case, lambda r: stream_response(case, body))
    assert [c.text for c in got] == ["Hel"]
    assert error.error_class is ErrorClass.STREAM_INTERRUPTED
    assert not error.permanent
    assert body.closed


@by_kind
@pytest.mark.asyncio
async def test_stream_read_timeout_after_first_chunk_is_interrupted(case: Case) -> None:
    body = ScriptedBody(case.stream_parts[: case.first_text], httpx.ReadTimeout("idle"))
    error, got = await stream_error(case, lambda r: stream_response(case, body))
    assert len(got) == 1
    assert error.error_class is ErrorClass.STREAM_INTERRUPTED


@by_kind
@pytest.mark.asyncio
async def test_stream_ending_without_terminator_is_interrupted(case: Case) -> None:
    body = ScriptedBody(case.stream_parts[: case.first_text])
    error, got = await stream_error(case, lambda r: stream_response(case, body))
    assert [c.text for c in got] == ["Hel"]
    assert error.error_class is ErrorClass.STREAM_INTERRUPTED


@by_kind
@pytest.mark.asyncio
async def test_stream_read_error_before_first_chunk_is_server_error(case: Case) -> None:
    body = ScriptedBody([], httpx.ReadError("connection reset"))
    error, got = await stream_error(case, lambda r: stream_response(case, body))
    assert got == []
    assert error.error_class is ErrorClass.SERVER_ERROR
    assert not error.permanent


@by_kind
@pytest.mark.parametrize(
    "body", [b"", b"<html>oops</html>\n", b"data: {not json\n\n"], ids=["empty", "html", "bad"]
)
@pytest.mark.asyncio
async def test_stream_malformed_200(case: Case, body: bytes) -> None:
    error, got = await stream_error(case, lambda r: stream_response(case, body))
    assert got == []
    assert error.error_class is ErrorClass.MALFORMED


@by_kind
@pytest.mark.asyncio
async def test_stream_connect_error(case: Case) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    error, _ = await stream_error(case, fail)
    assert error.error_class is ErrorClass.CONNECT


@by_kind
@pytest.mark.asyncio
async def test_bad_base_url_is_a_deployment_fault_not_a_bad_request(case: Case) -> None:
    def unsupported(request: httpx.Request) -> httpx.Response:
        raise httpx.UnsupportedProtocol("Request URL has an unsupported protocol 'ftp://'.")

    error, _ = await complete_error(case, unsupported, base_url="ftp://example.com")
    # BAD_REQUEST would make the router give up on every other deployment too.
    assert (error.error_class, error.permanent) == (ErrorClass.CONNECT, True)

    error, _ = await complete_error(case, lambda r: json_response(200, {}), base_url="http://[::1")
    assert (error.error_class, error.permanent) == (ErrorClass.CONNECT, True)
    error, _ = await stream_error(case, lambda r: json_response(200, {}), base_url="http://[::1")
    assert (error.error_class, error.permanent) == (ErrorClass.CONNECT, True)


# --- OpenAI-compatible ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_openai_request_shape() -> None:
    upstream = Upstream(lambda request: json_response(200, OPENAI.ok_body))
    async with client_for(upstream) as client:
        await OpenAICompatibleAdapter(client).complete(REQUEST, make_target(OPENAI))
    assert upstream.last.headers["authorization"] == f"Bearer {KEY}"
    assert upstream.last_json() == {
        "model": "llama-3.3-70b",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "user", "content": "Say hello"},
            {"role": "assistant", "content": "Sure."},
            {"role": "user", "content": "Now!"},
        ],
        "max_tokens": 64,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["END"],
        "response_format": {"type": "json_object"},
    }


@pytest.mark.asyncio
async def test_openai_stream_request_and_no_auth_without_key() -> None:
    upstream = Upstream(lambda request: stream_response(OPENAI, b"".join(OPENAI.stream_parts)))
    async with client_for(upstream) as client:
        await collect(
            OpenAICompatibleAdapter(client).stream(MINIMAL, make_target(OPENAI, api_key=""))
        )
    assert "authorization" not in upstream.last.headers
    assert upstream.last_json() == {
        "model": "llama-3.3-70b",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


@pytest.mark.asyncio
async def test_openai_null_content_and_unknown_finish_reason() -> None:
    body = {
        "choices": [
            {"message": {"role": "assistant", "content": None}, "finish_reason": "tool_calls"}
        ]
    }
    async with client_for(Upstream(lambda r: json_response(200, body))) as client:
        result = await OpenAICompatibleAdapter(client).complete(MINIMAL, make_target(OPENAI))
    assert result == ChatResult(
        text="", finish_reason="stop", usage=Usage(), upstream_model="llama-3.3-70b"
    )


@pytest.mark.asyncio
async def test_openai_stream_error_event() -> None:
    parts = OPENAI.stream_parts[:2] + _sse(
        (None, {"error": {"message": "upstream overloaded", "code": 502}})
    )
    error, got = await stream_error(OPENAI, lambda r: stream_response(OPENAI, b"".join(parts)))
    assert [c.text for c in got] == ["Hel"]
    assert error.error_class is ErrorClass.STREAM_INTERRUPTED
    assert "upstream overloaded" in error.message

    first = _sse((None, {"error": {"message": "rate limited", "code": 429}}))
    error, got = await stream_error(OPENAI, lambda r: stream_response(OPENAI, b"".join(first)))
    assert got == []
    assert error.error_class is ErrorClass.RATE_LIMITED


# --- Ollama --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_ollama_request_shape() -> None:
    upstream = Upstream(lambda request: json_response(200, OLLAMA.ok_body))
    async with client_for(upstream) as client:
        await OllamaAdapter(client).complete(REQUEST, make_target(OLLAMA))
    assert upstream.last_json() == {
        "model": "llama3.2:3b",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "user", "content": "Say hello"},
            {"role": "assistant", "content": "Sure."},
            {"role": "user", "content": "Now!"},
        ],
        "stream": False,
        "options": {"num_predict": 64, "temperature": 0.5, "top_p": 0.9, "stop": ["END"]},
        "format": "json",
    }

    upstream = Upstream(lambda request: stream_response(OLLAMA, b"".join(OLLAMA.stream_parts)))
    async with client_for(upstream) as client:
        await collect(OllamaAdapter(client).stream(MINIMAL, make_target(OLLAMA, api_key="")))
    assert upstream.last_json() == {
        "model": "llama3.2:3b",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
    }
    assert "authorization" not in upstream.last.headers


@pytest.mark.asyncio
async def test_ollama_stop_and_json_schema() -> None:
    body = dict(OLLAMA.ok_body, done_reason="stop")
    upstream = Upstream(lambda request: json_response(200, body))
    request = ChatRequest(
        messages=(Message("user", "Hi"),),
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
    )
    async with client_for(upstream) as client:
        result = await OllamaAdapter(client).complete(request, make_target(OLLAMA))
    assert result.finish_reason == "stop"
    assert upstream.last_json()["format"] == "json"


@pytest.mark.asyncio
async def test_ollama_model_not_found() -> None:
    error, _ = await complete_error(
        OLLAMA, lambda r: json_response(404, {"error": 'model "nope" not found, try pulling it'})
    )
    assert error.error_class is ErrorClass.NOT_FOUND
    assert 'model "nope" not found' in error.message


# --- Anthropic -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_anthropic_request_shape() -> None:
    upstream = Upstream(lambda request: json_response(200, ANTHROPIC.ok_body))
    request = ChatRequest(
        messages=(
            Message("system", "Be brief."),
            Message("user", "Hi"),
            Message("user", "Say hello"),
            Message("system", "Use English."),
            Message("assistant", "Sure."),
            Message("assistant", "Ready."),
            Message("user", "Now!"),
        ),
        temperature=1.7,
        top_p=0.9,
        stop=("END",),
        response_format={"type": "json_object"},
    )
    async with client_for(upstream) as client:
        await AnthropicAdapter(client).complete(request, make_target(ANTHROPIC))
    headers = upstream.last.headers
    assert headers["x-api-key"] == KEY
    assert headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers
    assert upstream.last_json() == {
        "model": "claude-haiku-4-5",
        "max_tokens": 1024,  # required by Anthropic: default when the client gave none
        "system": "Be brief.\n\nUse English.",
        "messages": [
            {"role": "user", "content": "Hi\n\nSay hello"},
            {"role": "assistant", "content": "Sure.\n\nReady."},
            {"role": "user", "content": "Now!"},
        ],
        "temperature": 1.0,  # clamped to Anthropic's range
        "top_p": 0.9,
        "stop_sequences": ["END"],
    }


@pytest.mark.asyncio
async def test_anthropic_stream_request_shape() -> None:
    upstream = Upstream(
        lambda request: stream_response(ANTHROPIC, b"".join(ANTHROPIC.stream_parts))
    )
    async with client_for(upstream) as client:
        await collect(AnthropicAdapter(client).stream(REQUEST, make_target(ANTHROPIC)))
    sent = upstream.last_json()
    assert sent["stream"] is True
    assert sent["max_tokens"] == 64
    assert sent["system"] == "Be brief."


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
        ("tool_use", "stop"),
    ],
)
@pytest.mark.asyncio
async def test_anthropic_stop_reasons(stop_reason: str, expected: str) -> None:
    body = dict(ANTHROPIC.ok_body, stop_reason=stop_reason)
    async with client_for(Upstream(lambda r: json_response(200, body))) as client:
        result = await AnthropicAdapter(client).complete(MINIMAL, make_target(ANTHROPIC))
    assert result.finish_reason == expected


@pytest.mark.asyncio
async def test_anthropic_error_event() -> None:
    overloaded = _sse(
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    )
    before = ANTHROPIC.stream_parts[:1] + overloaded
    error, got = await stream_error(
        ANTHROPIC, lambda r: stream_response(ANTHROPIC, b"".join(before))
    )
    assert got == []
    assert error.error_class is ErrorClass.SERVER_ERROR
    assert not error.permanent
    assert "Overloaded" in error.message

    after = ANTHROPIC.stream_parts[: ANTHROPIC.first_text] + overloaded
    error, got = await stream_error(
        ANTHROPIC, lambda r: stream_response(ANTHROPIC, b"".join(after))
    )
    assert [c.text for c in got] == ["Hel"]
    assert error.error_class is ErrorClass.STREAM_INTERRUPTED
    assert "Overloaded" in error.message


# --- Gemini --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_gemini_request_shape() -> None:
    upstream = Upstream(lambda request: json_response(200, GEMINI.ok_body))
    async with client_for(upstream) as client:
        await GeminiAdapter(client).complete(REQUEST, make_target(GEMINI))
    assert upstream.last.headers["x-goog-api-key"] == KEY
    assert "key" not in upstream.last.url.params
    assert upstream.last_json() == {
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}, {"text": "Say hello"}]},
            {"role": "model", "parts": [{"text": "Sure."}]},
            {"role": "user", "parts": [{"text": "Now!"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {
            "maxOutputTokens": 64,
            "temperature": 0.5,
            "topP": 0.9,
            "stopSequences": ["END"],
            "responseMimeType": "application/json",
        },
    }

    upstream = Upstream(lambda request: stream_response(GEMINI, b"".join(GEMINI.stream_parts)))
    async with client_for(upstream) as client:
        await collect(GeminiAdapter(client).stream(MINIMAL, make_target(GEMINI)))
    assert upstream.last_json() == {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("OTHER", "stop"),
    ],
)
@pytest.mark.asyncio
async def test_gemini_finish_reasons(reason: str, expected: str) -> None:
    body = {
        "candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}],
        "usageMetadata": {
            "promptTokenCount": 3,
            "candidatesTokenCount": 1,
            "thoughtsTokenCount": 4,
        },
    }
    async with client_for(Upstream(lambda r: json_response(200, body))) as client:
        result = await GeminiAdapter(client).complete(MINIMAL, make_target(GEMINI))
    assert result.finish_reason == expected
    assert result.usage == Usage(3, 5)  # thinking tokens are billed as output


@pytest.mark.asyncio
async def test_gemini_blocked_prompt_and_thoughts() -> None:
    blocked = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 3},
    }
    async with client_for(Upstream(lambda r: json_response(200, blocked))) as client:
        result = await GeminiAdapter(client).complete(MINIMAL, make_target(GEMINI))
    assert (result.text, result.finish_reason) == ("", "content_filter")

    thoughts = {
        "candidates": [
            {
                "content": {"parts": [{"text": "thinking...", "thought": True}, {"text": "Hi"}]},
                "finishReason": "STOP",
            }
        ]
    }
    async with client_for(Upstream(lambda r: json_response(200, thoughts))) as client:
        result = await GeminiAdapter(client).complete(MINIMAL, make_target(GEMINI))
    assert result.text == "Hi"


@pytest.mark.asyncio
async def test_gemini_invalid_key_is_auth() -> None:
    body = {
        "error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [{"reason": "API_KEY_INVALID"}],
        }
    }
    error, _ = await complete_error(GEMINI, lambda r: json_response(400, body))
    assert error.error_class is ErrorClass.AUTH
    assert error.permanent
    error, _ = await stream_error(GEMINI, lambda r: json_response(400, body))
    assert error.error_class is ErrorClass.AUTH


# --- registry and helpers ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_registry() -> None:
    assert set(ADAPTER_CLASSES) == {"ollama", "openai_compatible", "anthropic", "gemini"}
    async with httpx.AsyncClient() as client, httpx.AsyncClient() as other:
        adapter: ProviderAdapter = adapter_for("anthropic", client)
        assert isinstance(adapter, AnthropicAdapter)
        assert adapter_for("anthropic", client) is adapter
        assert adapter_for("anthropic", other) is not adapter
        assert isinstance(adapter_for("gemini", client), GeminiAdapter)
        with pytest.raises(KeyError) as info:
            adapter_for("bedrock", client)
    assert isinstance(info.value, UnknownProviderKind)
    assert "unknown provider kind 'bedrock'" in str(info.value)


def test_parse_retry_after() -> None:
    assert parse_retry_after(httpx.Headers({"Retry-After": "7"})) == 7.0
    assert parse_retry_after(httpx.Headers({"Retry-After": "0.5"})) == 0.5
    past = formatdate(time.time() - 60, usegmt=True)
    assert parse_retry_after(httpx.Headers({"Retry-After": past})) == 0.0
    assert (
        parse_retry_after(httpx.Headers({"Retry-After": "soon", "retry-after-ms": "250"})) == 0.25
    )
    assert parse_retry_after(httpx.Headers({"Retry-After": "-3"})) is None
    assert parse_retry_after(httpx.Headers({"Retry-After": "nan"})) is None
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "junk"})) is None
    assert parse_retry_after(httpx.Headers()) is None
