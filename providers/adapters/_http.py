"""Plumbing shared by the provider adapters.

Timeouts, the status/exception → :class:`ProviderError` table, Retry-After parsing, the line and
SSE readers and the two request shapes every adapter uses (one JSON POST, one streamed POST), on
the process's shared :class:`aiohttp.ClientSession` (ADR 0005). Keeping them here means the four
wire-protocol modules only describe their protocol. Both request shapes hand back what the
upstream's rate-limit headers say (``providers.ratelimits``, ADR 0011).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any

import aiohttp
import orjson
from aiohttp.http_exceptions import ContentEncodingError, LineTooLong
from multidict import CIMultiDict, CIMultiDictProxy, MultiMapping

from providers.base import ErrorClass, ProviderError, StreamChunk, Target
from providers.ratelimits import RateLimits, parse_rate_limits

MAX_ERROR_TEXT = 300
"""Upstream error text is cut to this many characters before it reaches a ProviderError."""

JSON_CONTENT_TYPE = "application/json"

STREAM_READ_BUFSIZE = 2 * 1024 * 1024
"""aiohttp's read buffer for streamed answers. Lines are read whole, and aiohttp refuses one longer
than twice its buffer (LineTooLong); the default buffer (256 KiB) is small for a big SSE event."""

Headers = CIMultiDictProxy[str]
"""Request headers in the form aiohttp takes without converting them first; build them once."""

ErrorHook = Callable[[ProviderError], ProviderError]
"""Lets an adapter re-classify an HTTP error its protocol reports unusually."""

StreamParser = Callable[[aiohttp.ClientResponse], AsyncGenerator[StreamChunk, None]]
"""Turns a 200 streamed response into text chunks followed by one final chunk.

It raises :class:`ProviderError` for error events and :func:`truncated` when the body ends before
the protocol's terminator; shape errors (KeyError, TypeError, ...) are mapped by the caller.
"""

# Exceptions a parser raises when the upstream's JSON is not the shape it expects.
_SHAPE_ERRORS = (KeyError, IndexError, TypeError, AttributeError, ValueError)

# What reading a stream raises besides ProviderError: aiohttp's own errors (its timeouts subclass
# TimeoutError too), and LineTooLong, which is not a ClientError.
_TRANSPORT_ERRORS = (aiohttp.ClientError, LineTooLong, TimeoutError)


def new_session() -> aiohttp.ClientSession:
    """A session configured for upstream calls; create it inside the event loop that will use it.

    One per event loop is shared by every adapter (``providers.clients``): it holds the connection
    pool. Every request passes its own timeouts (:func:`request_timeout`).
    """
    connector = aiohttp.TCPConnector(
        limit=4096,  # enough for a thousand concurrent slow upstream calls per process
        limit_per_host=0,
        keepalive_timeout=30,
        ttl_dns_cache=300,
        enable_cleanup_closed=True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        # Upstreams are configured by admins, never by callers: no proxies (or netrc) from the
        # environment.
        trust_env=False,
        auto_decompress=True,  # real providers gzip
        raise_for_status=False,  # the adapters map statuses themselves
        # Every caller shares the session: cookies an upstream sets are never sent back.
        cookie_jar=aiohttp.DummyCookieJar(),
        # Only for a request without timeouts of its own; the adapters always pass theirs.
        timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10, sock_read=60),
    )


def frozen_headers(headers: dict[str, str]) -> Headers:
    """Immutable request headers, to build once and send with every request of a target."""
    return CIMultiDictProxy(CIMultiDict(headers))


@lru_cache(maxsize=256)
def _timeout(connect: float, first_byte: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=None, connect=connect, sock_connect=connect, sock_read=first_byte
    )


def request_timeout(target: Target) -> aiohttp.ClientTimeout:
    """Per-request aiohttp timeouts (immutable, shared by targets with the same values).

    ``connect`` bounds getting a connection, waiting for a free one in the pool included;
    ``sock_read`` bounds the first byte and every gap between chunks. The deadline of the whole
    call is ``target.total_timeout`` in :func:`post_json` and the router's for streams.
    """
    return _timeout(target.connect_timeout, target.first_byte_timeout)


# --- error mapping -------------------------------------------------------------------------------


def classify_status(status: int) -> tuple[ErrorClass, bool]:
    """Map an HTTP status to ``(error_class, permanent)``."""
    if status == 429:
        return ErrorClass.RATE_LIMITED, False
    if status == 408:
        return ErrorClass.TIMEOUT, False
    if status in (401, 403):
        return ErrorClass.AUTH, True
    if status == 404:
        return ErrorClass.NOT_FOUND, True
    if status >= 500:
        return ErrorClass.SERVER_ERROR, False
    if status >= 400:
        return ErrorClass.BAD_REQUEST, True
    # 1xx/3xx (redirects are not followed): nothing we can read, maybe another replica can.
    return ErrorClass.MALFORMED, False


def _seconds(value: float) -> float | None:
    return value if math.isfinite(value) and value >= 0 else None


def parse_retry_after(headers: MultiMapping[str]) -> float | None:
    """Seconds to wait, from ``Retry-After`` (delta-seconds or HTTP date) or ``retry-after-ms``.

    ``headers`` is a case-insensitive multidict, as ``aiohttp.ClientResponse.headers`` is.
    """
    raw = headers.get("retry-after")
    if raw:
        raw = raw.strip()
        try:
            return _seconds(float(raw))
        except ValueError:
            pass
        when: datetime | None
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError, OverflowError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                # "-0000" parses to a naive datetime; HTTP dates are always GMT.
                when = when.replace(tzinfo=UTC)
            return max(0.0, when.timestamp() - time.time())
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            seconds = _seconds(float(raw_ms) / 1000.0)
        except ValueError:
            return None
        return seconds
    return None


def clean_text(text: str, api_key: str) -> str:
    """Make upstream text safe for an error message: no key, one line, at most MAX_ERROR_TEXT."""
    if api_key and api_key in text:
        # Some upstreams echo the key they rejected; redact before truncating so no prefix leaks.
        text = text.replace(api_key, "[redacted]")
    text = " ".join(text.split())
    if len(text) > MAX_ERROR_TEXT:
        text = text[: MAX_ERROR_TEXT - 1] + "…"
    return text


def error_text(payload: Any) -> str:
    """Pull the human-readable message out of the usual error bodies.

    OpenAI/Gemini/Anthropic: ``{"error": {"message": ...}}``; Ollama: ``{"error": "..."}``;
    FastAPI-style servers (vLLM, LiteLLM...): ``{"detail": ...}`` or ``{"message": ...}``.
    """
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, str):
            return error
        if isinstance(error, dict):
            message = error.get("message")
            if isinstance(message, str):
                return message
            return str(error)
        for key in ("message", "detail"):
            value = payload.get(key)
            if isinstance(value, str):
                return value
            if value is not None:
                return str(value)
    return ""


def _body_text(body: bytes) -> str:
    if not body:
        return ""
    try:
        text = error_text(orjson.loads(body))
    except orjson.JSONDecodeError:
        text = ""
    # Not JSON, or JSON we don't know: show the start of the raw body (HTML error pages...).
    return text or body[: MAX_ERROR_TEXT * 4].decode("utf-8", "replace")


def error_from_response(
    status: int, headers: MultiMapping[str], body: bytes, *, label: str, api_key: str
) -> ProviderError:
    """Build the ProviderError for a non-2xx response from its status, headers and whole body."""
    error_class, permanent = classify_status(status)
    retry_after = None
    if error_class in (ErrorClass.RATE_LIMITED, ErrorClass.SERVER_ERROR):
        retry_after = parse_retry_after(headers)
    text = clean_text(_body_text(body), api_key)
    message = f"{label}: HTTP {status}: {text}" if text else f"{label}: HTTP {status}"
    return ProviderError(
        message,
        error_class=error_class,
        permanent=permanent,
        status_code=status,
        retry_after=retry_after,
        rate_limits=parse_rate_limits(headers),
    )


def error_from_payload(
    payload: Any, *, label: str, api_key: str, status: int | None = None
) -> ProviderError:
    """Build the ProviderError for an error reported inside a 200 body (a stream's error event).

    ``status`` is the HTTP-equivalent status when the protocol gives one; without it the error
    is treated as a transient upstream failure.
    """
    if status is None and isinstance(payload, dict):
        error = payload.get("error")
        code = error.get("code") if isinstance(error, dict) else None
        # OpenRouter and some proxies put the HTTP status in error.code.
        if isinstance(code, int) and 400 <= code <= 599:
            status = code
    if status is None:
        error_class, permanent = ErrorClass.SERVER_ERROR, False
    else:
        error_class, permanent = classify_status(status)
    text = clean_text(error_text(payload), api_key) or "unknown error"
    return ProviderError(
        f"{label}: upstream error: {text}", error_class=error_class, permanent=permanent
    )


def error_from_transport(
    exc: BaseException, *, label: str, api_key: str, started: bool
) -> ProviderError:
    """Map a failure to send or read; ``started`` means the consumer already got part of the answer.

    ``exc`` is an ``aiohttp.ClientError``, a ``TimeoutError``, aiohttp's ``LineTooLong``, or the
    bare ``ValueError`` aiohttp raises for a request it refuses to send.
    """
    name = type(exc).__name__
    refused = isinstance(exc, ValueError) and not isinstance(exc, aiohttp.ClientError)
    # A refused header value can be the key: never quote that message. The others are redacted and
    # cut like upstream text (aiohttp's messages name the host, never the headers).
    detail = "" if refused else clean_text(str(exc), api_key)
    what = f"{name}: {detail}" if detail else name
    if started:
        error_class, permanent, why = ErrorClass.STREAM_INTERRUPTED, False, "stream interrupted"
    elif isinstance(
        exc,
        (
            aiohttp.ClientConnectorError,  # refused, DNS, TLS handshake, proxy
            aiohttp.ConnectionTimeoutError,  # connect timeout, waiting for the pool included
            aiohttp.ServerFingerprintMismatch,
        ),
    ):
        error_class, permanent, why = ErrorClass.CONNECT, False, "cannot connect"
    elif isinstance(exc, TimeoutError):  # SocketTimeoutError: nothing read within sock_read
        error_class, permanent, why = ErrorClass.TIMEOUT, False, "timed out"
    elif isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
        return invalid_url(label, what)
    elif refused:
        # An unsendable header (a key with a newline...): a deployment configuration fault. Not
        # BAD_REQUEST, which would stop the router's fallback chain.
        error_class, permanent, why = ErrorClass.CONNECT, True, "cannot send request"
    elif isinstance(exc, aiohttp.ClientPayloadError) and isinstance(
        exc.__cause__, ContentEncodingError
    ):
        error_class, permanent, why = ErrorClass.MALFORMED, False, "undecodable body"
    elif isinstance(exc, LineTooLong):
        error_class, permanent, why = ErrorClass.MALFORMED, False, "line too long"
    else:
        # ServerDisconnectedError, ClientPayloadError (body cut short), ClientOSError,
        # ClientResponseError (unparsable status line or headers)...: the upstream dropped us.
        error_class, permanent, why = ErrorClass.SERVER_ERROR, False, "connection failed"
    return ProviderError(f"{label}: {why} ({what})", error_class=error_class, permanent=permanent)


def invalid_url(label: str, detail: str = "") -> ProviderError:
    """The configured base_url cannot be used (unparsable, not http/https): a configuration fault
    of this deployment only."""
    return ProviderError(
        f"{label}: invalid base_url ({detail})" if detail else f"{label}: invalid base_url",
        error_class=ErrorClass.CONNECT,
        permanent=True,
    )


def malformed(label: str, detail: str) -> ProviderError:
    """A 2xx answer we cannot read."""
    return ProviderError(
        f"{label}: malformed response: {detail}", error_class=ErrorClass.MALFORMED, permanent=False
    )


def truncated(label: str) -> ProviderError:
    """The body ended before the protocol's terminator (mapped to STREAM_INTERRUPTED once
    chunks were delivered)."""
    return malformed(label, "stream ended before its terminator")


def _interrupted(exc: ProviderError) -> ProviderError:
    # Once text reached the consumer the router cannot fall over; every failure is an interruption.
    return ProviderError(
        exc.message
        if exc.error_class is ErrorClass.STREAM_INTERRUPTED
        else f"stream interrupted: {exc.message}",
        error_class=ErrorClass.STREAM_INTERRUPTED,
        permanent=False,
        status_code=exc.status_code,
        retry_after=exc.retry_after,
    )


# --- request shapes ------------------------------------------------------------------------------


async def post_json(
    session: aiohttp.ClientSession,
    url: str,
    *,
    payload: bytes,
    headers: Headers,
    target: Target,
    label: str,
    on_http_error: ErrorHook | None = None,
) -> tuple[dict[str, Any], RateLimits | None]:
    """POST a JSON body; return the decoded JSON object of a 2xx answer and the rate limits its
    headers report (None when they report none).

    The whole call (connect, upload, wait, download) is bounded by ``target.total_timeout``.
    """
    try:
        async with (
            asyncio.timeout(target.total_timeout),
            session.post(
                url,
                data=payload,
                headers=headers,
                timeout=request_timeout(target),
                allow_redirects=False,
            ) as response,
        ):
            status = response.status
            body = await response.read()
    except (aiohttp.ClientError, ValueError) as exc:
        # Before TimeoutError, which aiohttp's own timeouts subclass. "from None": a chained aiohttp
        # message is unredacted and would show up in tracebacks.
        raise error_from_transport(
            exc, label=label, api_key=target.api_key, started=False
        ) from None
    except TimeoutError:
        raise ProviderError(
            f"{label}: no answer within {target.total_timeout:g}s",
            error_class=ErrorClass.TIMEOUT,
            permanent=False,
        ) from None
    if not 200 <= status < 300:
        error = error_from_response(
            status, response.headers, body, label=label, api_key=target.api_key
        )
        raise on_http_error(error) if on_http_error else error
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise malformed(label, "body is not JSON") from None
    if not isinstance(data, dict):
        raise malformed(label, "body is not a JSON object")
    return data, parse_rate_limits(response.headers)


async def stream_chunks(
    session: aiohttp.ClientSession,
    url: str,
    *,
    payload: bytes,
    headers: Headers,
    target: Target,
    label: str,
    parse: StreamParser,
    on_http_error: ErrorHook | None = None,
) -> AsyncGenerator[StreamChunk, None]:
    """POST a JSON body and yield what ``parse`` makes of the streamed answer.

    The response is released on every path, including a consumer that stops early (``aclose()`` on
    this generator); an unfinished body closes its connection rather than going back to the pool.
    Errors before the first yielded chunk keep their own class so the router can fall over; after
    it they all become STREAM_INTERRUPTED. The total deadline is the router's. The first chunk
    carries the rate limits the response headers report.
    """
    started = False
    response: aiohttp.ClientResponse | None = None
    try:
        async with session.post(
            url,
            data=payload,
            headers=headers,
            timeout=request_timeout(target),
            allow_redirects=False,
            read_bufsize=STREAM_READ_BUFSIZE,
        ) as response:
            status = response.status
            if not 200 <= status < 300:
                body = await response.read()
                error = error_from_response(
                    status, response.headers, body, label=label, api_key=target.api_key
                )
                raise on_http_error(error) if on_http_error else error
            limits = parse_rate_limits(response.headers)
            async with aclosing(parse(response)) as chunks:
                async for chunk in chunks:
                    if limits is not None:
                        chunk, limits = replace(chunk, rate_limits=limits), None
                    started = True
                    yield chunk
    except ProviderError as exc:
        if started:
            raise _interrupted(exc) from exc
        raise
    except _TRANSPORT_ERRORS as exc:
        raise error_from_transport(
            exc, label=label, api_key=target.api_key, started=started
        ) from None
    except _SHAPE_ERRORS as exc:
        if response is None:
            # aiohttp refused to send the request (a header value with a newline...).
            raise error_from_transport(
                exc, label=label, api_key=target.api_key, started=False
            ) from None
        error = malformed(label, f"unexpected stream event ({type(exc).__name__})")
        raise (_interrupted(error) if started else error) from exc


async def probe_get(
    session: aiohttp.ClientSession, url: str, *, headers: Headers, target: Target
) -> bool:
    """True when ``GET url`` answers 2xx in time. The body is never read (model lists are big)."""
    try:
        async with (
            asyncio.timeout(target.total_timeout),
            session.get(
                url, headers=headers, timeout=request_timeout(target), allow_redirects=False
            ) as response,
        ):
            return 200 <= response.status < 300
    except (aiohttp.ClientError, ValueError, TimeoutError):
        return False


# --- body readers --------------------------------------------------------------------------------


async def iter_lines(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """Yield the body's lines as text (UTF-8), without their terminator (LF, CRLF or CR).

    aiohttp hands over whole lines however the network split the body; a last line without a
    terminator is delivered too.
    """
    readline = response.content.readline
    while raw := await readline():
        line = raw.decode("utf-8", "replace")
        if line[-1] == "\n":
            line = line[:-1]
        if line[-1:] == "\r":
            line = line[:-1]
        if "\r" in line:  # bare CRs end lines too (the SSE spec allows them)
            for part in line.split("\r"):
                yield part
        else:
            yield line


async def iter_sse(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str]]:
    """Yield ``(event, data)`` for each server-sent event (``event`` defaults to "message").

    Comments (keep-alives) and ``id``/``retry`` fields are ignored; multi-line data is joined with
    newlines. An event not followed by a blank line at end of body is still delivered: several
    upstreams omit the final blank line and the parser's terminator check catches real truncation.
    """
    event = ""
    data: list[str] = []
    async for line in iter_lines(response):
        if not line:
            if data:
                yield event or "message", data[0] if len(data) == 1 else "\n".join(data)
                data = []
            event = ""
            continue
        if line[0] == ":":
            continue
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    if data:
        yield event or "message", "\n".join(data)


def strip_base(base_url: str) -> str:
    """Base URL without trailing slash, so paths can be appended with a leading one."""
    return base_url.rstrip("/")
