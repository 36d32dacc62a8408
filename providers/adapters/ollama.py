"""Ollama's native chat API (``/api/chat``), streamed as newline-delimited JSON."""

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
    iter_lines,
    malformed,
    post_json,
    probe_get,
    stream_chunks,
    strip_base,
    truncated,
)
from providers.base import ChatRequest, ChatResult, StreamChunk, Target, Usage

_JSON_FORMATS = frozenset({"json_object", "json_schema"})


@lru_cache(maxsize=256)
def _headers(api_key: str) -> Headers:
    headers = {"Content-Type": JSON_CONTENT_TYPE}
    if api_key:  # Ollama itself has no auth, but it is often behind a proxy that does
        headers["Authorization"] = f"Bearer {api_key}"
    return frozen_headers(headers)


def _finish(done_reason: Any) -> str:
    # Ollama says "stop", "length", or "load"/"unload" for housekeeping calls.
    return "length" if done_reason == "length" else "stop"


def _usage(payload: dict[str, Any]) -> Usage:
    return Usage(
        input_tokens=int(payload.get("prompt_eval_count") or 0),
        output_tokens=int(payload.get("eval_count") or 0),
    )


def _text(payload: dict[str, Any]) -> str:
    message = payload.get("message")
    if message is None:
        return ""
    content = message.get("content") or ""
    if not isinstance(content, str):
        raise TypeError("content is not a string")
    return content


class OllamaAdapter:
    """Speaks ``POST {base_url}/api/chat``; ``base_url`` is the server root, e.g.
    ``http://localhost:11434``."""

    __slots__ = ("_session",)

    label: ClassVar[str] = "ollama"

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    @staticmethod
    def _payload(request: ChatRequest, target: Target, *, stream: bool) -> bytes:
        options: dict[str, Any] = {}
        if request.max_tokens is not None:
            options["num_predict"] = request.max_tokens
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.top_p is not None:
            options["top_p"] = request.top_p
        if request.stop:
            options["stop"] = list(request.stop)
        body: dict[str, Any] = {
            "model": target.upstream_model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            # Ollama streams by default: always say which one we want.
            "stream": stream,
        }
        if options:
            body["options"] = options
        if request.response_format and request.response_format.get("type") in _JSON_FORMATS:
            body["format"] = "json"
        return orjson.dumps(body)

    async def complete(self, request: ChatRequest, target: Target) -> ChatResult:
        """Send a non-streaming chat request and return the whole answer."""
        data, limits = await post_json(
            self._session,
            f"{strip_base(target.base_url)}/api/chat",
            payload=self._payload(request, target, stream=False),
            headers=_headers(target.api_key),
            target=target,
            label=self.label,
        )
        try:
            if "message" not in data:
                raise KeyError("message")
            return ChatResult(
                text=_text(data),
                finish_reason=_finish(data.get("done_reason")),
                usage=_usage(data),
                upstream_model=data.get("model") or target.upstream_model,
                rate_limits=limits,
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise malformed(self.label, f"unexpected body ({type(exc).__name__})") from exc

    def stream(self, request: ChatRequest, target: Target) -> AsyncGenerator[StreamChunk, None]:
        """Stream the answer as NDJSON; the ``done: true`` line ends it with finish and usage."""
        return stream_chunks(
            self._session,
            f"{strip_base(target.base_url)}/api/chat",
            payload=self._payload(request, target, stream=True),
            headers=_headers(target.api_key),
            target=target,
            label=self.label,
            parse=lambda response: self._parse_stream(response, target.api_key),
        )

    async def _parse_stream(
        self, response: aiohttp.ClientResponse, api_key: str
    ) -> AsyncGenerator[StreamChunk, None]:
        async for line in iter_lines(response):
            if not line:
                continue
            payload = orjson.loads(line)
            if payload.get("error") is not None:
                raise error_from_payload(payload, label=self.label, api_key=api_key)
            if text := _text(payload):
                yield StreamChunk(text=text)
            if payload.get("done"):
                yield StreamChunk(
                    finish_reason=_finish(payload.get("done_reason")), usage=_usage(payload)
                )
                return
        raise truncated(self.label)

    async def probe(self, target: Target) -> bool:
        """``GET {base_url}/api/tags`` answers 2xx."""
        return await probe_get(
            self._session,
            f"{strip_base(target.base_url)}/api/tags",
            headers=_headers(target.api_key),
            target=target,
        )
