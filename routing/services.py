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

from agents.limits import Admission, LimitExceeded, admit
from agents.selectors import Caller
from learning.validators import AnswerContext, Confidence, ValidatorSetting, score_answer
from providers import tokenizer
from providers.base import ChatRequest, ChatResult, Usage
from providers.models import TIER_ORDER

from . import cache as response_cache
from . import metrics, router
from .audit import audit_writer
from .cache import RequestCache
from .classify import Classification, classify
from .config import Deployment, RouteChoice, RoutingSnapshot, current_snapshot

TIER_ALIASES = frozenset(TIER_ORDER)
AUTO_MODEL = "auto"
# Token counts of texts shorter than this run on the event loop, longer ones in a thread.
_COUNT_INLINE_CHARS = 64 * 1024


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
    # The request's place in its caller's rate limits and budgets, settled when it ends.
    admission: Admission | None = None
    # What the request asked of the response cache, and what came of it (routing/cache.py).
    cache: RequestCache = field(default_factory=RequestCache)

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
    _check_allowed(job.caller, model=model, tier=tier, requested=job.requested_model)
    if await response_cache.lookup(job, snapshot, model=model, tier=tier) is not None:
        return snapshot, []  # answered from the response cache (job.cache.hit): nothing to route
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
        start = snapshot.gate_for(job.task_type, job.caller.agent).explore(
            choice.start_tier, {t for t, deployments in snapshot.by_tier.items() if deployments}
        )
        if start != choice.start_tier:
            job.metadata["exploration"] = {"from": choice.start_tier, "to": start}
            choice = RouteChoice(start_tier=start)
    plan = router.plan_route(snapshot, choice=choice, tier=tier, model=model)
    allowed = job.caller.allowed_tiers
    if allowed:
        plan = [d for d in plan if d.tier in allowed]
        if not plan:
            raise NotAllowed(
                f"This agent may only use the tier(s) {', '.join(sorted(allowed))}; "
                "none of them can answer this request.",
                param="model",
            )
    return snapshot, plan


class NotAllowed(Exception):
    """The caller's profile does not allow this request (HTTP 403)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _check_allowed(caller: Caller, *, model: str, tier: str, requested: str) -> None:
    """A caller limited to some models may name only those (or their tiers, when listed)."""
    if not caller.allowed_models or not requested or requested == AUTO_MODEL:
        return
    if requested not in caller.allowed_models:
        raise NotAllowed(
            f"This agent may not use the model '{requested}'; allowed: "
            f"{', '.join(sorted(caller.allowed_models))}.",
            param="model",
        )


async def _admit(job: CompletionJob, plan: list[Deployment], *, cached: bool = False) -> None:
    """Count the request against its caller's limits and reserve its worst-case cost."""
    caller = job.caller
    if cached:
        if caller.rpm_limit:
            job.admission = await admit(caller, tokens=0, worst_cost_usd=0, cached=True)
        return
    if not caller.budgets and not caller.rpm_limit and not caller.tpm_limit:
        return
    request = job.request
    if caller.budgets and request.max_tokens is None:
        # Capped, so the reservation below is a true worst case.
        job.upstream_chat = replace(
            request, max_tokens=settings.GATEWAY["BUDGET_MAX_OUTPUT_TOKENS"]
        )
        request = job.request
    # The first deployment's worst case is reserved with the rate limits, in one step; the
    # router's guard reserves more before it calls a dearer one (a fallback, an escalation).
    first_cost = _worst_case_usd(job, plan[0]) if caller.budgets and plan else 0.0
    job.admission = await admit(
        caller,
        tokens=router.estimate_tokens(request) + (request.max_tokens or 0),
        worst_cost_usd=first_cost,
    )


def _worst_case_usd(job: CompletionJob, deployment: Deployment) -> float:
    """The most one call can cost: the prompt's bytes as tokens (a token is at least a byte)
    and ``max_tokens`` of output."""
    request = job.request
    max_out = request.max_tokens or settings.GATEWAY["BUDGET_MAX_OUTPUT_TOKENS"]
    return deployment.cost_usd(_prompt_bytes(request), max_out)


def _prompt_bytes(request: ChatRequest) -> int:
    return sum(len(m.content.encode()) + 8 for m in request.messages)


def budget_guard(job: CompletionJob) -> router.AttemptGuard | None:
    """The router's check of the caller's budgets before each upstream call."""
    if job.admission is None:
        return None
    request = job.request
    max_out = request.max_tokens or settings.GATEWAY["BUDGET_MAX_OUTPUT_TOKENS"]
    return job.admission.guard(_prompt_bytes(request), max_out)


async def _plan_and_admit(job: CompletionJob) -> tuple[RoutingSnapshot, list[Deployment]]:
    """Plan the route and admit the request; a refusal is audited like any failed request, except
    one for a full audit queue (its record would only add to the queue)."""
    _refuse_when_audit_backlogged(job)
    try:
        snapshot, plan = await _plan(job)
        # A cached answer counts as a request, but costs nothing and calls no upstream.
        await _admit(job, plan, cached=job.cache.hit is not None)
    except router.RoutingError as exc:
        audit_failed(job, exc.http_status, exc.message, [a.as_dict() for a in exc.attempts])
        raise
    except NotAllowed as exc:
        audit_failed(job, 403, exc.message, [])
        raise
    except LimitExceeded as exc:
        audit_failed(job, 429, exc.message, [])
        raise
    return snapshot, plan


def _refuse_when_audit_backlogged(job: CompletionJob) -> None:
    """503 ``audit_backlog`` while this process's audit queue is full: no answer it cannot record
    (docs/adr/0007-audit-write-path.md)."""
    if audit_writer.backlogged:
        metrics.REQUESTS.labels(job.endpoint, "audit_backlog").inc()
        raise router.RoutingError(
            "The gateway cannot record more requests until its audit log catches up; "
            "try again shortly.",
            code="audit_backlog",
            http_status=503,
            attempts=[],
            retry_after_s=audit_writer.retry_after_s,
        )


async def settle(job: CompletionJob, *, cost_usd: float, tokens: int) -> None:
    """Replace the request's reservation by what it really cost (safe to call twice)."""
    if job.admission is not None:
        await job.admission.settle(cost_usd=cost_usd, tokens=tokens)


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
    snapshot, plan = await _plan_and_admit(job)
    if job.cache.hit is not None:
        return job.cache.hit
    outcome: Outcome | None = None
    try:
        outcome = await _completion_attempts(job, snapshot, plan)
        return outcome
    finally:
        if outcome is None:
            await settle(job, cost_usd=0.0, tokens=0)
        else:
            await settle(
                job, cost_usd=outcome.cost_usd, tokens=outcome.tokens_in + outcome.tokens_out
            )


async def _completion_attempts(
    job: CompletionJob, snapshot: RoutingSnapshot, plan: list[Deployment]
) -> Outcome:
    gate = snapshot.gate_for(job.task_type, job.caller.agent)
    checks = snapshot.validators_for(job.task_type, job.caller.agent)
    second = _second_opinion_task(snapshot, job, checks)
    attempts: list[dict[str, Any]] = []
    best: Answer | None = None
    cost = 0.0
    tokens_in = tokens_out = 0
    escalations = 0
    guard = budget_guard(job)
    while True:
        try:
            done = await router.complete(plan, job.request, deadline=job.deadline, guard=guard)
        except LimitExceeded as exc:
            # The budget cannot cover any deployment left: refused, or no escalation.
            if best is None:
                if second is not None:
                    second.cancel()
                audit_failed(job, 429, exc.message, attempts)
                raise
            break
        except router.RoutingError as exc:
            attempts.extend(a.as_dict() for a in exc.attempts)
            if best is None:
                if second is not None:
                    second.cancel()
                audit_failed(job, exc.http_status, exc.message, attempts)
                raise router.RoutingError(
                    exc.message,
                    code=exc.code,
                    http_status=exc.http_status,
                    attempts=exc.attempts,
                    retry_after_s=exc.retry_after_s,
                ) from exc
            break  # the escalation found nothing better: keep the answer we have
        usage = await estimate_usage(job, done.result.text, done.result.usage)
        spent = done.deployment.cost_usd(usage.input_tokens, usage.output_tokens)
        cost += spent
        if job.admission is not None:
            job.admission.commit(spent)
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
        if job.caller.allowed_tiers:
            plan = [d for d in plan if d.tier in job.caller.allowed_tiers]
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
    snapshot, plan = await _plan_and_admit(job)
    if job.cache.hit is not None:
        return response_cache.replay(job.cache.hit), snapshot
    try:
        opened = await router.open_stream(
            plan, job.request, deadline=job.deadline, guard=budget_guard(job)
        )
        return opened, snapshot
    except router.RoutingError as exc:
        await settle(job, cost_usd=0.0, tokens=0)
        audit_failed(job, exc.http_status, exc.message, [a.as_dict() for a in exc.attempts])
        raise
    except LimitExceeded as exc:
        await settle(job, cost_usd=0.0, tokens=0)
        audit_failed(job, 429, exc.message, [])
        raise
    except BaseException:
        await settle(job, cost_usd=0.0, tokens=0)
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
    if job.cache.hit is not None:
        return job.cache.hit  # a replayed cached answer keeps the gate of its source
    gate = snapshot.gate_for(job.task_type, job.caller.agent)
    confidence = score_answer(
        answer_context(job, output, finish_reason, interrupted=interrupted),
        snapshot.validators_for(job.task_type, job.caller.agent),
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
        "project": job.caller.project,  # for the spend rollups; not an audit column
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
    # A hit's record is marked as one; an approved answer is cached (after the response).
    response_cache.completed(job, outcome, status, row)
    audit_writer.submit(row)
    model = best.deployment.public_name
    metrics.REQUESTS.labels(job.endpoint, status).inc()
    metrics.GATE_STATUS.labels(status).inc()
    if job.cache.hit is None:  # a cached answer took no model's tokens
        metrics.TOKENS.labels(model, "in").inc(outcome.tokens_in)
        metrics.TOKENS.labels(model, "out").inc(outcome.tokens_out)
    if outcome.cost_usd:
        metrics.COST.labels(model).inc(outcome.cost_usd)


async def estimate_usage(job: CompletionJob, output: str, usage: Usage | None) -> Usage:
    """Provider-reported usage, with any part it left out counted by the tokenizer.

    A prompt is never zero tokens, so a zero there means "not reported"; a zero for a non-empty
    output too. What was counted is noted in the audit metadata (``usage_estimated``).
    """
    reported = usage or Usage()
    missing_input = not reported.input_tokens
    missing_output = not reported.output_tokens and bool(output)
    if not missing_input and not missing_output:
        return reported
    counter = await tokenizer.async_counter()
    contents = [m.content for m in job.chat.messages]

    def count() -> Usage:
        return Usage(
            input_tokens=counter.messages(contents) if missing_input else reported.input_tokens,
            output_tokens=counter.text(output) if missing_output else reported.output_tokens,
        )

    size = len(output) + sum(len(c) for c in contents)
    # Long texts are counted off the event loop (a megabyte takes some tens of milliseconds).
    estimated = count() if size < _COUNT_INLINE_CHARS else await asyncio.to_thread(count)
    parts = [
        name for name, missing in (("input", missing_input), ("output", missing_output)) if missing
    ]
    job.metadata["usage_estimated"] = {"by": counter.method, "parts": parts}
    return estimated
