"""Google Gemini: ``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent``
(SSE with ``?alt=sse``, otherwise a streamed JSON array; ``/v1/`` too), ``GET /v1beta/models``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final

import orjson
from aiohttp import web

from . import chat
from .dialect import (
    SENTINEL,
    BadRequest,
    Chat,
    Completion,
    Dialect,
    json_response,
    limit_of,
    stops_of,
    template,
    text_of,
)
from .state import refused, simulator_of

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
    id_prefix = "sim"
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
            messages.append(("system", text_of(system.get("parts"))))
        for content in contents:
            if isinstance(content, dict):
                role = "assistant" if content.get("role") == "model" else "user"
                messages.append((role, text_of(content.get("parts"))))
        config = body.get("generationConfig") or body.get("generation_config")
        config = config if isinstance(config, dict) else {}
        mime = config.get("responseMimeType") or config.get("response_mime_type")
        return Chat(
            model=model,
            messages=messages,
            stream=action == "streamGenerateContent",
            max_tokens=limit_of(config.get("maxOutputTokens", config.get("max_output_tokens"))),
            json_requested=mime == "application/json",
            stops=stops_of(config.get("stopSequences", config.get("stop_sequences"))),
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
        before, after = template(self._chunk(done, SENTINEL, final=False))
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


GEMINI_SSE = Gemini()
GEMINI_ARRAY = GeminiArray()


async def generate(request: web.Request) -> web.StreamResponse:
    """``POST /v1beta/models/{model}:generateContent`` or ``:streamGenerateContent``."""
    dialect = GEMINI_SSE if request.query.get("alt") == "sse" else GEMINI_ARRAY
    return await chat.answer(request, dialect)


async def list_models(request: web.Request) -> web.Response:
    """``GET /v1beta/models``."""
    if (refusal := refused(request, GEMINI_SSE)) is not None:
        return refusal
    models = [
        {
            "name": f"models/{n}",
            "version": "001",
            "displayName": n,
            "inputTokenLimit": 1_048_576,
            "outputTokenLimit": 8192,
            "supportedGenerationMethods": ["generateContent", "streamGenerateContent"],
        }
        for n in simulator_of(request).known_models()
    ]
    return json_response({"models": models})
