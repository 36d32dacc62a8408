"""Anthropic Messages API (``/v1/messages``), streamed as typed server-sent events."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from functools import lru_cache
from typing import Any, ClassVar

import aiohttp
import orjson

from providers.adapters._http import (
    JSON_CONTENT_TYPE,
    Headers,
    error_from_payload,
    frozen_headers,
    iter_sse,
    malformed,
    post_json,
    probe_get,
    stream_chunks,
    strip_base,
    truncated,
)
from providers.base import ChatRequest, ChatResult, Message, StreamChunk, Target, Usage

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024
"""Anthropic requires max_tokens; used when the client did not ask for a limit."""

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "refusal": "content_filter",
}

# Error event types → the HTTP status Anthropic uses for the same error, to reuse that mapping.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


@lru_cache(maxsize=256)
def _headers(api_key: str, accept: str = JSON_CONTENT_TYPE) -> Headers:
    headers = {
        "Content-Type": JSON_CONTENT_TYPE,
        "Accept": accept,
        "anthropic-version": API_VERSION,
    }
    if api_key:
        headers["x-api-key"] = api_key
    return frozen_headers(headers)


def _finish(reason: Any) -> str:
    # tool_use / pause_turn and unknown future values: the turn ended, nothing was cut.
    return _FINISH_REASONS.get(reason, "stop") if isinstance(reason, str) else "stop"


def _input_tokens(usage: dict[str, Any]) -> int:
    # Cached prompt tokens are reported apart; count them so input means the whole prompt.
    return (
        int(usage.get("input_tokens") or 0)
        + int(usage.get("cache_creation_input_tokens") or 0)
        + int(usage.get("cache_read_input_tokens") or 0)
    )


def _split_messages(messages: tuple[Message, ...]) -> tuple[str, list[dict[str, str]]]:
    """System text for the top-level field, and the turns with same-role neighbours merged
    (the API rejects two user or two assistant turns in a row)."""
    system: list[str] = []
    turns: list[dict[str, str]] = []
    for message in messages:
        if message.role == "system":
            system.append(message.content)
            continue
        role = "assistant" if message.role == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n\n" + message.content
        else:
            turns.append({"role": role, "content": message.content})
    return "\n\n".join(system), turns


class AnthropicAdapter:
    """Speaks ``POST {base_url}/v1/messages``; ``base_url`` is e.g. ``https://api.anthropic.com``.

    ``response_format`` is not mapped: the Messages API has no JSON mode.
    """

    __slots__ = ("_session",)

    label: ClassVar[str] = "anthropic"

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    @staticmethod
    def _payload(request: ChatRequest, target: Target, *, stream: bool) -> bytes:
        system, turns = _split_messages(request.messages)
        body: dict[str, Any] = {
            "model": target.upstream_model,
            "max_tokens": (
                request.max_tokens if request.max_tokens is not None else DEFAULT_MAX_TOKENS
            ),
            "messages": turns,
        }
        if system:
            body["system"] = system
        if request.temperature is not None:
            # OpenAI allows 0..2, Anthropic 0..1: clamp rather than fail the request.
            body["temperature"] = min(max(request.temperature, 0.0), 1.0)
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop_sequences"] = list(request.stop)
        if stream:
            body["stream"] = True
        return orjson.dumps(body)

    async def complete(self, request: ChatRequest, target: Target) -> ChatResult:
        """Send a non-streaming message request and return the whole answer."""
        data, limits = await post_json(
            self._session,
            f"{strip_base(target.base_url)}/v1/messages",
            payload=self._payload(request, target, stream=False),
            headers=_headers(target.api_key),
            target=target,
            label=self.label,
        )
        try:
            text = "".join(
                block["text"] for block in data["content"] if block.get("type") == "text"
            )
            usage = data.get("usage") or {}
            return ChatResult(
                text=text,
                finish_reason=_finish(data.get("stop_reason")),
                usage=Usage(
                    input_tokens=_input_tokens(usage),
                    output_tokens=int(usage.get("output_tokens") or 0),
                ),
                upstream_model=data.get("model") or target.upstream_model,
                rate_limits=limits,
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise malformed(self.label, f"unexpected body ({type(exc).__name__})") from exc

    def stream(self, request: ChatRequest, target: Target) -> AsyncGenerator[StreamChunk, None]:
        """Stream the answer over SSE; the chunk for ``message_stop`` carries finish and usage."""
        return stream_chunks(
            self._session,
            f"{strip_base(target.base_url)}/v1/messages",
            payload=self._payload(request, target, stream=True),
            headers=_headers(target.api_key, "text/event-stream"),
            target=target,
            label=self.label,
            parse=lambda response: self._parse_stream(response, target.api_key),
        )

    async def _parse_stream(
        self, response: aiohttp.ClientResponse, api_key: str
    ) -> AsyncGenerator[StreamChunk, None]:
        input_tokens = output_tokens = 0
        have_usage = False
        finish = "stop"
        async for event, data in iter_sse(response):
            if event == "ping":
                continue
            payload = orjson.loads(data)
            if event == "message":  # no "event:" line: the type is also in the payload
                event = payload["type"]
            if event == "content_block_delta":
                delta = payload["delta"]
                if delta.get("type") == "text_delta" and (text := delta["text"]):
                    yield StreamChunk(text=text)
            elif event == "message_start":
                usage = payload["message"].get("usage")
                if usage:
                    have_usage = True
                    input_tokens = _input_tokens(usage)
                    output_tokens = int(usage.get("output_tokens") or 0)
            elif event == "message_delta":
                finish = _finish(payload["delta"].get("stop_reason"))
                usage = payload.get("usage")
                if usage:
                    have_usage = True
                    # Counts here are cumulative; input is only repeated by newer API versions.
                    output_tokens = int(usage.get("output_tokens") or output_tokens)
                    if usage.get("input_tokens") is not None:
                        input_tokens = _input_tokens(usage)
            elif event == "message_stop":
                yield StreamChunk(
                    finish_reason=finish,
                    usage=Usage(input_tokens, output_tokens) if have_usage else None,
                )
                return
            elif event == "error":
                error = payload.get("error")
                kind = error.get("type") if isinstance(error, dict) else None
                status = _ERROR_STATUS.get(kind) if isinstance(kind, str) else None
                raise error_from_payload(payload, label=self.label, api_key=api_key, status=status)
        raise truncated(self.label)

    async def probe(self, target: Target) -> bool:
        """``GET {base_url}/v1/models`` answers 2xx."""
        return await probe_get(
            self._session,
            f"{strip_base(target.base_url)}/v1/models",
            headers=_headers(target.api_key),
            target=target,
        )
