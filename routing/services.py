"""The completion pipeline shared by the native and the OpenAI-compatible API.

A view validates its wire format into a :class:`CompletionJob`; ``completion_run`` routes, scores,
escalates and gates it (``completion_stream_open`` and ``stream_outcome`` do the same for a
stream, scored at its end); ``audit_completed`` queues the audit record. Views only translate.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from agents.selectors import Caller
from learning.validators import AnswerContext, Confidence, ValidatorSetting, score_answer
from providers.base import ChatRequest, ChatResult, Usage
from providers.models import TIER_ORDER

from . import metrics, router
from .audit import audit_writer
from .classify import Classification, classify
from .config import Deployment, RouteChoice, RoutingSnapshot, current_snapshot

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
    # What is sent upstream: the caller's messages, after the task type's prompt template.
    upstream_chat: ChatRequest | None = None

    @property
    def request(self) -> ChatRequest:
        return self.upstream_chat or self.chat

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
    prefix = snapshot.prompt_prefixes.get(job.task_type)
    if prefix:
        job.upstream_chat = replace(job.chat, messages=prefix + job.chat.messages)
    choice = router.route_choice_for(snapshot, task_type=job.task_type, caller=job.caller.agent)
    if (
        settings.GATEWAY["EXPLORATION"]
        and not model
        and not tier
        and not choice.pinned_model
        and choice.start_tier
    ):
        # Exploration: a small share of routed traffic starts on a neighbouring tier, so the
        # assignments cycle sees how those tiers do on this task type.
        start = snapshot.gate_for(job.task_type).explore(
            choice.start_tier, {t for t, deployments in snapshot.by_tier.items() if deployments}
        )
        if start != choice.start_tier:
            job.metadata["exploration"] = {"from": choice.start_tier, "to": start}
            choice = RouteChoice(start_tier=start)
    return snapshot, router.plan_route(snapshot, choice=choice, tier=tier, model=model)


@dataclass(slots=True)
class Answer:
    """One answer and how good the validators found it."""

    result: ChatResult
    deployment: Deployment
    usage: Usage
    confidence: Confidence


@dataclass(slots=True)
class Outcome:
    """What a request ends with: the best answer, its gate, and everything it took."""

    best: Answer
    status: str
    attempts: list[dict[str, Any]]
    cost_usd: float
    tokens_in: int
    tokens_out: int
    escalations: int
    review_reason: str


def answer_context(job: CompletionJob, output: str, finish_reason: str, *,
                   interrupted: bool = False, second_opinion: str | None = None) -> AnswerContext:  # fmt: skip
    return AnswerContext(
        task_type=job.task_type,
        prompt=job.last_user_text,
        output=output,
        finish_reason=finish_reason,
        language=str(job.metadata.get("language") or ""),
        response_format=job.chat.response_format,
        stream_interrupted=interrupted,
        second_opinion=second_opinion,
    )


def _second_opinion_task(
    snapshot: RoutingSnapshot, job: CompletionJob, checks: tuple[ValidatorSetting, ...]
) -> asyncio.Task[str | None] | None:
    """Start asking the agreement model in parallel, when the task type's validators want one."""
    setting = next((s for s in checks if s.name == "agreement"), None)
    model = str(setting.params.get("model", "")) if setting else ""
    if not model or model not in snapshot.by_public_name:
        return None

    async def ask() -> str | None:
        plan = list(snapshot.by_public_name[model])
        try:
            done = await router.complete(plan, job.request, deadline=job.deadline)
        except router.RoutingError:
            return None
        return done.result.text

    return asyncio.create_task(ask())


async def completion_run(job: CompletionJob) -> Outcome:
    """Route a whole-answer request, score it, escalate while it is weak and allowed, and gate it.

    Failures are audited here; successes by ``audit_completed`` once the view has its answer.
    """
    try:
        snapshot, plan = await _plan(job)
    except router.RoutingError as exc:
        audit_failed(job, exc.http_status, exc.message, [a.as_dict() for a in exc.attempts])
        raise
    gate = snapshot.gate_for(job.task_type)
    checks = snapshot.validators_for(job.task_type)
    second = _second_opinion_task(snapshot, job, checks)
    attempts: list[dict[str, Any]] = []
    best: Answer | None = None
    cost = 0.0
    tokens_in = tokens_out = 0
    escalations = 0
    while True:
        try:
            done = await router.complete(plan, job.request, deadline=job.deadline)
        except router.RoutingError as exc:
            attempts.extend(a.as_dict() for a in exc.attempts)
            if best is None:
                if second is not None:
                    second.cancel()
                audit_failed(job, exc.http_status, exc.message, attempts)
                raise router.RoutingError(
                    exc.message, code=exc.code, http_status=exc.http_status, attempts=exc.attempts
                ) from exc
            break  # the escalation found nothing better: keep the answer we have
        usage = estimate_usage(job, done.result.text, done.result.usage)
        spent = done.deployment.cost_usd(usage.input_tokens, usage.output_tokens)
        cost += spent
        tokens_in += usage.input_tokens
        tokens_out += usage.output_tokens
        opinion = None
        if second is not None:
            try:
                opinion = await asyncio.wait_for(
                    asyncio.shield(second), max(0.0, job.deadline - time.monotonic())
                )
            except TimeoutError:
                opinion = None
        confidence = score_answer(
            answer_context(
                job, done.result.text, done.result.finish_reason, second_opinion=opinion
            ),
            checks,
        )
        step = [a.as_dict() for a in done.attempts]
        step[-1].update(confidence=confidence.score, cost_usd=round(spent, 8))
        if escalations:
            step[0]["escalation"] = escalations
        attempts.extend(step)
        answer = Answer(done.result, done.deployment, usage, confidence)
        if best is None or confidence.score > best.confidence.score:
            best = answer
        if not gate.may_escalate(
            confidence=confidence.score, tier=done.deployment.tier, steps=escalations, cost_usd=cost
        ):
            break
        next_tier = TIER_ORDER[TIER_ORDER.index(done.deployment.tier) + 1]
        plan = router.plan_route(snapshot, choice=RouteChoice(start_tier=next_tier))
        if not plan:
            break  # nothing bigger is configured: the answer in hand is the best there is
        escalations += 1
        metrics.ESCALATIONS.labels(job.task_type or "unknown", done.deployment.tier).inc()
    if second is not None and not second.done():
        second.cancel()
    status = gate.status_for(best.confidence.score)
    return Outcome(
        best=best,
        status=status,
        attempts=attempts,
        cost_usd=cost,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        escalations=escalations,
        review_reason=gate.review_reason(status, explored="exploration" in job.metadata),
    )


async def completion_stream_open(job: CompletionJob) -> tuple[router.OpenStream, RoutingSnapshot]:
    """Route a streaming request up to its first chunk (streams are scored at their end)."""
    try:
        snapshot, plan = await _plan(job)
        return await router.open_stream(plan, job.request, deadline=job.deadline), snapshot
    except router.RoutingError as exc:
        audit_failed(job, exc.http_status, exc.message, [a.as_dict() for a in exc.attempts])
        raise


def stream_outcome(
    job: CompletionJob,
    snapshot: RoutingSnapshot,
    opened: router.OpenStream,
    *,
    output: str,
    finish_reason: str,
    usage: Usage,
    interrupted: bool,
) -> Outcome:
    """Score and gate a finished stream; it cannot be escalated, so low scores go to review."""
    gate = snapshot.gate_for(job.task_type)
    confidence = score_answer(
        answer_context(job, output, finish_reason, interrupted=interrupted),
        snapshot.validators_for(job.task_type),
    )
    status = gate.status_for(confidence.score)
    cost = opened.deployment.cost_usd(usage.input_tokens, usage.output_tokens)
    attempts = [a.as_dict() for a in opened.attempts]
    attempts[-1].update(confidence=confidence.score, cost_usd=round(cost, 8))
    return Outcome(
        best=Answer(
            ChatResult(text=output, finish_reason=finish_reason, usage=usage),
            opened.deployment,
            usage,
            confidence,
        ),
        status=status,
        attempts=attempts,
        cost_usd=cost,
        tokens_in=usage.input_tokens,
        tokens_out=usage.output_tokens,
        escalations=0,
        review_reason=gate.review_reason(status, explored="exploration" in job.metadata),
    )


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
    job: CompletionJob, outcome: Outcome, *, status: str = "", error: str = ""
) -> None:
    """Queue the record of an answered request (``status`` overrides the gate, e.g. for a stream
    the client closed)."""
    best = outcome.best
    status = status or outcome.status
    row = _base_row(job)
    row.update(
        status=status,
        http_status=200,
        error=error[:500],
        attempts=outcome.attempts,
        provider=best.deployment.provider_name,
        model=best.deployment.public_name,
        tier=best.deployment.tier,
        tokens_in=outcome.tokens_in,
        tokens_out=outcome.tokens_out,
        cost_usd=round(outcome.cost_usd, 8),
        confidence=best.confidence.score,
        validation=[r.as_dict() for r in best.confidence.results],
        output=best.result.text,
    )
    if outcome.review_reason:
        row["review_reason"] = outcome.review_reason
    audit_writer.submit(row)
    model = best.deployment.public_name
    metrics.REQUESTS.labels(job.endpoint, status).inc()
    metrics.GATE_STATUS.labels(status).inc()
    metrics.TOKENS.labels(model, "in").inc(outcome.tokens_in)
    metrics.TOKENS.labels(model, "out").inc(outcome.tokens_out)
    if outcome.cost_usd:
        metrics.COST.labels(model).inc(outcome.cost_usd)


def estimate_usage(job: CompletionJob, output: str, usage: Usage | None) -> Usage:
    """Provider-reported usage, or an estimate when the provider reported none."""
    if usage is not None and (usage.input_tokens or usage.output_tokens):
        return usage
    return Usage(
        input_tokens=router.estimate_tokens(job.chat),
        output_tokens=max(1, len(output) // 4) if output else 0,
    )
