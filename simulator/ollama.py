"""Ollama's native API: ``POST /api/chat`` (NDJSON streaming, on by default), ``GET /api/tags``,
``GET /api/version`` and ``GET /`` ("Ollama is running")."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from . import chat
from .dialect import (
    SENTINEL,
    Chat,
    Completion,
    Dialect,
    json_response,
    limit_of,
    messages_of,
    model_of,
    now_rfc3339,
    stops_of,
    template,
    text_of,
)
from .state import refused, simulator_of


class Ollama(Dialect):
    """Ollama's native chat API (NDJSON streaming, on by default)."""

    name = "ollama"
    id_prefix = ""
    stream_content_type = "application/x-ndjson"
    frame_end = b"\n"

    def parse(self, body: Mapping[str, Any], request: web.Request) -> Chat:
        messages = [
            (str(m.get("role", "user")), text_of(m.get("content")))
            for m in messages_of(body)
            if isinstance(m, dict)
        ]
        options = body.get("options")
        options = options if isinstance(options, dict) else {}
        fmt = body.get("format")
        return Chat(
            model=model_of(body),
            messages=messages,
            stream=body.get("stream", True) is not False,
            max_tokens=limit_of(options.get("num_predict")),
            json_requested=fmt == "json" or isinstance(fmt, dict),
            stops=stops_of(options.get("stop")),
        )

    def error_payload(self, status: int, message: str) -> object:
        return {"error": message}

    def _final(self, done: Completion, created_at: str, content: str) -> dict[str, object]:
        # Durations are the planned delays (not measured), so the object is reproducible.
        prompt_ns = done.duration_ns // 4
        return {
            "model": done.model,
            "created_at": created_at,
            "message": {"role": "assistant", "content": content},
            "done_reason": "length" if done.finish == "length" else "stop",
            "done": True,
            "total_duration": done.duration_ns,
            "load_duration": 0,
            "prompt_eval_duration": prompt_ns,
            "eval_duration": done.duration_ns - prompt_ns,
            **(
                {"prompt_eval_count": done.input_tokens, "eval_count": done.output_tokens}
                if done.report_usage
                else {}
            ),
        }

    def response(self, done: Completion) -> object:
        return self._final(done, now_rfc3339(), done.text)

    def stream(self, done: Completion, deltas: list[str]) -> tuple[bytes, list[bytes], bytes]:
        created_at = now_rfc3339()
        before, after = template(
            {
                "model": done.model,
                "created_at": created_at,
                "message": {"role": "assistant", "content": SENTINEL},
                "done": False,
            }
        )
        frames = [before + orjson.dumps(d) + after + b"\n" for d in deltas]
        tail = orjson.dumps(self._final(done, created_at, "")) + b"\n"
        return b"", frames, tail


OLLAMA = Ollama()


async def api_chat(request: web.Request) -> web.StreamResponse:
    """``POST /api/chat``."""
    return await chat.answer(request, OLLAMA)


async def tags(request: web.Request) -> web.Response:
    """``GET /api/tags``: the known models, with plausible sizes and digests."""
    if (refusal := refused(request, OLLAMA)) is not None:
        return refusal
    sim = simulator_of(request)
    models = [
        {
            "name": n,
            "model": n,
            "modified_at": sim.started_iso,
            "size": 1_000_000_000 + zlib.crc32(n.encode()) % 1_000_000_000,
            "digest": hashlib.sha256(n.encode()).hexdigest(),
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "simulator",
                "families": ["simulator"],
                "parameter_size": "7B",
                "quantization_level": "Q4_0",
            },
        }
        for n in sim.known_models()
    ]
    return json_response({"models": models})


async def version(request: web.Request) -> web.Response:
    """``GET /api/version`` (no key needed, as Ollama's)."""
    if (down := simulator_of(request).outage_status(OLLAMA.name)) is not None:
        return OLLAMA.error(down)
    return json_response({"version": "0.6.0"})


async def root(request: web.Request) -> web.Response:
    """``GET /``: Ollama's liveness answer (no key needed)."""
    if (down := simulator_of(request).outage_status(OLLAMA.name)) is not None:
        return OLLAMA.error(down)
    return web.Response(text="Ollama is running")
