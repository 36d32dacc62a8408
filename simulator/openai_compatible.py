"""OpenAI-compatible Chat Completions: ``POST /v1/chat/completions`` (SSE with ``stream``) and
``GET /v1/models``; rate limits reported in ``x-ratelimit-*`` headers (OpenAI's or Cerebras'
style)."""

from __future__ import annotations

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
    sse,
    stops_of,
    template,
    text_of,
)
from .ratelimits import Budget, go_duration
from .state import refused, simulator_of


class OpenAI(Dialect):
    """OpenAI Chat Completions."""

    name = "openai"
    id_prefix = "chatcmpl-sim"

    def ratelimit_headers(
        self, budgets: Mapping[str, Budget], style: str, now: float
    ) -> dict[str, str]:
        headers: dict[str, str] = {}
        for kind, budget in budgets.items():
            if style == "cerebras":
                # Cerebras names the window and gives the reset in seconds.
                suffix = "-day" if kind == "requests" else "-minute"
                reset = f"{budget.reset_in(now) + 1e-6:.6f}"
            else:
                suffix, reset = "", go_duration(budget.reset_in(now))
            headers[f"x-ratelimit-limit-{kind}{suffix}"] = str(budget.capacity)
            headers[f"x-ratelimit-remaining-{kind}{suffix}"] = str(budget.remaining)
            headers[f"x-ratelimit-reset-{kind}{suffix}"] = reset
        return headers

    def parse(self, body: Mapping[str, Any], request: web.Request) -> Chat:
        messages = [
            (str(m.get("role", "user")), text_of(m.get("content")))
            for m in messages_of(body)
            if isinstance(m, dict)
        ]
        response_format = body.get("response_format")
        options = body.get("stream_options")
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        return Chat(
            model=model_of(body),
            messages=messages,
            stream=body.get("stream") is True,
            max_tokens=limit_of(limit),
            json_requested=isinstance(response_format, dict)
            and response_format.get("type") in ("json_object", "json_schema"),
            stops=stops_of(body.get("stop")),
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        )

    def error_payload(self, status: int, message: str) -> object:
        if status == 401:
            kind, code = "invalid_request_error", "invalid_api_key"
        elif status == 404:
            kind, code = "invalid_request_error", "model_not_found"
        elif status == 429:
            kind, code = "requests", "rate_limit_exceeded"
        elif status >= 500:
            kind, code = "server_error", None
        else:
            kind, code = "invalid_request_error", None
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    @staticmethod
    def _finish(done: Completion) -> str:
        return "length" if done.finish == "length" else "stop"

    def _usage(self, done: Completion) -> dict[str, int]:
        return {
            "prompt_tokens": done.input_tokens,
            "completion_tokens": done.output_tokens,
            "total_tokens": done.input_tokens + done.output_tokens,
        }

    def response(self, done: Completion) -> object:
        return {
            "id": done.id,
            "object": "chat.completion",
            "created": done.created,
            "model": done.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": done.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": self._finish(done),
                }
            ],
            **({"usage": self._usage(done)} if done.report_usage else {}),
            "system_fingerprint": "fp_simulator",
        }

    def stream(self, done: Completion, deltas: list[str]) -> tuple[bytes, list[bytes], bytes]:
        base = {
            "id": done.id,
            "object": "chat.completion.chunk",
            "created": done.created,
            "model": done.model,
            "system_fingerprint": "fp_simulator",
        }

        def chunk(delta: object, finish: str | None) -> dict[str, object]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**base, "choices": [choice]}

        head = sse(chunk({"role": "assistant", "content": "", "refusal": None}, None))
        before, after = template(chunk({"content": SENTINEL}, None))
        frames = [b"data: " + before + orjson.dumps(d) + after + b"\n\n" for d in deltas]
        tail = sse(chunk({}, self._finish(done)))
        if done.include_usage and done.report_usage:
            tail += sse({**base, "choices": [], "usage": self._usage(done)})
        return head, frames, tail + b"data: [DONE]\n\n"


OPENAI = OpenAI()


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions``."""
    return await chat.answer(request, OPENAI)


async def list_models(request: web.Request) -> web.Response:
    """``GET /v1/models`` in OpenAI's form."""
    if (refusal := refused(request, OPENAI)) is not None:
        return refusal
    sim = simulator_of(request)
    return json_response(
        {
            "object": "list",
            "data": [
                {"id": n, "object": "model", "created": sim.started, "owned_by": "simulator"}
                for n in sim.known_models()
            ],
        }
    )
