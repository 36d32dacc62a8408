"""The completion pipeline shared by the native and the OpenAI-compatible API.

A view validates its wire format into a :class:`CompletionJob`; ``completion_run`` or
``completion_stream_open`` route it; ``audit_job`` queues the audit record. Views only translate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from agents.selectors import Caller
from providers.base import ChatRequest, Usage
from providers.models import TIER_ORDER

from . import metrics, router
from .audit import audit_writer
from .classify import Classification, classify
from .config import Deployment, RoutingSnapshot, current_snapshot

TIER_ALIASES = frozenset(TIER_ORDER)
AUTO_MODEL = "auto"


class UnknownModel(Exception):
    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.model = model


@dataclass
class CompletionJob:
    """One request, validated and normalised, on its way through the router."""

    endpoint: str
    request_id: str
    caller: Caller
    declared_caller: str
    chat: ChatRequest
    deadline: float
    requested_model: str = ""
    tier: str = ""
    task_type: str = ""
    stream: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    started_at: datetime = field(default_factory=timezone.now)
    started: float = field(default_factory=time.monotonic)
    classification: Classification | None = None

    @property
    def prompt_text(self) -> str:
        return "\n".join(f"{m.role}: {m.content}" for m in self.chat.messages)

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.chat.messages):
            if message.role == "user":
                return message.content
        return self.chat.messages[-1].content if self.chat.messages else ""


async def _plan(job: CompletionJob) -> tuple[RoutingSnapshot, list[Deployment]]:
    snapshot = await current_snapshot()
    model = job.requested_model
    tier = job.tier
    if model and model != AUTO_MODEL:
        if model in TIER_ALIASES:
            tier, model = model, ""
        elif model not in snapshot.by_public_name:
            raise UnknownModel(model)
    else:
        model = ""
    if not job.task_type:
        job.classification = await classify(snapshot, job.last_user_text)
        job.task_type = job.classification.task_type
    choice = router.route_choice_for(snapshot, task_type=job.task_type, caller=job.caller.agent)
    return snapshot, router.plan_route(snapshot, choice=choice, tier=tier, model=model)


async def completion_run(job: CompletionJob) -> router.Completed:
    """Route a whole-answer request; audits failures itself, successes via ``audit_completed``."""
    try:
        _, plan = await _plan(job)
        done = await router.complete(plan, job.chat, deadline=job.deadline)
    except router.RoutingError as exc:
        audit_failed(job, exc.http_status, exc.message, [a.as_dict() for a in exc.attempts])
        raise
    return done


async def completion_stream_open(job: CompletionJob) -> router.OpenStream:
    """Route a streaming request up to its first chunk."""
    try:
        _, plan = await _plan(job)
        return await router.open_stream(plan, job.chat, deadline=job.deadline)
    except router.RoutingError as exc:
        audit_failed(job, exc.http_status, exc.message, [a.as_dict() for a in exc.attempts])
        raise


def _base_row(job: CompletionJob) -> dict[str, Any]:
    latency = time.monotonic() - job.started
    metadata = dict(job.metadata)
    if job.classification is not None:
        metadata["classified_by"] = job.classification.method
    return {
        "request_id": job.request_id,
        "endpoint": job.endpoint,
        "caller": job.declared_caller or job.caller.agent,
        "agent": job.caller.agent,
        "api_key_prefix": job.caller.key_prefix,
        "task_type": job.task_type,
        "requested_model": job.requested_model or job.tier,
        "stream": job.stream,
        "prompt": job.prompt_text,
        "metadata": metadata,
        "created_at": job.started_at,
        "finished_at": job.started_at + timedelta(seconds=latency),
        "latency_ms": int(latency * 1000),
    }


def audit_failed(
    job: CompletionJob, http_status: int, error: str, attempts: list[dict[str, Any]]
) -> None:
    """Queue the record of a request that got no answer."""
    row = _base_row(job)
    row.update(status="failed", http_status=http_status, error=error[:500], attempts=attempts)
    audit_writer.submit(row)
    metrics.REQUESTS.labels(job.endpoint, "failed").inc()


def audit_completed(
    job: CompletionJob,
    *,
    deployment: Deployment,
    attempts: list[dict[str, Any]],
    output: str,
    usage: Usage,
    status: str = "completed",
    error: str = "",
) -> float:
    """Queue the record of an answered request; returns its cost in USD."""
    cost = deployment.cost_usd(usage.input_tokens, usage.output_tokens)
    row = _base_row(job)
    row.update(
        status=status,
        http_status=200,
        error=error[:500],
        attempts=attempts,
        provider=deployment.provider_name,
        model=deployment.public_name,
        tier=deployment.tier,
        tokens_in=usage.input_tokens,
        tokens_out=usage.output_tokens,
        cost_usd=round(cost, 8),
        output=output,
    )
    audit_writer.submit(row)
    metrics.REQUESTS.labels(job.endpoint, status).inc()
    metrics.TOKENS.labels(deployment.public_name, "in").inc(usage.input_tokens)
    metrics.TOKENS.labels(deployment.public_name, "out").inc(usage.output_tokens)
    if cost:
        metrics.COST.labels(deployment.public_name).inc(cost)
    return cost


def estimate_usage(job: CompletionJob, output: str, usage: Usage | None) -> Usage:
    """Provider-reported usage, or an estimate when the provider reported none."""
    if usage is not None and (usage.input_tokens or usage.output_tokens):
        return usage
    return Usage(
        input_tokens=router.estimate_tokens(job.chat),
        output_tokens=max(1, len(output) // 4) if output else 0,
    )
