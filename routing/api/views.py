"""The gateway's API views: thin async translations between wire formats and the pipeline.

These are plain Django async views rather than DRF ``APIView`` (which is synchronous and would put
every request through one thread); requests are validated by the pydantic models of schemas.py.
See docs/adr/0005-async-request-path.md.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from agents.selectors import Caller
from gateway_project.api_errors import (
    ApiError,
    GatewayError,
    error_body,
    error_response,
    internal_error,
    invalid_fields,
)
from providers.base import ChatRequest, Message, ProviderError, Usage

from .. import metrics, router
from ..cache import request_cache
from ..classify import valid_task_type
from ..config import RoutingSnapshot, current_snapshot
from ..jobs import CompletionJob
from ..selectors import completion_status, review_queued
from ..services import (
    AUTO_MODEL,
    TIER_ALIASES,
    audit_completed,
    classification_run,
    completion_run,
    completion_stream_open,
    estimate_usage,
    settle,
    stream_outcome,
)
from .common import (
    assign_request_id,
    assigned_request_id,
    authenticate,
    deadline_from_now,
    json_response,
    looks_like_request_id,
    read_json_object,
)
from .schemas import (
    ChatCompletionRequest,
    ClassifyRequest,
    CompletionRequest,
    callback_url_resolves,
    parse_request,
)

logger = logging.getLogger(__name__)

# A coroutine function, as Django (and django-stubs' path()) expects of an async view.
View = Callable[..., Coroutine[Any, Any, HttpResponseBase]]

# The id to decide the review an answer was queued for with (POST /v1/reviews/{id}/decision).
REVIEW_ID_HEADER = "X-Gateway-Review-Id"

LANGUAGE_NAMES = {
    "en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian",
    "pt": "Portuguese", "nl": "Dutch", "pl": "Polish", "ja": "Japanese", "zh": "Chinese",
}  # fmt: skip


def api_endpoint(method: str) -> Callable[[View], View]:
    """Method check, CSRF exemption (bearer auth, no cookies) and the JSON error contract: every
    ``GatewayError`` a view lets through is answered in the gateway's error shape
    (gateway_project/api_errors.py), anything else as a logged 500."""

    def decorate(view: View) -> View:
        @csrf_exempt
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method != method:
                return error_response(
                    ApiError(405, f"Use {method} for this endpoint.", code="method_not_allowed")
                )
            try:
                return await view(request, *args, **kwargs)
            except GatewayError as error:
                failure = error
            except Exception:
                logger.exception("unhandled error in %s", request.path)
                failure = internal_error()
            # Once the request has an id (and so an audit record), its errors name it.
            return error_response(failure, request_id=assigned_request_id(request))

        return wrapper

    return decorate


def _cache_headers(job: CompletionJob) -> dict[str, str]:
    """``X-Gateway-Cache: hit|miss|bypass``, and on a hit the request the answer came from."""
    if job.cache.hit is None:
        return {"X-Gateway-Cache": job.cache.state}
    return {"X-Gateway-Cache": job.cache.state, "X-Gateway-Cache-From": job.cache.hit_from}


# --- POST /v1/completion --------------------------------------------------------------------


@api_endpoint("POST")
async def completion_create(request: HttpRequest) -> HttpResponse:
    """The native completion API: ``{caller, task_type, input, language}`` → answer and audit."""
    caller = await authenticate(request)
    data = parse_request(CompletionRequest, read_json_object(request))
    if data.callback_url:
        await callback_url_resolves(data.callback_url)
    if not data.input and not data.messages:
        raise invalid_fields({"input": "give input or messages"})
    messages: list[Message] = list(data.messages)
    language = data.language.strip()
    if language and language.lower() != "auto":
        name = LANGUAGE_NAMES.get(language.lower(), language)
        messages.insert(0, Message("system", f"Answer in {name}."))
    if data.input:
        messages.append(Message("user", data.input))
    metadata = dict(data.metadata or {})
    if language:
        metadata["language"] = language
    if data.callback_url:
        metadata["callback_url"] = data.callback_url
    job = CompletionJob(
        endpoint="completion",
        request_id=assign_request_id(request),
        caller=caller,
        declared_caller=data.caller,
        chat=ChatRequest(
            messages=tuple(messages),
            max_tokens=data.max_tokens,
            temperature=data.temperature,
            top_p=data.top_p,
        ),
        deadline=deadline_from_now(),
        requested_model=data.model,
        tier=data.tier,
        task_type=data.task_type,
        metadata=metadata,
        cache=request_cache(request.headers, ttl_s=data.cache_ttl, scope=data.cache_scope),
    )
    outcome = await completion_run(job)
    audit_completed(job, outcome)
    best = outcome.best
    latency_ms = int((time.monotonic() - job.started) * 1000)
    metrics.REQUEST_LATENCY.labels("completion").observe(latency_ms / 1000)
    return json_response(
        {
            "id": job.request_id,
            "status": outcome.status,
            "confidence": best.confidence.score,
            "model": best.deployment.public_name,
            "task_type": job.task_type,
            "latency_ms": latency_ms,
            "tokens": {"in": outcome.tokens_in, "out": outcome.tokens_out},
            "output": best.result.text,
            "finish_reason": best.result.finish_reason,
            "provider": best.deployment.provider_name,
            "tier": best.deployment.tier,
            "cost_usd": round(outcome.cost_usd, 8),
            "escalations": outcome.escalations,
            "validation": [r.as_dict() for r in best.confidence.results],
            "attempts": outcome.attempts,
            "cached": job.cache.hit is not None,
            **({"cached_from": job.cache.hit_from} if job.cache.hit is not None else {}),
            "review": review_queued(request_id=job.request_id, reason=outcome.review_reason),
        },
        headers={
            **(job.admission.headers if job.admission else {}),
            **_cache_headers(job),
        },
    )


@api_endpoint("GET")
async def completion_detail(request: HttpRequest, request_id: str) -> HttpResponse:
    """The current state of an earlier completion: its gate and, once reviewed, the verdict."""
    caller = await authenticate(request)
    if not looks_like_request_id(request_id):
        # Not an id the gateway issues (a NUL, a megabyte): never sent to the database.
        raise ApiError(404, "No completion with this id for this agent.", code="not_found")
    data = await sync_to_async(completion_status, thread_sensitive=False)(
        request_id=request_id, agent=caller.agent
    )
    if data is None:
        raise ApiError(404, f"No completion {request_id} for this agent.", code="not_found")
    return json_response(data)


# --- POST /v1/chat/completions (OpenAI-compatible) --------------------------------------------


def _chat_job(request: HttpRequest, caller: Caller, data: ChatCompletionRequest) -> CompletionJob:
    metadata = dict(data.metadata or {})
    task_type = request.headers.get("X-Task-Type", "") or str(metadata.get("task_type", "") or "")
    if task_type and not valid_task_type(task_type):
        raise ApiError(
            400,
            "X-Task-Type / metadata.task_type is not a valid task type.",
            code="invalid_field",
            param="task_type",
        )
    return CompletionJob(
        endpoint="chat",
        request_id=assign_request_id(request),
        caller=caller,
        declared_caller=data.user,
        chat=ChatRequest(
            messages=data.messages,
            max_tokens=data.max_completion_tokens or data.max_tokens,
            temperature=data.temperature,
            top_p=data.top_p,
            stop=data.stop_sequences,
            response_format=data.response_format,
        ),
        deadline=deadline_from_now(),
        requested_model=data.model,
        task_type=task_type,
        stream=data.stream,
        metadata=metadata,
        cache=request_cache(request.headers),
    )


@api_endpoint("POST")
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    """OpenAI chat completions, whole or streamed as server-sent events."""
    caller = await authenticate(request)
    data = parse_request(ChatCompletionRequest, read_json_object(request))
    job = _chat_job(request, caller, data)
    headers = {"X-Gateway-Request-Id": job.request_id}
    if job.stream:
        include_usage = bool((data.stream_options or {}).get("include_usage"))
        return await _chat_stream(job, headers, include_usage)
    outcome = await completion_run(job)
    audit_completed(job, outcome)
    best = outcome.best
    metrics.REQUEST_LATENCY.labels("chat").observe(time.monotonic() - job.started)
    return json_response(
        {
            "id": "chatcmpl-" + job.request_id[5:],
            "object": "chat.completion",
            "created": int(job.started_at.timestamp()),
            "model": best.deployment.public_name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": best.result.text},
                    "finish_reason": best.result.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": outcome.tokens_in,
                "completion_tokens": outcome.tokens_out,
                "total_tokens": outcome.tokens_in + outcome.tokens_out,
            },
        },
        headers={
            **headers,
            **(job.admission.headers if job.admission else {}),
            "X-Gateway-Provider": best.deployment.provider_name,
            "X-Gateway-Status": outcome.status,
            "X-Gateway-Confidence": f"{best.confidence.score:.2f}",
            **_cache_headers(job),
            **({REVIEW_ID_HEADER: job.request_id} if outcome.review_reason else {}),
        },
    )


async def _chat_stream(
    job: CompletionJob, headers: dict[str, str], include_usage: bool
) -> StreamingHttpResponse:
    opened, snapshot = await completion_stream_open(job)
    metrics.REQUEST_LATENCY.labels("chat_stream").observe(time.monotonic() - job.started)
    response = StreamingHttpResponse(
        _sse_events(job, snapshot, opened, include_usage), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    response["X-Gateway-Request-Id"] = job.request_id
    response["X-Gateway-Provider"] = opened.deployment.provider_name
    for name, value in _cache_headers(job).items():
        response[name] = value
    for name, value in (job.admission.headers if job.admission else {}).items():
        response[name] = value
    return response


async def _sse_events(
    job: CompletionJob, snapshot: RoutingSnapshot, opened: router.OpenStream, include_usage: bool
) -> AsyncIterator[bytes]:
    """Relay the upstream stream as OpenAI chunks, scored at the end; audit it however it ends.

    The gate is only known once the answer is complete, so it travels in a final SSE comment
    (``: x-gateway-status=… x-gateway-confidence=…``) before ``[DONE]``: SDKs ignore comments.
    """
    base = {
        "id": "chatcmpl-" + job.request_id[5:],
        "object": "chat.completion.chunk",
        "created": int(job.started_at.timestamp()),
        "model": opened.deployment.public_name,
    }

    def event(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        chunk = {
            **base,
            "choices": [
                {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            ],
        }
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    parts: list[str] = []
    usage: Usage | None = None
    finish_reason: str | None = None
    status, error = "client_closed", ""
    try:
        yield event({"role": "assistant", "content": ""})
        chunk = opened.first
        while True:
            if chunk.text:
                parts.append(chunk.text)
                yield event({"content": chunk.text})
            if chunk.usage is not None:
                usage = chunk.usage
            if chunk.finish_reason:
                finish_reason = chunk.finish_reason
            try:
                chunk = await anext(opened.chunks)
            except StopAsyncIteration:
                break
        yield event({}, finish_reason or "stop")
        final_usage = await estimate_usage(job, "".join(parts), usage)
        if include_usage:
            usage_chunk = {
                **base,
                "choices": [],
                # Every call made for the request, as for a whole answer: the stream's, and any
                # made before it (a classification) already on the bill.
                "usage": {
                    "prompt_tokens": final_usage.input_tokens + job.bill.tokens_in,
                    "completion_tokens": final_usage.output_tokens + job.bill.tokens_out,
                    "total_tokens": final_usage.input_tokens
                    + final_usage.output_tokens
                    + job.bill.tokens,
                },
            }
            yield b"data: " + orjson.dumps(usage_chunk) + b"\n\n"
        outcome = stream_outcome(
            job, snapshot, opened, output="".join(parts), finish_reason=finish_reason or "stop",
            usage=final_usage, interrupted=False,
        )  # fmt: skip
        status = ""  # the gate's
        review = f" x-gateway-review-id={job.request_id}" if outcome.review_reason else ""
        yield (
            f": x-gateway-status={outcome.status} "
            f"x-gateway-confidence={outcome.best.confidence.score:.2f} "
            f"x-gateway-request-id={job.request_id}{review}\n\n"
        ).encode()
        yield b"data: [DONE]\n\n"
    except ProviderError as exc:
        # Too late to fall over: the client has the first bytes. Tell it in OpenAI's error shape.
        status, error = "failed", f"stream interrupted: {exc.message}"
        opened.attempt.outcome = "interrupted"
        opened.attempt.error_class = str(exc.error_class)
        body = error_body(ApiError(502, error, code="stream_interrupted"))
        yield b"data: " + orjson.dumps(body) + b"\n\n"
    finally:
        closer = getattr(opened.chunks, "aclose", None)
        if closer is not None:
            await closer()
        output = "".join(parts)
        if status:  # ended early: no gate, and nothing for review
            outcome = stream_outcome(
                job, snapshot, opened, output=output, finish_reason=finish_reason or "error",
                usage=await estimate_usage(job, output, usage), interrupted=True,
            )  # fmt: skip
            outcome.review_reason = ""
        await settle(job)
        audit_completed(job, outcome, status=status, error=error)


# --- GET /v1/models, POST /v1/classify ------------------------------------------------------


@api_endpoint("GET")
async def models_list(request: HttpRequest) -> HttpResponse:
    """OpenAI's model list: every public model name, plus the routing aliases."""
    await authenticate(request)
    snapshot = await current_snapshot()
    created = 0
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": "llm-gateway"}
        for name in [AUTO_MODEL, *sorted(TIER_ALIASES - {"external"})]
    ]
    for name in snapshot.public_names:
        deployments = snapshot.by_public_name[name]
        data.append(
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": deployments[0].provider_name,
                "tier": deployments[0].tier,
                "context_window": max(d.context_window for d in deployments),
            }
        )
    return json_response({"object": "list", "data": data})


@api_endpoint("POST")
async def classify_input(request: HttpRequest) -> HttpResponse:
    """The task type an input would be routed as, and where routing would start."""
    caller = await authenticate(request)
    data = parse_request(ClassifyRequest, read_json_object(request))
    snapshot = await current_snapshot()
    found = await classification_run(
        request_id=assign_request_id(request),
        caller=caller,
        text=data.input,
        declared_caller=data.caller,
        snapshot=snapshot,
    )
    choice = router.route_choice_for(
        snapshot, task_type=found.task_type, caller=data.caller or caller.agent
    )
    plan = router.plan_route(snapshot, choice=choice)
    return json_response(
        {
            "task_type": found.task_type,
            "method": found.method,
            "detail": found.detail,
            "tier": plan[0].tier if plan else choice.start_tier,
            "model": plan[0].public_name if plan else choice.pinned_model or None,
        }
    )
