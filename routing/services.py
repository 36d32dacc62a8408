"""The completion pipeline shared by the native and the OpenAI-compatible API.

A view validates its wire format into a ``CompletionJob`` (routing/jobs.py); ``completion_run``
routes, scores, escalates and gates it (``completion_stream_open`` and ``stream_outcome`` do the
same for a stream, scored at its end); ``audit_completed`` queues the audit record. Views only
translate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from django.conf import settings

from agents.limits import BudgetGuard, LimitExceeded, admit
from agents.selectors import Caller
from agents.spend import row_charges
from gateway_project.api_errors import GatewayError
from providers import tokenizer
from providers.base import ChatRequest, ChatResult, Message, Usage
from providers.models import TIER_ORDER
from scoring.validators import AnswerContext, score_answer

from . import cache as response_cache
from . import metrics, router
from .audit import audit_writer
from .billing import CLASSIFICATION, SECOND_OPINION
from .classify import (
    Classification,
    classification_from_answer,
    classifier_call,
    classify_by_rules,
)
from .config import Deployment, RouteChoice, RoutingSnapshot, current_snapshot
from .jobs import Answer, CompletionJob, Outcome

logger = logging.getLogger(__name__)

TIER_ALIASES = frozenset(TIER_ORDER)
AUTO_MODEL = "auto"
# Token counts of texts shorter than this run on the event loop, longer ones in a thread.
_COUNT_INLINE_CHARS = 64 * 1024


class UnknownModel(GatewayError):
    """The request names a model that is neither a public model, a tier nor ``auto`` (404)."""

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model '{model}' does not exist; GET /v1/models lists the models.",
            http_status=404,
            code="model_not_found",
            param="model",
        )
        self.model = model


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
    _check_allowed(job.caller, model=model, tier=tier, requested=job.requested_model)
    if not job.task_type:
        job.classification = await _classify(job, snapshot)
        job.task_type = job.classification.task_type
    prefix = snapshot.prompt_prefixes.get(job.task_type)
    if prefix:
        job.upstream_chat = replace(job.chat, messages=prefix + job.chat.messages)
    if job.caller.budgets and job.request.max_tokens is None:
        # Capped, so the reservations of its calls are true worst cases.
        job.upstream_chat = replace(
            job.request, max_tokens=settings.GATEWAY["BUDGET_MAX_OUTPUT_TOKENS"]
        )
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


class NotAllowed(GatewayError):
    """The caller's profile does not allow this request (HTTP 403)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message, http_status=403, code="not_allowed", param=param)


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


async def _classify(job: CompletionJob, snapshot: RoutingSnapshot) -> Classification:
    """The task type of a request that named none: the admin's rules, else the classifier model
    (a call on the request's behalf, admitted and billed like its answer), else the default."""
    text = job.last_user_text
    found = classify_by_rules(snapshot, text)
    if found is not None:
        return found
    call = classifier_call(snapshot, text)
    if call is not None:
        plan, request = call
        # The request's first upstream call: it is admitted (limits, the call's worst case) now.
        await _admit(job, worst_cost_usd=_worst_case_usd(request, plan[0]))
        deadline = min(job.deadline, time.monotonic() + CLASSIFIER_TIMEOUT_S)
        done = await side_call(
            job, purpose=CLASSIFICATION, plan=plan, request=request, deadline=deadline
        )
        if done is not None:
            found = classification_from_answer(snapshot, done.result.text)
        else:
            logger.warning("classifier model %s gave no answer", plan[0].public_name)
    return found or Classification(settings.GATEWAY["DEFAULT_TASK_TYPE"], "default")


CLASSIFIER_TIMEOUT_S = 10.0


async def classification_run(
    *,
    request_id: str,
    caller: Caller,
    text: str,
    declared_caller: str,
    snapshot: RoutingSnapshot,
) -> Classification:
    """``POST /v1/classify``: the task type of ``text``. When the classifier model is asked, the
    call is the caller's spend as in a completion: admitted against its limits and budgets,
    billed, settled, and audited (a record of endpoint ``classify``, rolled up)."""
    job = CompletionJob(
        endpoint="classify",
        request_id=request_id,
        caller=caller,
        declared_caller=declared_caller,
        chat=ChatRequest(messages=(Message("user", text),)),
        deadline=time.monotonic() + CLASSIFIER_TIMEOUT_S,
    )
    try:
        job.classification = await _classify(job, snapshot)
    except LimitExceeded as exc:
        audit_failed(job, exc.http_status, exc.message)
        raise
    finally:
        await settle(job)
    if job.admitted:  # the classifier model was asked (a rule or the default costs nothing)
        _audit_classified(job, job.classification)
    return job.classification


def _audit_classified(job: CompletionJob, found: Classification) -> None:
    bill = job.bill
    answered = [a for a in bill.attempts if a.get("outcome") == "ok"]
    row = _base_row(job)
    row.update(
        status="approved",  # answered; a classification has no confidence gate
        http_status=200,
        task_type=found.task_type,
        attempts=bill.attempts,
        provider=answered[-1].get("provider", "") if answered else "",
        model=answered[-1].get("model", "") if answered else "",
        tokens_in=bill.tokens_in,
        tokens_out=bill.tokens_out,
        cost_usd=round(bill.cost_usd, 8),
        output=found.task_type,
    )
    audit_writer.submit(row)
    metrics.REQUESTS.labels(job.endpoint, "approved").inc()
    _count_charges(row)


async def _admit(job: CompletionJob, *, worst_cost_usd: float, cached: bool = False) -> None:
    """Count the request against its caller's limits and reserve the worst case of its first
    upstream call(s) (``worst_cost_usd``), in one atomic step."""
    job.admitted = True
    caller = job.caller
    if cached:
        if caller.rpm_limit:
            job.admission = await admit(caller, tokens=0, worst_cost_usd=0, cached=True)
        return
    if not caller.budgets and not caller.rpm_limit and not caller.tpm_limit:
        return
    request = job.request
    # The router's guard reserves more before any further call (a fallback, an escalation).
    job.admission = await admit(
        caller,
        tokens=tokenizer.estimate_prompt_tokens(m.content for m in request.messages)
        + (request.max_tokens or 0),
        worst_cost_usd=worst_cost_usd if caller.budgets else 0.0,
    )


def _worst_case_usd(request: ChatRequest, deployment: Deployment) -> float:
    """The most one call can cost: the prompt's bytes as tokens (a token is at least a byte)
    and ``max_tokens`` of output."""
    max_out = request.max_tokens or settings.GATEWAY["BUDGET_MAX_OUTPUT_TOKENS"]
    return deployment.cost_usd(_prompt_tokens_at_most(request), max_out)


def _prompt_tokens_at_most(request: ChatRequest) -> int:
    return tokenizer.prompt_tokens_at_most(m.content for m in request.messages)


def budget_guard(job: CompletionJob, request: ChatRequest | None = None) -> BudgetGuard | None:
    """The router's check of the caller's budgets before each upstream call of one walk (of
    ``request``: the job's own by default)."""
    if job.admission is None:
        return None
    request = request or job.request
    max_out = request.max_tokens or settings.GATEWAY["BUDGET_MAX_OUTPUT_TOKENS"]
    return job.admission.guard(_prompt_tokens_at_most(request), max_out)


def _second_opinion_plan(snapshot: RoutingSnapshot, job: CompletionJob) -> list[Deployment]:
    """Where the agreement validator's second opinion comes from, when the task type's
    validators want one."""
    checks = snapshot.validators_for(job.task_type, job.caller.agent)
    setting = next((s for s in checks if s.name == "agreement"), None)
    model = str(setting.params.get("model", "")) if setting else ""
    return list(snapshot.by_public_name.get(model, ()))


async def _plan_and_admit(
    job: CompletionJob, *, second_opinion: bool = False
) -> tuple[RoutingSnapshot, list[Deployment]]:
    """Plan the route and admit the request; a refusal is audited like any failed request.

    Admission reserves the first deployment's worst case and, for a whole answer whose
    validators want a second opinion, that call's too: a budget that cannot cover both refuses
    the request before any upstream call.
    """
    _refuse_when_audit_backlogged(job)
    try:
        snapshot, plan = await _plan(job)
        if second_opinion and plan:
            job.second_opinion_plan = _second_opinion_plan(snapshot, job)
        if not job.admitted:
            # A cached answer counts as a request, but costs nothing and calls no upstream.
            worst = 0.0
            if job.caller.budgets and plan:
                worst = _worst_case_usd(job.request, plan[0])
                if job.second_opinion_plan:
                    worst += _worst_case_usd(job.request, job.second_opinion_plan[0])
            await _admit(job, worst_cost_usd=worst, cached=job.cache.hit is not None)
    except (router.RoutingError, NotAllowed, LimitExceeded) as exc:
        # Refused: audited like any failed request (an unknown model is not: it names nothing).
        if isinstance(exc, router.RoutingError):
            job.bill.record(exc.attempts)
        audit_failed(job, exc.http_status, exc.message)
        await settle(job)
        raise
    except BaseException:
        await settle(job)
        raise
    if job.cache.hit is not None:
        # Served from the cache: what the request cost is what it called for (a classification).
        job.cache.hit.attempts = job.bill.attempts
        job.cache.hit.cost_usd = job.bill.cost_usd
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


async def settle(job: CompletionJob) -> None:
    """Replace the request's reservation by what its bill says it cost (safe to call twice)."""
    if job.admission is not None:
        await job.admission.settle(cost_usd=job.bill.cost_usd, tokens=job.bill.tokens)


@dataclass(slots=True)
class Call:
    """One answered walk of the router, as billed."""

    done: router.Completed
    usage: Usage
    attempts: list[dict[str, Any]]
    cost_usd: float


async def _billed_call(
    job: CompletionJob,
    plan: list[Deployment],
    request: ChatRequest,
    *,
    deadline: float,
    guard: BudgetGuard | None,
    purpose: str = "",
) -> Call:
    """Walk the plan for one answer and put it on the request's bill (failed attempts too);
    raises as ``router.complete`` does. The guard reserved before each call and is finished
    here, with the answer's cost."""
    cost = 0.0
    try:
        try:
            done = await router.complete(plan, request, deadline=deadline, guard=guard)
        except router.RoutingError as exc:
            job.bill.record(exc.attempts, purpose=purpose)
            raise
        usage = await estimate_usage(job, done.result.text, done.result.usage, request=request)
        attempts, cost = job.bill.charge(done.attempts, done.deployment, usage, purpose=purpose)
        return Call(done, usage, attempts, cost)
    finally:
        if guard is not None:
            guard.finish(cost)


async def side_call(
    job: CompletionJob,
    *,
    purpose: str,
    plan: list[Deployment],
    request: ChatRequest,
    deadline: float,
) -> router.Completed | None:
    """An upstream call made on the request's behalf besides its answer (a classification, a
    second opinion): reserved against the caller's budgets before it is made, then costed and
    audited as attempts marked with ``purpose``. None when no deployment answered or the budget
    could not cover one: the request goes on without it."""
    try:
        call = await _billed_call(
            job, plan, request, deadline=deadline, guard=budget_guard(job, request), purpose=purpose
        )
    except router.RoutingError:
        return None
    except LimitExceeded as exc:
        job.bill.note(
            {"model": plan[0].public_name, "outcome": "skipped", "detail": exc.message[:300]},
            purpose=purpose,
        )
        return None
    except asyncio.CancelledError:
        # Given up (the answer is in hand, or the deadline passed): what it used is not known.
        job.bill.note({"model": plan[0].public_name, "outcome": "cancelled"}, purpose=purpose)
        raise
    return call.done


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


def _second_opinion_task(job: CompletionJob) -> asyncio.Task[str | None] | None:
    """Start asking the agreement model in parallel, when the task type's validators want one."""
    plan = job.second_opinion_plan
    if not plan:
        return None

    async def ask() -> str | None:
        done = await side_call(
            job, purpose=SECOND_OPINION, plan=plan, request=job.request, deadline=job.deadline
        )
        return done.result.text if done is not None else None

    return asyncio.create_task(ask())


async def _stop(task: asyncio.Task[str | None] | None) -> None:
    """Cancel a second opinion still running and wait until it has put itself on the bill."""
    if task is None:
        return
    if not task.done():
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def completion_run(job: CompletionJob) -> Outcome:
    """Route a whole-answer request, score it, escalate while it is weak and allowed, and gate it.

    Failures are audited here; successes by ``audit_completed`` once the view has its answer.
    Either way the reservation is settled with what the request's calls cost.
    """
    snapshot, plan = await _plan_and_admit(job, second_opinion=True)
    try:
        if job.cache.hit is not None:
            return job.cache.hit
        return await _completion_attempts(job, snapshot, plan)
    finally:
        await settle(job)


async def _completion_attempts(
    job: CompletionJob, snapshot: RoutingSnapshot, plan: list[Deployment]
) -> Outcome:
    second = _second_opinion_task(job)
    try:
        best, escalations = await _answers(job, snapshot, plan, second)
    except router.RoutingError as exc:
        await _stop(second)
        audit_failed(job, exc.http_status, exc.message)
        raise router.RoutingError(
            exc.message,
            code=exc.code,
            http_status=exc.http_status,
            attempts=exc.attempts,
            retry_after_s=exc.retry_after_s,
        ) from exc
    except LimitExceeded as exc:
        # The budget could not cover any deployment: refused.
        await _stop(second)
        audit_failed(job, exc.http_status, exc.message)
        raise
    finally:
        await _stop(second)
    gate = snapshot.gate_for(job.task_type, job.caller.agent)
    status = gate.status_for(best.confidence.score)
    bill = job.bill
    return Outcome(
        best=best,
        status=status,
        attempts=bill.attempts,
        cost_usd=bill.cost_usd,
        tokens_in=bill.tokens_in,
        tokens_out=bill.tokens_out,
        escalations=escalations,
        review_reason=gate.review_reason(status, explored="exploration" in job.metadata),
    )


async def _answers(
    job: CompletionJob,
    snapshot: RoutingSnapshot,
    plan: list[Deployment],
    second: asyncio.Task[str | None] | None,
) -> tuple[Answer, int]:
    """Ask the plan, score the answer, and ask the next tier while it is weak and the gate
    allows; the best-scored answer and the number of escalations."""
    gate = snapshot.gate_for(job.task_type, job.caller.agent)
    checks = snapshot.validators_for(job.task_type, job.caller.agent)
    best: Answer | None = None
    escalations = 0
    guard = budget_guard(job)
    while True:
        try:
            call = await _billed_call(job, plan, job.request, deadline=job.deadline, guard=guard)
        except (LimitExceeded, router.RoutingError):
            # The budget cannot cover any deployment left, or none answered: with an answer in
            # hand, the escalation found nothing better.
            if best is None:
                raise
            break
        done = call.done
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
        call.attempts[-1]["confidence"] = confidence.score
        if escalations:
            call.attempts[0]["escalation"] = escalations
        answer = Answer(done.result, done.deployment, call.usage, confidence)
        if best is None or confidence.score > best.confidence.score:
            best = answer
        if not gate.may_escalate(
            confidence=confidence.score,
            tier=done.deployment.tier,
            steps=escalations,
            cost_usd=job.bill.cost_usd,
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
    return best, escalations


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
        job.bill.record(exc.attempts)
        await settle(job)
        audit_failed(job, exc.http_status, exc.message)
        raise
    except LimitExceeded as exc:
        await settle(job)
        audit_failed(job, exc.http_status, exc.message)
        raise
    except BaseException:
        await settle(job)
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
    """Score, gate and bill a finished stream (call once); it cannot be escalated, so low scores
    go to review."""
    if job.cache.hit is not None:
        return job.cache.hit  # a replayed cached answer keeps the gate of its source
    gate = snapshot.gate_for(job.task_type, job.caller.agent)
    confidence = score_answer(
        answer_context(job, output, finish_reason, interrupted=interrupted),
        snapshot.validators_for(job.task_type, job.caller.agent),
    )
    status = gate.status_for(confidence.score)
    attempts, _ = job.bill.charge(opened.attempts, opened.deployment, usage)
    attempts[-1]["confidence"] = confidence.score
    bill = job.bill
    return Outcome(
        best=Answer(
            ChatResult(text=output, finish_reason=finish_reason, usage=usage),
            opened.deployment,
            usage,
            confidence,
        ),
        status=status,
        attempts=bill.attempts,
        cost_usd=bill.cost_usd,
        tokens_in=bill.tokens_in,
        tokens_out=bill.tokens_out,
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


def audit_failed(job: CompletionJob, http_status: int, error: str) -> None:
    """Queue the record of a request that got no answer (with every call it made: a
    classification or a second opinion may have cost something)."""
    bill = job.bill
    row = _base_row(job)
    row.update(
        status="failed",
        http_status=http_status,
        error=error[:500],
        attempts=bill.attempts,
        tokens_in=bill.tokens_in,
        tokens_out=bill.tokens_out,
        cost_usd=round(bill.cost_usd, 8),
    )
    audit_writer.submit(row)
    metrics.REQUESTS.labels(job.endpoint, "failed").inc()
    _count_charges(row)


def _count_charges(row: dict[str, Any]) -> None:
    """Tokens and cost metrics, each call's charged to the model that served it."""
    for charge in row_charges(row):
        metrics.TOKENS.labels(charge.model, "in").inc(charge.tokens_in)
        metrics.TOKENS.labels(charge.model, "out").inc(charge.tokens_out)
        if charge.cost_usd:
            metrics.COST.labels(charge.model).inc(float(charge.cost_usd))


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
    if job.cache.hit is not None:
        # A cached answer took no model's tokens: the record has only what its own calls used.
        row.update(tokens_in=job.bill.tokens_in, tokens_out=job.bill.tokens_out)
    audit_writer.submit(row)
    metrics.REQUESTS.labels(job.endpoint, status).inc()
    metrics.GATE_STATUS.labels(status).inc()
    _count_charges(row)


async def estimate_usage(
    job: CompletionJob, output: str, usage: Usage | None, *, request: ChatRequest | None = None
) -> Usage:
    """Provider-reported usage of a call of the request (of ``request``, when it is not the
    caller's own: a classification), with any part it left out counted by the tokenizer.

    A prompt is never zero tokens, so a zero there means "not reported"; a zero for a non-empty
    output too. What was counted is noted in the audit metadata (``usage_estimated``).
    """
    reported = usage or Usage()
    missing_input = not reported.input_tokens
    missing_output = not reported.output_tokens and bool(output)
    if not missing_input and not missing_output:
        return reported
    counter = await tokenizer.async_counter()
    messages: tuple[Message, ...] = (request or job.chat).messages
    contents = [m.content for m in messages]

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
