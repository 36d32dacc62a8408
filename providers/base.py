"""The small interface every provider adapter speaks.

A request is normalised once by the API layer into a :class:`ChatRequest`; each adapter turns it
into its wire protocol and turns the answer back into a :class:`ChatResult` or a stream of
:class:`StreamChunk`. Every failure leaves an adapter as a :class:`ProviderError` that says whether
it is worth retrying. Retry, backoff, fallback and cooldown live in the router (ADR 0002).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import aiohttp

    from providers.ratelimits import RateLimits


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message; ``content`` is plain text (text parts are joined by the API layer)."""

    role: str  # "system", "user", "assistant"
    content: str


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A provider-neutral chat completion request."""

    messages: tuple[Message, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    # OpenAI-style response_format, e.g. {"type": "json_object"}; adapters map what they can.
    response_format: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how one attempt is sent: a deployment resolved against its provider."""

    base_url: str
    upstream_model: str
    api_key: str = ""
    connect_timeout: float = 5.0
    first_byte_timeout: float = 30.0
    total_timeout: float = 120.0


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ChatResult:
    """A whole answer from an upstream."""

    text: str
    finish_reason: str  # normalised: "stop", "length", "content_filter", "error"
    usage: Usage = field(default_factory=Usage)
    upstream_model: str = ""
    # What the upstream said about its rate limits (providers/ratelimits.py); None when nothing.
    rate_limits: RateLimits | None = None


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """A piece of a streamed answer.

    ``text`` may be empty on the last chunk, which carries ``finish_reason`` and, when the upstream
    reports it, ``usage``. The first chunk carries the response's ``rate_limits``, if any.
    """

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    rate_limits: RateLimits | None = None


class ErrorClass(enum.StrEnum):
    """Why an attempt failed, as recorded in the audit log."""

    RATE_LIMITED = "rate_limited"  # 429
    SERVER_ERROR = "server_error"  # 5xx
    TIMEOUT = "timeout"
    CONNECT = "connect_error"
    AUTH = "auth_error"  # 401, 403
    NOT_FOUND = "not_found"  # 404
    BAD_REQUEST = "bad_request"  # 400, 422
    MALFORMED = "malformed_response"  # the upstream answered something we cannot read
    STREAM_INTERRUPTED = "stream_interrupted"


class ProviderError(Exception):
    """An attempt failed.

    ``permanent`` errors are not retried against the same deployment (bad key, bad request, unknown
    model); transient ones (429, 5xx, timeouts, connection errors) are. ``retry_after`` carries the
    upstream's Retry-After in seconds when it sent one, ``rate_limits`` its rate-limit headers. The
    message never contains secrets.
    """

    def __init__(
        self,
        message: str,
        *,
        error_class: ErrorClass,
        permanent: bool,
        status_code: int | None = None,
        retry_after: float | None = None,
        rate_limits: RateLimits | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_class = error_class
        self.permanent = permanent
        self.status_code = status_code
        self.retry_after = retry_after
        self.rate_limits = rate_limits


class ProviderAdapter(Protocol):
    """One wire protocol. Instances are cheap and stateless; the ``aiohttp.ClientSession`` (its
    connection pool) is shared by every adapter of the event loop (``providers.clients``)."""

    def __init__(self, session: aiohttp.ClientSession) -> None: ...

    async def complete(self, request: ChatRequest, target: Target) -> ChatResult:
        """Send the request and return the whole answer, or raise :class:`ProviderError`."""
        ...

    def stream(self, request: ChatRequest, target: Target) -> AsyncGenerator[StreamChunk, None]:
        """Yield the answer as it arrives, or raise :class:`ProviderError`.

        Errors before the first chunk let the router fall over; errors after it surface as
        ``ProviderError(error_class=STREAM_INTERRUPTED)``.
        """
        ...

    async def probe(self, target: Target) -> bool:
        """Cheap reachability check for background health checks (no completion is generated)."""
        ...
