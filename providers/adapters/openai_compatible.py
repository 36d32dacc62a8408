"""OpenAI Chat Completions wire protocol (OpenAI, Groq, Together, Mistral, vLLM, LM Studio...)."""

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
from providers.base import ChatRequest, ChatResult, StreamChunk, Target, Usage

# Anything else ("tool_calls", "function_call", provider extras) ended the turn normally.
_FINISH_REASONS = {"length": "length", "content_filter": "content_filter"}


def _finish(reason: Any) -> str:
    return _FINISH_REASONS.get(reason, "stop") if isinstance(reason, str) else "stop"


@lru_cache(maxsize=256)
def _headers(api_key: str, accept: str = JSON_CONTENT_TYPE) -> Headers:
    headers = {"Content-Type": JSON_CONTENT_TYPE, "Accept": accept}
    if api_key:  # local servers (vLLM, LM Studio) often run without a key
        headers["Authorization"] = f"Bearer {api_key}"
    return frozen_headers(headers)


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(
        input_tokens=int(raw.get("prompt_tokens") or 0),
        output_tokens=int(raw.get("completion_tokens") or 0),
    )


class OpenAICompatibleAdapter:
    """Speaks ``POST {base_url}/chat/completions``; ``base_url`` already ends in ``/v1`` (or the
    provider's equivalent prefix, e.g. ``https://api.groq.com/openai/v1``)."""

    __slots__ = ("_session",)

    label: ClassVar[str] = "openai_compatible"

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    @staticmethod
    def _payload(request: ChatRequest, target: Target, *, stream: bool) -> bytes:
        body: dict[str, Any] = {
            "model": target.upstream_model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        }
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop"] = list(request.stop)
        if request.response_format is not None:
            body["response_format"] = request.response_format
        if stream:
            body["stream"] = True
            # Without this the stream carries no token counts.
            body["stream_options"] = {"include_usage": True}
        return orjson.dumps(body)

    async def complete(self, request: ChatRequest, target: Target) -> ChatResult:
        """Send a non-streaming completion and return the whole answer."""
        data, limits = await post_json(
            self._session,
            f"{strip_base(target.base_url)}/chat/completions",
            payload=self._payload(request, target, stream=False),
            headers=_headers(target.api_key),
            target=target,
            label=self.label,
        )
        try:
            choice = data["choices"][0]
            content = choice["message"].get("content")
            if content is not None and not isinstance(content, str):
                raise TypeError("content is not a string")
            return ChatResult(
                text=content or "",
                finish_reason=_finish(choice.get("finish_reason")),
                usage=_usage(data.get("usage")) or Usage(),
                upstream_model=data.get("model") or target.upstream_model,
                rate_limits=limits,
            )
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise malformed(self.label, f"unexpected body ({type(exc).__name__})") from exc

    def stream(self, request: ChatRequest, target: Target) -> AsyncGenerator[StreamChunk, None]:
        """Stream the answer over SSE; the last chunk carries finish_reason and usage."""
        return stream_chunks(
            self._session,
            f"{strip_base(target.base_url)}/chat/completions",
            payload=self._payload(request, target, stream=True),
            headers=_headers(target.api_key, "text/event-stream"),
            target=target,
            label=self.label,
            parse=lambda response: self._parse_stream(response, target.api_key),
        )

    async def _parse_stream(
        self, response: aiohttp.ClientResponse, api_key: str
    ) -> AsyncGenerator[StreamChunk, None]:
        finish: str | None = None
        usage: Usage | None = None
        async for event, data in iter_sse(response):
            if data == "[DONE]":
                yield StreamChunk(finish_reason=finish or "stop", usage=usage)
                return
            payload = orjson.loads(data)
            if event == "error" or payload.get("error") is not None:
                raise error_from_payload(payload, label=self.label, api_key=api_key)
            if (raw_usage := payload.get("usage")) is not None:
                # With include_usage it arrives in a last chunk whose choices are empty.
                usage = _usage(raw_usage)
            if choices := payload.get("choices"):
                choice = choices[0]
                delta = choice.get("delta")
                if delta and (text := delta.get("content")):
                    yield StreamChunk(text=text)
                if reason := choice.get("finish_reason"):
                    finish = _finish(reason)
        if finish is None:
            raise truncated(self.label)
        # finish_reason was seen but no [DONE]: some servers (older llama.cpp) never send it.
        yield StreamChunk(finish_reason=finish, usage=usage)

    async def probe(self, target: Target) -> bool:
        """``GET {base_url}/models`` answers 2xx."""
        return await probe_get(
            self._session,
            f"{strip_base(target.base_url)}/models",
            headers=_headers(target.api_key),
            target=target,
        )
