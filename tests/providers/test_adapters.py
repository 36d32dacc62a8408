"""Provider adapters against upstreams played by a real aiohttp server on loopback.

Every test starts a server in its own event loop; its handler records each request and answers as
the test programs it: a JSON body, raw bytes, a status and headers, or a body streamed in parts
that then ends, stalls or is cut by closing the connection. The adapters talk to it through the
session the gateway uses (``new_session``). Each adapter is checked for the exact request it sends,
for reading whole and streamed answers, and for the shared error table (statuses, connection
failures, timeouts, malformed bodies, cut streams).
"""

from __future__ import annotations

import asyncio
import gzip
import inspect
import socket
import struct
import sys
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from email.utils import formatdate
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy, MultiMapping

# Until the project's pytest config sets pythonpath, make the repo root importable.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from providers import clients  # noqa: E402
from providers.adapters import (  # noqa: E402
    ADAPTER_CLASSES,
    AnthropicAdapter,
    GeminiAdapter,
    OllamaAdapter,
    OpenAICompatibleAdapter,
    UnknownProviderKind,
    adapter_for,
    new_session,
)
from providers.adapters._http import (  # noqa: E402
    STREAM_READ_BUFSIZE,
    parse_retry_after,
    request_timeout,
)
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

Respond = Callable[[web.Request], web.StreamResponse | Awaitable[web.StreamResponse]]


# --- the fake upstream ---------------------------------------------------------------------------


@dataclass
class Seen:
    """One request as the upstream received it."""

    method: str
    url: str
    query: MultiMapping[str]
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


async def _not_programmed(request: web.Request) -> web.StreamResponse:
    raise AssertionError(f"unexpected request {request.method} {request.path_qs}")


class Upstream:
    """A fake upstream on loopback: records every request and answers with ``respond``.

    ``session`` is the gateway side: an aiohttp session configured as in production.
    """

    url: str
    session: aiohttp.ClientSession

    def __init__(self) -> None:
        self.respond: Respond = _not_programmed
        self.requests: list[Seen] = []
        # Set when a handler is cancelled because its client went away mid-answer.
        self.disconnected = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Seen(request.method, str(request.url), request.query, request.headers, body)
        )
        try:
            answer = self.respond(request)
            if inspect.isawaitable(answer):
                answer = await answer
            return answer
        except asyncio.CancelledError:
            self.disconnected.set()
            raise

    @property
    def last(self) -> Seen:
        return self.requests[-1]

    def last_json(self) -> Any:
        return self.last.json()

    def target(self, case: Case, **overrides: Any) -> Target:
        values: dict[str, Any] = {
            "base_url": self.url + case.prefix,
            "upstream_model": case.model,
            "api_key": KEY,
            "connect_timeout": 2.0,
            "first_byte_timeout": 7.0,
            "total_timeout": 30.0,
        }
        values.update(overrides)
        return Target(**values)

    def adapter(self, case: Case) -> Any:
        return case.cls(self.session)


@pytest_asyncio.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", up.handle)
    # handler_cancellation: a client that leaves cancels the handler (see Upstream.disconnected).
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    up.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with new_session() as session:
            up.session = session
            yield up
    finally:
        await runner.cleanup()


def closed_port() -> int:
    """A loopback port nobody listens on: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- answers -------------------------------------------------------------------------------------


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(payload), headers=headers, content_type="application/json"
    )


def raw_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=body, headers=headers)


async def _stall() -> web.StreamResponse:
    # Cancelled when the client leaves (handler_cancellation) or when the server shuts down.
    await asyncio.sleep(30)
    raise AssertionError("the client should have given up")


def _cut(request: web.Request) -> None:
    assert request.transport is not None
    request.transport.close()


def streamed(
    case: Case,
    parts: list[bytes],
    *,
    then: str = "end",
    pause: float = 0.0,
    headers: dict[str, str] | None = None,
) -> Respond:
    """A 200 whose body is written in ``parts`` (chunked), then ends (``"end"``), is cut by
    closing the connection (``"cut"``) or stalls (``"stall"``)."""

    async def respond(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": case.stream_content_type, **(headers or {})}
        )
        await response.prepare(request)
        for part in parts:
            await response.write(part)
            if pause:
                await asyncio.sleep(pause)
        if then == "cut":
            _cut(request)
            return await _stall()
        if then == "stall":
            return await _stall()
        await response.write_eof()
        return response

    return respond


# --- requests ------------------------------------------------------------------------------------


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


def assert_safe(error: ProviderError) -> None:
    """No key in the message nor anywhere in the traceback a log would print."""
    assert KEY not in str(error)
    assert KEY not in "".join(traceback.format_exception(error))


async def complete_error(
    upstream: Upstream, case: Case, respond: Respond, **target: Any
) -> ProviderError:
    upstream.respond = respond
    with pytest.raises(ProviderError) as info:
        await upstream.adapter(case).complete(REQUEST, upstream.target(case, **target))
    assert_safe(info.value)
    return info.value


async def stream_error(
    upstream: Upstream, case: Case, respond: Respond, **target: Any
) -> tuple[ProviderError, list[StreamChunk]]:
    upstream.respond = respond
    got: list[StreamChunk] = []
    with pytest.raises(ProviderError) as info:
        async for chunk in upstream.adapter(case).stream(REQUEST, upstream.target(case, **target)):
            got.append(chunk)
    assert_safe(info.value)
    return info.value, got


# --- one description per wire protocol -----------------------------------------------------------


def _sse(*events: tuple[str | None, Any], newline: str = "\n") -> list[bytes]:
    out = []
    for name, data in events:
        text = data if isinstance(data, str) else orjson.dumps(data).decode()
        block = (f"event: {name}\n" if name else "") + f"data: {text}\n\n"
        out.append(block.replace("\n", newline).encode())
    return out


@dataclass
class Case:
    """How one adapter is reached and what its upstream says for 'Hello' / length / 5+2 tokens."""

    cls: type[Any]
    kind: str
    prefix: str  # appended to the upstream's root URL to make the deployment's base_url
    model: str
    complete_path: str
    stream_path: str
    probe_path: str
    ok_body: dict[str, Any]
    # A full stream; the first ``first_text`` parts carry exactly one text chunk ("Hel").
    stream_parts: list[bytes]
    first_text: int
    error_body: Callable[[str], dict[str, Any]]
    stream_content_type: str = "text/event-stream"


OPENAI = Case(
    cls=OpenAICompatibleAdapter,
    kind="openai_compatible",
    prefix="/openai/v1/",
    model="llama-3.3-70b",
    complete_path="/openai/v1/chat/completions",
    stream_path="/openai/v1/chat/completions",
    probe_path="/openai/v1/models",
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
    prefix="",
    model="llama3.2:3b",
    complete_path="/api/chat",
    stream_path="/api/chat",
    probe_path="/api/tags",
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
    prefix="",
    model="claude-haiku-4-5",
    complete_path="/v1/messages",
    stream_path="/v1/messages",
    probe_path="/v1/models",
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
    prefix="/",  # a trailing slash on base_url is dropped
    model="models/gemini-2.5-flash",
    complete_path="/v1beta/models/gemini-2.5-flash:generateContent",
    stream_path="/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
    probe_path="/v1beta/models",
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
        newline="\r\n",  # Gemini ends its SSE lines with CRLF
    ),
    first_text=1,
    error_body=lambda msg: {"error": {"code": 400, "message": msg, "status": "INVALID_ARGUMENT"}},
)

CASES = [OPENAI, OLLAMA, ANTHROPIC, GEMINI]
by_kind = pytest.mark.parametrize("case", CASES, ids=lambda c: c.kind)


def whole_stream(case: Case) -> Respond:
    return streamed(case, [b"".join(case.stream_parts)])


# --- shared behaviour: happy paths ---------------------------------------------------------------


@by_kind
async def test_complete_reads_text_finish_and_usage(case: Case, upstream: Upstream) -> None:
    upstream.respond = lambda request: json_response(200, case.ok_body)
    target = upstream.target(case)
    result = await upstream.adapter(case).complete(REQUEST, target)
    assert isinstance(result, ChatResult)
    assert result.text == "Hello"
    assert result.finish_reason == "length"
    assert result.usage == Usage(input_tokens=5, output_tokens=2)
    assert result.upstream_model
    assert len(upstream.requests) == 1
    assert upstream.last.url == upstream.url + case.complete_path
    assert upstream.last.method == "POST"
    assert upstream.last.headers["content-type"] == "application/json"
    assert "gzip" in upstream.last.headers["accept-encoding"]
    # Per-request timeouts come from the target (the tests below prove each one is applied).
    assert request_timeout(target) == aiohttp.ClientTimeout(
        total=None, connect=2.0, sock_connect=2.0, sock_read=7.0
    )


@by_kind
async def test_stream_yields_text_then_one_final_chunk(case: Case, upstream: Upstream) -> None:
    upstream.respond = whole_stream(case)
    chunks = await collect(upstream.adapter(case).stream(REQUEST, upstream.target(case)))
    assert chunks == [
        StreamChunk(text="Hel"),
        StreamChunk(text="lo"),
        StreamChunk(text="", finish_reason="length", usage=Usage(5, 2)),
    ]
    assert upstream.last.url == upstream.url + case.stream_path
    assert upstream.last.method == "POST"
    assert upstream.last.headers["content-type"] == "application/json"


@by_kind
async def test_stream_parsing_survives_arbitrary_network_splits(
    case: Case, upstream: Upstream
) -> None:
    raw = b"".join(case.stream_parts)
    pieces = [raw[i : i + 7] for i in range(0, len(raw), 7)]
    # A pause after each write makes the client receive the pieces one by one.
    upstream.respond = streamed(case, pieces, pause=0.001)
    chunks = await collect(upstream.adapter(case).stream(REQUEST, upstream.target(case)))
    assert "".join(c.text for c in chunks) == "Hello"
    assert chunks[-1].finish_reason == "length"


@by_kind
async def test_consumer_stopping_early_releases_the_connection(
    case: Case, upstream: Upstream
) -> None:
    upstream.respond = streamed(case, case.stream_parts[: case.first_text], then="stall")
    adapter = upstream.adapter(case)
    async with aclosing(adapter.stream(REQUEST, upstream.target(case))) as stream:
        async for chunk in stream:
            assert chunk.text == "Hel"
            break
    # The half-read answer's connection was closed, not parked in the pool: the upstream saw its
    # client leave while it was still sending.
    await asyncio.wait_for(upstream.disconnected.wait(), 5)
    # ...and the session goes on working.
    upstream.respond = lambda request: json_response(200, case.ok_body)
    assert (await adapter.complete(MINIMAL, upstream.target(case))).text == "Hello"


@by_kind
async def test_probe(case: Case, upstream: Upstream) -> None:
    adapter = upstream.adapter(case)
    upstream.respond = lambda request: json_response(200, {"data": []})
    assert await adapter.probe(upstream.target(case)) is True
    assert upstream.last.method == "GET"
    assert upstream.last.url == upstream.url + case.probe_path

    for status in (503, 401, 302):
        upstream.respond = partial(json_response, status, {}, {"Location": "/elsewhere"})
        assert await adapter.probe(upstream.target(case)) is False, status

    refused = upstream.target(case, base_url=f"http://127.0.0.1:{closed_port()}")
    assert await adapter.probe(refused) is False
    assert await adapter.probe(upstream.target(case, base_url="http://[::1")) is False
    assert await adapter.probe(upstream.target(case, api_key="sk-\nInjected: 1")) is False

    async def slow(request: web.Request) -> web.StreamResponse:
        return await _stall()

    upstream.respond = slow
    started = time.monotonic()
    assert await adapter.probe(upstream.target(case, first_byte_timeout=0.1)) is False
    assert time.monotonic() - started < 2


# --- shared behaviour: error table ---------------------------------------------------------------


@by_kind
async def test_429_with_retry_after_seconds(case: Case, upstream: Upstream) -> None:
    error = await complete_error(
        upstream,
        case,
        lambda r: json_response(429, case.error_body("slow down"), {"Retry-After": "12"}),
    )
    assert error.error_class is ErrorClass.RATE_LIMITED
    assert not error.permanent
    assert error.status_code == 429
    assert error.retry_after == 12.0
    assert "slow down" in error.message and "429" in error.message


@by_kind
async def test_429_with_retry_after_http_date(case: Case, upstream: Upstream) -> None:
    when = formatdate(time.time() + 30, usegmt=True)
    error = await complete_error(
        upstream,
        case,
        lambda r: json_response(429, case.error_body("slow"), {"Retry-After": when}),
    )
    assert error.error_class is ErrorClass.RATE_LIMITED
    assert error.retry_after is not None and 27.0 <= error.retry_after <= 30.0


@by_kind
async def test_429_with_retry_after_ms_only(case: Case, upstream: Upstream) -> None:
    error = await complete_error(
        upstream,
        case,
        lambda r: json_response(429, case.error_body("x"), {"retry-after-ms": "1500"}),
    )
    assert error.retry_after == 1.5


@by_kind
async def test_429_without_hint(case: Case, upstream: Upstream) -> None:
    error = await complete_error(upstream, case, lambda r: json_response(429, case.error_body("x")))
    assert error.error_class is ErrorClass.RATE_LIMITED
    assert error.retry_after is None


@by_kind
@pytest.mark.parametrize("status", [500, 502, 503, 504, 529, 599])
async def test_5xx_is_transient_server_error(case: Case, upstream: Upstream, status: int) -> None:
    error = await complete_error(
        upstream,
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
async def test_4xx_mapping(
    case: Case, upstream: Upstream, status: int, error_class: ErrorClass, permanent: bool
) -> None:
    error = await complete_error(
        upstream, case, lambda r: json_response(status, case.error_body("nope"))
    )
    assert error.error_class is error_class
    assert error.permanent is permanent
    assert error.status_code == status
    assert error.retry_after is None
    assert "nope" in error.message and str(status) in error.message


@by_kind
async def test_error_message_never_contains_the_api_key(case: Case, upstream: Upstream) -> None:
    echo = case.error_body(f"Incorrect API key provided: {KEY}. " + "x" * 1000)
    error = await complete_error(upstream, case, lambda r: json_response(401, echo))
    assert KEY not in error.message
    assert "[redacted]" in error.message
    assert len(error.message) < 400  # upstream text is truncated
    # ...while the key was really sent upstream.
    assert KEY in " ".join(upstream.last.headers.values())


@by_kind
async def test_non_json_error_body_is_quoted(case: Case, upstream: Upstream) -> None:
    html = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    error = await complete_error(upstream, case, lambda r: raw_response(502, html))
    assert error.error_class is ErrorClass.SERVER_ERROR
    assert "502 Bad Gateway" in error.message


# Ways the connection fails, each as (answer, target overrides, expected class). The answer is
# None when the upstream is never reached.


async def _no_first_byte(request: web.Request) -> web.StreamResponse:
    return await _stall()


async def _stalled_body(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.content_length = 1000
    await response.prepare(request)
    await response.write(b'{"choices": [')
    return await _stall()


async def _body_cut_short(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.content_length = 1000
    await response.prepare(request)
    await response.write(b'{"choices": [')
    _cut(request)
    return await _stall()


async def _closed_before_answer(request: web.Request) -> web.StreamResponse:
    _cut(request)
    return await _stall()


async def _reset_before_answer(request: web.Request) -> web.StreamResponse:
    assert request.transport is not None
    sock = request.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
    request.transport.abort()
    return await _stall()


async def _not_http(request: web.Request) -> web.StreamResponse:
    assert request.transport is not None
    request.transport.write(b"this is not HTTP\r\n\r\n")
    _cut(request)
    return await _stall()


def _refused() -> dict[str, Any]:
    return {"base_url": f"http://127.0.0.1:{closed_port()}"}


def _unknown_host() -> dict[str, Any]:
    return {"base_url": "http://gateway-test.invalid"}


def _short_first_byte_timeout() -> dict[str, Any]:
    return {"first_byte_timeout": 0.1}


TRANSPORT_FAILURES: dict[str, tuple[Respond | None, Callable[[], dict[str, Any]], ErrorClass]] = {
    "refused": (None, _refused, ErrorClass.CONNECT),
    "unknown-host": (None, _unknown_host, ErrorClass.CONNECT),
    "no-first-byte": (_no_first_byte, _short_first_byte_timeout, ErrorClass.TIMEOUT),
    "stalled-body": (_stalled_body, _short_first_byte_timeout, ErrorClass.TIMEOUT),
    "closed-before-answer": (_closed_before_answer, dict, ErrorClass.SERVER_ERROR),
    "reset-before-answer": (_reset_before_answer, dict, ErrorClass.SERVER_ERROR),
    "not-http": (_not_http, dict, ErrorClass.SERVER_ERROR),
    "body-cut-short": (_body_cut_short, dict, ErrorClass.SERVER_ERROR),
}
by_failure = pytest.mark.parametrize("failure", list(TRANSPORT_FAILURES))


@by_kind
@by_failure
async def test_transport_failures(case: Case, upstream: Upstream, failure: str) -> None:
    respond, overrides, error_class = TRANSPORT_FAILURES[failure]
    started = time.monotonic()
    error = await complete_error(upstream, case, respond or _not_programmed, **overrides())
    assert time.monotonic() - started < 5
    assert error.error_class is error_class
    assert not error.permanent
    assert error.status_code is None
    # "from None": aiohttp's own message never chains into a traceback.
    assert error.__cause__ is None and error.__suppress_context__


@by_kind
@by_failure
async def test_stream_transport_failures_before_the_first_chunk(
    case: Case, upstream: Upstream, failure: str
) -> None:
    respond, overrides, error_class = TRANSPORT_FAILURES[failure]
    error, got = await stream_error(upstream, case, respond or _not_programmed, **overrides())
    assert got == []
    assert error.error_class is error_class
    assert not error.permanent
    assert error.__cause__ is None and error.__suppress_context__


@by_kind
async def test_waiting_for_a_pooled_connection_is_bounded_by_connect_timeout(
    case: Case, upstream: Upstream
) -> None:
    upstream.respond = streamed(case, case.stream_parts[: case.first_text], then="stall")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as small:
        adapter = case.cls(small)
        async with aclosing(adapter.stream(REQUEST, upstream.target(case))) as busy:
            assert (await anext(busy)).text == "Hel"  # holds the only connection
            started = time.monotonic()
            with pytest.raises(ProviderError) as info:
                await adapter.complete(REQUEST, upstream.target(case, connect_timeout=0.1))
            assert time.monotonic() - started < 2
    assert info.value.error_class is ErrorClass.CONNECT
    assert not info.value.permanent


@by_kind
async def test_total_timeout_bounds_complete(case: Case, upstream: Upstream) -> None:
    started = time.monotonic()
    error = await complete_error(upstream, case, _no_first_byte, total_timeout=0.05)
    assert time.monotonic() - started < 2
    assert error.error_class is ErrorClass.TIMEOUT
    assert not error.permanent
    assert "no answer within 0.05s" in error.message


@by_kind
@pytest.mark.parametrize(
    "body",
    [b"<html>maintenance</html>", b"[1, 2]", b'{"unexpected": true}', b""],
    ids=["html", "list", "wrong-object", "empty"],
)
async def test_malformed_200_body(case: Case, upstream: Upstream, body: bytes) -> None:
    error = await complete_error(upstream, case, lambda r: raw_response(200, body))
    assert error.error_class is ErrorClass.MALFORMED
    assert not error.permanent


@by_kind
async def test_redirects_are_not_followed(case: Case, upstream: Upstream) -> None:
    moved = upstream.url + "/moved"
    error = await complete_error(
        upstream, case, lambda r: json_response(307, {}, {"Location": moved})
    )
    assert (error.error_class, error.status_code) == (ErrorClass.MALFORMED, 307)
    error, _ = await stream_error(
        upstream, case, lambda r: json_response(302, {}, {"Location": moved})
    )
    assert (error.error_class, error.status_code) == (ErrorClass.MALFORMED, 302)
    assert [seen.url for seen in upstream.requests] == [
        upstream.url + case.complete_path,
        upstream.url + case.stream_path,
    ]


@by_kind
async def test_gzipped_answers_are_decoded(case: Case, upstream: Upstream) -> None:
    gzipped = {"Content-Encoding": "gzip"}
    body = gzip.compress(orjson.dumps(case.ok_body))
    upstream.respond = lambda r: raw_response(200, body, gzipped)
    assert (await upstream.adapter(case).complete(REQUEST, upstream.target(case))).text == "Hello"

    stream = gzip.compress(b"".join(case.stream_parts))
    upstream.respond = streamed(case, [stream[:20], stream[20:40], stream[40:]], headers=gzipped)
    chunks = await collect(upstream.adapter(case).stream(REQUEST, upstream.target(case)))
    assert "".join(c.text for c in chunks) == "Hello"

    error = await complete_error(
        upstream, case, lambda r: raw_response(200, b"not gzip at all", gzipped)
    )
    assert error.error_class is ErrorClass.MALFORMED
    assert "undecodable body" in error.message


@by_kind
async def test_stream_http_error_before_first_chunk(case: Case, upstream: Upstream) -> None:
    error, got = await stream_error(
        upstream,
        case,
        lambda r: json_response(429, case.error_body("busy"), {"Retry-After": "4"}),
    )
    assert got == []
    assert error.error_class is ErrorClass.RATE_LIMITED
    assert error.status_code == 429
    assert error.retry_after == 4.0
    assert "busy" in error.message


@by_kind
async def test_stream_cut_after_first_chunk_is_interrupted(case: Case, upstream: Upstream) -> None:
    error, got = await stream_error(
        upstream, case, streamed(case, case.stream_parts[: case.first_text], then="cut")
    )
    assert [c.text for c in got] == ["Hel"]
    assert error.error_class is ErrorClass.STREAM_INTERRUPTED
    assert not error.permanent
    assert "ClientPayloadError" in error.message


@by_kind
async def test_stream_read_timeout_after_first_chunk_is_interrupted(
    case: Case, upstream: Upstream
) -> None:
    started = time.monotonic()
    error, got = await stream_error(
        upstream,
        case,
        streamed(case, case.stream_parts[: case.first_text], then="stall"),
        first_byte_timeout=0.1,
    )
    assert time.monotonic() - started < 2
    assert len(got) == 1
    assert error.error_class is ErrorClass.STREAM_INTERRUPTED
    assert "SocketTimeoutError" in error.message


@by_kind
async def test_stream_ending_without_terminator_is_interrupted(
    case: Case, upstream: Upstream
) -> None:
    error, got = await stream_error(
        upstream, case, streamed(case, case.stream_parts[: case.first_text])
    )
    assert [c.text for c in got] == ["Hel"]
    assert error.error_class is ErrorClass.STREAM_INTERRUPTED


@by_kind
async def test_stream_read_error_before_first_chunk_is_server_error(
    case: Case, upstream: Upstream
) -> None:
    error, got = await stream_error(upstream, case, streamed(case, [], then="cut"))
    assert got == []
    assert error.error_class is ErrorClass.SERVER_ERROR
    assert not error.permanent


@by_kind
@pytest.mark.parametrize(
    "body", [b"", b"<html>oops</html>\n", b"data: {not json\n\n"], ids=["empty", "html", "bad"]
)
async def test_stream_malformed_200(case: Case, upstream: Upstream, body: bytes) -> None:
    error, got = await stream_error(upstream, case, streamed(case, [body]))
    assert got == []
    assert error.error_class is ErrorClass.MALFORMED


@by_kind
async def test_bad_base_url_is_a_deployment_fault_not_a_bad_request(
    case: Case, upstream: Upstream
) -> None:
    # BAD_REQUEST would make the router give up on every other deployment too.
    for base_url in ("ftp://example.com", "http://[::1", "example.com/v1", "http://h:99999"):
        error = await complete_error(upstream, case, _not_programmed, base_url=base_url)
        assert (error.error_class, error.permanent) == (ErrorClass.CONNECT, True), base_url
        assert "invalid base_url" in error.message
        error, _ = await stream_error(upstream, case, _not_programmed, base_url=base_url)
        assert (error.error_class, error.permanent) == (ErrorClass.CONNECT, True), base_url
    assert upstream.requests == []


@by_kind
@pytest.mark.parametrize("bad", ["\n", "\r", "\x00"], ids=["lf", "cr", "nul"])
async def test_unsendable_key_is_a_deployment_fault_and_stays_secret(
    case: Case, upstream: Upstream, bad: str
) -> None:
    key = f"{KEY}{bad}X-Injected: 1"
    error = await complete_error(upstream, case, _not_programmed, api_key=key)
    assert (error.error_class, error.permanent) == (ErrorClass.CONNECT, True)
    assert "cannot send request" in error.message
    error, _ = await stream_error(upstream, case, _not_programmed, api_key=key)
    assert (error.error_class, error.permanent) == (ErrorClass.CONNECT, True)
    assert upstream.requests == []


# --- shared behaviour: reading lines ---------------------------------------------------------------


@by_kind
async def test_lines_longer_than_aiohttp_default_buffer(case: Case, upstream: Upstream) -> None:
    first = b"".join(case.stream_parts[: case.first_text])
    rest = b"".join(case.stream_parts[case.first_text :])
    big = "H" * 1_000_000  # aiohttp refuses lines over 512 KiB by default
    long_first = first.replace(b'"Hel"', b'"' + big.encode() + b'"')
    upstream.respond = streamed(case, [long_first, rest])
    chunks = await collect(upstream.adapter(case).stream(REQUEST, upstream.target(case)))
    assert [c.text for c in chunks[:2]] == [big, "lo"]

    huge = b'"' + b"H" * (2 * STREAM_READ_BUFSIZE + 1) + b'"'
    error, got = await stream_error(
        upstream, case, streamed(case, [first.replace(b'"Hel"', huge), rest])
    )
    assert got == []
    assert error.error_class is ErrorClass.MALFORMED
    assert "line too long" in error.message


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
async def test_sse_line_endings(upstream: Upstream, newline: str) -> None:
    parts = _sse(*[(None, orjson.loads(p[6:])) for p in OPENAI.stream_parts[:-1]], newline=newline)
    parts += _sse((None, "[DONE]"), newline=newline)
    upstream.respond = streamed(OPENAI, parts)
    chunks = await collect(upstream.adapter(OPENAI).stream(REQUEST, upstream.target(OPENAI)))
    assert [c.text for c in chunks] == ["Hel", "lo", ""]
    assert chunks[-1].usage == Usage(5, 2)


@pytest.mark.parametrize("case", [OPENAI, OLLAMA], ids=lambda c: c.kind)
async def test_unicode_line_separators_inside_json_do_not_split_lines(
    case: Case, upstream: Upstream
) -> None:
    # orjson (and most servers) write U+2028/U+0085 raw inside JSON strings; only CR/LF end lines.
    text = "a\u2028b\x85c\x0cd"
    parts = [p.replace(b'"Hel"', orjson.dumps(text)) for p in case.stream_parts]
    upstream.respond = streamed(case, parts)
    chunks = await collect(upstream.adapter(case).stream(REQUEST, upstream.target(case)))
    assert chunks[0].text == text


async def test_ndjson_with_crlf_and_blank_lines(upstream: Upstream) -> None:
    lines = [p.rstrip(b"\n") for p in OLLAMA.stream_parts]
    body = b"\r\n\r\n".join(lines[:2]) + b"\r\n" + lines[2]  # no newline after the last line
    upstream.respond = streamed(OLLAMA, [body])
    chunks = await collect(upstream.adapter(OLLAMA).stream(REQUEST, upstream.target(OLLAMA)))
    assert [c.text for c in chunks] == ["Hel", "lo", ""]


# --- the session ---------------------------------------------------------------------------------


async def test_session_ignores_proxies_from_the_environment(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, dead)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with new_session() as session:
        upstream.respond = lambda r: json_response(200, OPENAI.ok_body)
        result = await OpenAICompatibleAdapter(session).complete(MINIMAL, upstream.target(OPENAI))
    assert result.text == "Hello"


async def test_session_never_sends_upstream_cookies_back(upstream: Upstream) -> None:
    upstream.respond = lambda r: json_response(200, OPENAI.ok_body, {"Set-Cookie": "lb=abc"})
    adapter = upstream.adapter(OPENAI)
    await adapter.complete(MINIMAL, upstream.target(OPENAI))
    await adapter.complete(MINIMAL, upstream.target(OPENAI))
    assert "cookie" not in upstream.last.headers


async def test_one_shared_session_per_loop_closed_at_shutdown() -> None:
    session = clients.http_session()
    assert clients.http_session() is session
    assert not session.closed
    await clients.close_http_client()
    assert session.closed
    again = clients.http_session()
    assert again is not session and not again.closed
    await clients.close_http_client()
    await clients.close_http_client()  # nothing left to close: no error


# --- OpenAI-compatible ---------------------------------------------------------------------------


async def test_openai_request_shape(upstream: Upstream) -> None:
    upstream.respond = lambda request: json_response(200, OPENAI.ok_body)
    await upstream.adapter(OPENAI).complete(REQUEST, upstream.target(OPENAI))
    assert upstream.last.headers["authorization"] == f"Bearer {KEY}"
    assert upstream.last.headers["accept"] == "application/json"
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


async def test_openai_stream_request_and_no_auth_without_key(upstream: Upstream) -> None:
    upstream.respond = whole_stream(OPENAI)
    await collect(upstream.adapter(OPENAI).stream(MINIMAL, upstream.target(OPENAI, api_key="")))
    assert "authorization" not in upstream.last.headers
    assert upstream.last.headers["accept"] == "text/event-stream"
    assert upstream.last_json() == {
        "model": "llama-3.3-70b",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_openai_null_content_and_unknown_finish_reason(upstream: Upstream) -> None:
    body = {
        "choices": [
            {"message": {"role": "assistant", "content": None}, "finish_reason": "tool_calls"}
        ]
    }
    upstream.respond = lambda r: json_response(200, body)
    result = await upstream.adapter(OPENAI).complete(MINIMAL, upstream.target(OPENAI))
    assert result == ChatResult(
        text="", finish_reason="stop", usage=Usage(), upstream_model="llama-3.3-70b"
    )


async def test_openai_stream_error_event(upstream: Upstream) -> None:
    parts = OPENAI.stream_parts[:2] + _sse(
        (None, {"error": {"message": "upstream overloaded", "code": 502}})
    )
    error, got = await stream_error(upstream, OPENAI, streamed(OPENAI, parts))
    assert [c.text for c in got] == ["Hel"]
    assert error.error_class is ErrorClass.STREAM_INTERRUPTED
    assert "upstream overloaded" in error.message

    first = _sse((None, {"error": {"message": "rate limited", "code": 429}}))
    error, got = await stream_error(upstream, OPENAI, streamed(OPENAI, first))
    assert got == []
    assert error.error_class is ErrorClass.RATE_LIMITED


# --- Ollama --------------------------------------------------------------------------------------


async def test_ollama_request_shape(upstream: Upstream) -> None:
    upstream.respond = lambda request: json_response(200, OLLAMA.ok_body)
    await upstream.adapter(OLLAMA).complete(REQUEST, upstream.target(OLLAMA))
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
    assert upstream.last.headers["authorization"] == f"Bearer {KEY}"

    upstream.respond = whole_stream(OLLAMA)
    await collect(upstream.adapter(OLLAMA).stream(MINIMAL, upstream.target(OLLAMA, api_key="")))
    assert upstream.last_json() == {
        "model": "llama3.2:3b",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
    }
    assert "authorization" not in upstream.last.headers


async def test_ollama_stop_and_json_schema(upstream: Upstream) -> None:
    body = dict(OLLAMA.ok_body, done_reason="stop")
    upstream.respond = lambda request: json_response(200, body)
    request = ChatRequest(
        messages=(Message("user", "Hi"),),
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
    )
    result = await upstream.adapter(OLLAMA).complete(request, upstream.target(OLLAMA))
    assert result.finish_reason == "stop"
    assert upstream.last_json()["format"] == "json"


async def test_ollama_model_not_found(upstream: Upstream) -> None:
    error = await complete_error(
        upstream,
        OLLAMA,
        lambda r: json_response(404, {"error": 'model "nope" not found, try pulling it'}),
    )
    assert error.error_class is ErrorClass.NOT_FOUND
    assert 'model "nope" not found' in error.message


# --- Anthropic -----------------------------------------------------------------------------------


async def test_anthropic_request_shape(upstream: Upstream) -> None:
    upstream.respond = lambda request: json_response(200, ANTHROPIC.ok_body)
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
    await upstream.adapter(ANTHROPIC).complete(request, upstream.target(ANTHROPIC))
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


async def test_anthropic_stream_request_shape(upstream: Upstream) -> None:
    upstream.respond = whole_stream(ANTHROPIC)
    await collect(upstream.adapter(ANTHROPIC).stream(REQUEST, upstream.target(ANTHROPIC)))
    sent = upstream.last_json()
    assert sent["stream"] is True
    assert sent["max_tokens"] == 64
    assert sent["system"] == "Be brief."
    assert upstream.last.headers["accept"] == "text/event-stream"
    assert upstream.last.headers["anthropic-version"] == "2023-06-01"


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
async def test_anthropic_stop_reasons(upstream: Upstream, stop_reason: str, expected: str) -> None:
    body = dict(ANTHROPIC.ok_body, stop_reason=stop_reason)
    upstream.respond = lambda r: json_response(200, body)
    result = await upstream.adapter(ANTHROPIC).complete(MINIMAL, upstream.target(ANTHROPIC))
    assert result.finish_reason == expected


async def test_anthropic_error_event(upstream: Upstream) -> None:
    overloaded = _sse(
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    )
    before = ANTHROPIC.stream_parts[:1] + overloaded
    error, got = await stream_error(upstream, ANTHROPIC, streamed(ANTHROPIC, before))
    assert got == []
    assert error.error_class is ErrorClass.SERVER_ERROR
    assert not error.permanent
    assert "Overloaded" in error.message

    after = ANTHROPIC.stream_parts[: ANTHROPIC.first_text] + overloaded
    error, got = await stream_error(upstream, ANTHROPIC, streamed(ANTHROPIC, after))
    assert [c.text for c in got] == ["Hel"]
    assert error.error_class is ErrorClass.STREAM_INTERRUPTED
    assert "Overloaded" in error.message


# --- Gemini --------------------------------------------------------------------------------------


async def test_gemini_request_shape(upstream: Upstream) -> None:
    upstream.respond = lambda request: json_response(200, GEMINI.ok_body)
    await upstream.adapter(GEMINI).complete(REQUEST, upstream.target(GEMINI))
    assert upstream.last.headers["x-goog-api-key"] == KEY
    assert "key" not in upstream.last.query
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

    upstream.respond = whole_stream(GEMINI)
    await collect(upstream.adapter(GEMINI).stream(MINIMAL, upstream.target(GEMINI)))
    assert upstream.last_json() == {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
    assert dict(upstream.last.query) == {"alt": "sse"}


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
async def test_gemini_finish_reasons(upstream: Upstream, reason: str, expected: str) -> None:
    body = {
        "candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}],
        "usageMetadata": {
            "promptTokenCount": 3,
            "candidatesTokenCount": 1,
            "thoughtsTokenCount": 4,
        },
    }
    upstream.respond = lambda r: json_response(200, body)
    result = await upstream.adapter(GEMINI).complete(MINIMAL, upstream.target(GEMINI))
    assert result.finish_reason == expected
    assert result.usage == Usage(3, 5)  # thinking tokens are billed as output


async def test_gemini_blocked_prompt_and_thoughts(upstream: Upstream) -> None:
    blocked = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 3},
    }
    upstream.respond = lambda r: json_response(200, blocked)
    result = await upstream.adapter(GEMINI).complete(MINIMAL, upstream.target(GEMINI))
    assert (result.text, result.finish_reason) == ("", "content_filter")

    thoughts = {
        "candidates": [
            {
                "content": {"parts": [{"text": "thinking...", "thought": True}, {"text": "Hi"}]},
                "finishReason": "STOP",
            }
        ]
    }
    upstream.respond = lambda r: json_response(200, thoughts)
    result = await upstream.adapter(GEMINI).complete(MINIMAL, upstream.target(GEMINI))
    assert result.text == "Hi"


async def test_gemini_invalid_key_is_auth(upstream: Upstream) -> None:
    body = {
        "error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [{"reason": "API_KEY_INVALID"}],
        }
    }
    error = await complete_error(upstream, GEMINI, lambda r: json_response(400, body))
    assert error.error_class is ErrorClass.AUTH
    assert error.permanent
    error, _ = await stream_error(upstream, GEMINI, lambda r: json_response(400, body))
    assert error.error_class is ErrorClass.AUTH


# --- registry and helpers ------------------------------------------------------------------------


async def test_registry() -> None:
    assert set(ADAPTER_CLASSES) == {"ollama", "openai_compatible", "anthropic", "gemini"}
    async with new_session() as session, new_session() as other:
        adapter: ProviderAdapter = adapter_for("anthropic", session)
        assert isinstance(adapter, AnthropicAdapter)
        assert adapter_for("anthropic", session) is adapter
        assert adapter_for("anthropic", other) is not adapter
        assert isinstance(adapter_for("gemini", session), GeminiAdapter)
        with pytest.raises(KeyError) as info:
            adapter_for("bedrock", session)
    assert isinstance(info.value, UnknownProviderKind)
    assert "unknown provider kind 'bedrock'" in str(info.value)


def test_parse_retry_after() -> None:
    def headers(**values: str) -> CIMultiDict[str]:
        return CIMultiDict((name.replace("_", "-"), value) for name, value in values.items())

    assert parse_retry_after(headers(Retry_After="7")) == 7.0
    assert parse_retry_after(headers(Retry_After="0.5")) == 0.5
    past = formatdate(time.time() - 60, usegmt=True)
    assert parse_retry_after(headers(Retry_After=past)) == 0.0
    assert parse_retry_after(headers(Retry_After="soon", retry_after_ms="250")) == 0.25
    assert parse_retry_after(headers(Retry_After="-3")) is None
    assert parse_retry_after(headers(Retry_After="nan")) is None
    assert parse_retry_after(headers(retry_after_ms="junk")) is None
    assert parse_retry_after(headers(RETRY_AFTER="2")) == 2.0  # header names are case-insensitive
    assert parse_retry_after(CIMultiDict()) is None


# --- rate-limit headers (providers/ratelimits.py, docs/adr/0011) ----------------------------------

RATE_LIMIT_HEADERS = {
    "x-ratelimit-limit-requests": "30",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "2s",
    "anthropic-ratelimit-tokens-limit": "1000",
    "anthropic-ratelimit-tokens-remaining": "10",
    "anthropic-ratelimit-tokens-reset": "2099-01-01T00:00:00Z",
}


@by_kind
async def test_answers_carry_the_rate_limit_headers(case: Case, upstream: Upstream) -> None:
    """Every adapter hands the parsed headers back on the result, whichever protocol."""
    upstream.respond = lambda r: json_response(200, case.ok_body, RATE_LIMIT_HEADERS)
    before = time.time()
    result = await upstream.adapter(case).complete(REQUEST, upstream.target(case))
    limits = result.rate_limits
    assert limits is not None and limits.observed_at >= before
    assert limits.requests_remaining == 0
    assert limits.requests_reset_at == pytest.approx(limits.observed_at + 2)
    assert limits.tokens_remaining == 10
    assert result.text == "Hello"


@by_kind
async def test_first_stream_chunk_carries_the_rate_limit_headers(
    case: Case, upstream: Upstream
) -> None:
    upstream.respond = streamed(case, [b"".join(case.stream_parts)], headers=RATE_LIMIT_HEADERS)
    chunks = await collect(upstream.adapter(case).stream(REQUEST, upstream.target(case)))
    assert chunks[0].rate_limits is not None and chunks[0].rate_limits.requests_remaining == 0
    assert all(c.rate_limits is None for c in chunks[1:])
    assert "".join(c.text for c in chunks) == "Hello"


@by_kind
async def test_errors_carry_the_rate_limit_headers(case: Case, upstream: Upstream) -> None:
    """A 429 tells what is spent and for how long, besides its Retry-After."""
    headers = {**RATE_LIMIT_HEADERS, "retry-after": "2"}

    def respond(request: web.Request) -> web.Response:
        return json_response(429, case.error_body("slow down"), headers)

    error = await complete_error(upstream, case, respond)
    assert error.error_class is ErrorClass.RATE_LIMITED and error.retry_after == 2
    assert error.rate_limits is not None and error.rate_limits.requests_remaining == 0
    error, got = await stream_error(upstream, case, respond)
    assert got == [] and error.rate_limits is not None


@by_kind
async def test_no_rate_limit_headers_means_no_snapshot(case: Case, upstream: Upstream) -> None:
    """Upstreams that send none (local servers, the usual case) get nothing parsed."""
    upstream.respond = lambda r: json_response(200, case.ok_body, {"x-request-id": "abc"})
    result = await upstream.adapter(case).complete(REQUEST, upstream.target(case))
    assert result.rate_limits is None
    upstream.respond = whole_stream(case)
    chunks = await collect(upstream.adapter(case).stream(REQUEST, upstream.target(case)))
    assert all(c.rate_limits is None for c in chunks)
    error = await complete_error(upstream, case, lambda r: json_response(503, {}))
    assert error.rate_limits is None
