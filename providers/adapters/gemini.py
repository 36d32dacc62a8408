"""Google Gemini API (``generateContent`` / ``streamGenerateContent``), streamed as SSE."""

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
from providers.base import (
    ChatRequest,
    ChatResult,
    ErrorClass,
    Message,
    ProviderError,
    StreamChunk,
    Target,
    Usage,
)

_JSON_FORMATS = frozenset({"json_object", "json_schema"})

_FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}


@lru_cache(maxsize=256)
def _headers(api_key: str, accept: str = JSON_CONTENT_TYPE) -> Headers:
    headers = {"Content-Type": JSON_CONTENT_TYPE, "Accept": accept}
    if api_key:  # a header, not ?key=, so the key never lands in URLs or logs
        headers["x-goog-api-key"] = api_key
    return frozen_headers(headers)


def _finish(reason: Any) -> str:
    # OTHER, LANGUAGE, MALFORMED_FUNCTION_CALL...: the turn ended without being cut or filtered.
    return _FINISH_REASONS.get(reason, "stop") if isinstance(reason, str) else "stop"


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(
        input_tokens=int(raw.get("promptTokenCount") or 0),
        # Thinking models bill their thoughts as output.
        output_tokens=int(raw.get("candidatesTokenCount") or 0)
        + int(raw.get("thoughtsTokenCount") or 0),
    )


def _read(payload: dict[str, Any]) -> tuple[str, str | None]:
    """Text of the first candidate and its normalised finish reason (None while streaming)."""
    candidates = payload.get("candidates")
    if not candidates:
        # The prompt itself was blocked: no candidate at all, only promptFeedback.
        feedback = payload.get("promptFeedback")
        if feedback and feedback.get("blockReason"):
            return "", "content_filter"
        return "", None
    candidate = candidates[0]
    content = candidate.get("content")
    parts = (content.get("parts") if content else None) or ()
    # Thought summaries (thought: true) are not part of the answer.
    text = "".join(p.get("text") or "" for p in parts if not p.get("thought"))
    reason = candidate.get("finishReason")
    return text, (_finish(reason) if reason else None)


def _contents(messages: tuple[Message, ...]) -> tuple[list[str], list[dict[str, Any]]]:
    """System texts, and turns with same-role neighbours merged into one multi-part turn."""
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            system.append(message.content)
            continue
        role = "model" if message.role == "assistant" else "user"
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].append({"text": message.content})
        else:
            contents.append({"role": role, "parts": [{"text": message.content}]})
    return system, contents


def _key_error(exc: ProviderError) -> ProviderError:
    # Gemini answers a bad key with 400 INVALID_ARGUMENT; for the router it is an auth failure.
    if exc.status_code == 400 and "API key not valid" in exc.message:
        return ProviderError(
            exc.message,
            error_class=ErrorClass.AUTH,
            permanent=True,
            status_code=exc.status_code,
        )
    return exc


class GeminiAdapter:
    """Speaks ``POST {base_url}/v1beta/models/{model}:generateContent``; ``base_url`` is e.g.
    ``https://generativelanguage.googleapis.com``."""

    __slots__ = ("_session",)

    label: ClassVar[str] = "gemini"

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    @staticmethod
    def _model_url(target: Target, method: str) -> str:
        model = target.upstream_model.removeprefix("models/")
        return f"{strip_base(target.base_url)}/v1beta/models/{model}:{method}"

    @staticmethod
    def _payload(request: ChatRequest) -> bytes:
        system, contents = _contents(request.messages)
        body: dict[str, Any] = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": [{"text": text} for text in system]}
        config: dict[str, Any] = {}
        if request.max_tokens is not None:
            config["maxOutputTokens"] = request.max_tokens
        if request.temperature is not None:
            config["temperature"] = request.temperature
        if request.top_p is not None:
            config["topP"] = request.top_p
        if request.stop:
            config["stopSequences"] = list(request.stop)
        if request.response_format and request.response_format.get("type") in _JSON_FORMATS:
            config["responseMimeType"] = "application/json"
        if config:
            body["generationConfig"] = config
        return orjson.dumps(body)

    async def complete(self, request: ChatRequest, target: Target) -> ChatResult:
        """Call ``generateContent`` and return the whole answer."""
        data, limits = await post_json(
            self._session,
            self._model_url(target, "generateContent"),
            payload=self._payload(request),
            headers=_headers(target.api_key),
            target=target,
            label=self.label,
            on_http_error=_key_error,
        )
        try:
            text, finish = _read(data)
            if finish is None and not text:
                raise KeyError("candidates")
            return ChatResult(
                text=text,
                finish_reason=finish or "stop",
                usage=_usage(data.get("usageMetadata")) or Usage(),
                upstream_model=data.get("modelVersion") or target.upstream_model,
                rate_limits=limits,
            )
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise malformed(self.label, f"unexpected body ({type(exc).__name__})") from exc

    def stream(self, request: ChatRequest, target: Target) -> AsyncGenerator[StreamChunk, None]:
        """Call ``streamGenerateContent`` over SSE; the last chunk carries finish and usage."""
        return stream_chunks(
            self._session,
            self._model_url(target, "streamGenerateContent") + "?alt=sse",
            payload=self._payload(request),
            headers=_headers(target.api_key, "text/event-stream"),
            target=target,
            label=self.label,
            parse=lambda response: self._parse_stream(response, target.api_key),
            on_http_error=_key_error,
        )

    async def _parse_stream(
        self, response: aiohttp.ClientResponse, api_key: str
    ) -> AsyncGenerator[StreamChunk, None]:
        finish: str | None = None
        usage: Usage | None = None
        async for _event, data in iter_sse(response):
            payload = orjson.loads(data)
            if payload.get("error") is not None:
                raise error_from_payload(payload, label=self.label, api_key=api_key)
            text, reason = _read(payload)
            if (raw_usage := payload.get("usageMetadata")) is not None:
                usage = _usage(raw_usage)  # cumulative: the last one wins
            if text:
                yield StreamChunk(text=text)
            if reason:
                finish = reason
        # Gemini has no end-of-stream event: a finishReason is what marks a complete answer.
        if finish is None:
            raise truncated(self.label)
        yield StreamChunk(finish_reason=finish, usage=usage)

    async def probe(self, target: Target) -> bool:
        """``GET {base_url}/v1beta/models`` answers 2xx."""
        return await probe_get(
            self._session,
            f"{strip_base(target.base_url)}/v1beta/models",
            headers=_headers(target.api_key),
            target=target,
        )
