"""Anthropic Messages: ``POST /v1/messages`` (SSE with ``stream``) and ``GET /v1/models`` when
``anthropic-version`` is sent; rate limits reported in ``anthropic-ratelimit-*`` headers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

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
    messages_of,
    model_of,
    sse,
    stops_of,
    template,
    text_of,
)
from .ratelimits import Budget, rfc3339_after
from .state import refused, simulator_of


class Anthropic(Dialect):
    """Anthropic Messages API."""

    name = "anthropic"
    id_prefix = "msg_sim"

    def ratelimit_headers(
        self, budgets: Mapping[str, Budget], style: str, now: float
    ) -> dict[str, str]:
        headers: dict[str, str] = {}
        for kind, budget in budgets.items():
            headers[f"anthropic-ratelimit-{kind}-limit"] = str(budget.capacity)
            headers[f"anthropic-ratelimit-{kind}-remaining"] = str(budget.remaining)
            headers[f"anthropic-ratelimit-{kind}-reset"] = rfc3339_after(budget.reset_in(now))
        return headers

    def parse(self, body: Mapping[str, Any], request: web.Request) -> Chat:
        if "max_tokens" not in body:
            raise BadRequest("max_tokens: Field required")
        messages: list[tuple[str, str]] = []
        system = text_of(body.get("system"))
        if system:
            messages.append(("system", system))
        messages.extend(
            (str(m.get("role", "user")), text_of(m.get("content")))
            for m in messages_of(body)
            if isinstance(m, dict)
        )
        return Chat(
            model=model_of(body),
            messages=messages,
            stream=body.get("stream") is True,
            max_tokens=limit_of(body.get("max_tokens")),
            stops=stops_of(body.get("stop_sequences")),
        )

    def error_payload(self, status: int, message: str) -> object:
        kinds = {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            413: "request_too_large",
            429: "rate_limit_error",
            529: "overloaded_error",
        }
        default = "api_error" if status >= 500 else "invalid_request_error"
        return {"type": "error", "error": {"type": kinds.get(status, default), "message": message}}

    @staticmethod
    def _stop_reason(done: Completion) -> str:
        return {"length": "max_tokens", "stop_sequence": "stop_sequence"}.get(
            done.finish, "end_turn"
        )

    @staticmethod
    def _usage(done: Completion, output_tokens: int) -> dict[str, object]:
        if not done.report_usage:
            return {}
        return {"usage": {"input_tokens": done.input_tokens, "output_tokens": output_tokens}}

    def response(self, done: Completion) -> object:
        return {
            "id": done.id,
            "type": "message",
            "role": "assistant",
            "model": done.model,
            "content": [{"type": "text", "text": done.text}],
            "stop_reason": self._stop_reason(done),
            "stop_sequence": done.stop_sequence,
            **self._usage(done, done.output_tokens),
        }

    def stream(self, done: Completion, deltas: list[str]) -> tuple[bytes, list[bytes], bytes]:
        message: dict[str, object] = {
            "id": done.id,
            "type": "message",
            "role": "assistant",
            "model": done.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            **self._usage(done, 1),
        }
        head = (
            sse({"type": "message_start", "message": message}, "message_start")
            + sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            )
            + sse({"type": "ping"}, "ping")
        )
        before, after = template(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": SENTINEL},
            }
        )
        prefix = b"event: content_block_delta\ndata: " + before
        frames = [prefix + orjson.dumps(d) + after + b"\n\n" for d in deltas]
        tail = (
            sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
            + sse(
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": self._stop_reason(done),
                        "stop_sequence": done.stop_sequence,
                    },
                    **(
                        {"usage": {"output_tokens": done.output_tokens}}
                        if done.report_usage
                        else {}
                    ),
                },
                "message_delta",
            )
            + sse({"type": "message_stop"}, "message_stop")
        )
        return head, frames, tail


ANTHROPIC = Anthropic()


async def create_message(request: web.Request) -> web.StreamResponse:
    """``POST /v1/messages``."""
    return await chat.answer(request, ANTHROPIC)


async def list_models(request: web.Request) -> web.Response:
    """``GET /v1/models`` in Anthropic's form."""
    if (refusal := refused(request, ANTHROPIC)) is not None:
        return refusal
    sim = simulator_of(request)
    names = sim.known_models()
    created = datetime.fromtimestamp(sim.started, UTC).isoformat().replace("+00:00", "Z")
    data = [{"type": "model", "id": n, "display_name": n, "created_at": created} for n in names]
    return json_response(
        {
            "data": data,
            "has_more": False,
            "first_id": names[0] if names else None,
            "last_id": names[-1] if names else None,
        }
    )
