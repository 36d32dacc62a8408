"""Cost-first routing with retries, backoff, fallback and cooldowns.

See docs/adr/0002-cost-first-tiers.md and docs/adr/0004-external-fallback-chain.md.

``plan_route`` orders the deployments a request may use; ``complete`` and ``open_stream`` walk that
plan. Transient failures are retried on the same deployment with jittered exponential backoff, then
the next deployment, tier and external provider is tried; permanent ones are not retried. Failure
counts and cooldowns live in the shared state, so with Redis every gateway process sees them.

Upstream quotas (docs/adr/0011-upstream-quotas.md): what providers' rate-limit headers say is left
is kept in the shared state per provider and upstream model, and a deployment whose limit cannot
cover the request is skipped until it can; declared daily quotas are counted per provider and UTC
day. Both are read with the cooldowns, in the same single round trip per plan.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Protocol

from django.conf import settings

from gateway_project.api_errors import GatewayError
from gateway_project.shared_state import shared_state
from gateway_project.state_keys import (
    daily_requests_key,
    daily_tokens_key,
    deployment_cooldown_key,
    deployment_failures_key,
    provider_cooldown_key,
    provider_failed_checks_key,
    upstream_limits_key,
)
from providers import quotas
from providers.base import ChatRequest, ChatResult, ErrorClass, ProviderError, StreamChunk
from providers.clients import adapter_of
from providers.health import down_by_health_checks, failed_checks_count
from providers.models import TIER_ORDER
from providers.ratelimits import TOKEN_KINDS, TOKENS, RateLimits, needs_for
from providers.tokenizer import chars_to_tokens, estimate_prompt_tokens, estimate_tokens

from . import metrics
from .config import Deployment, RouteChoice, RoutingSnapshot

logger = logging.getLogger(__name__)

# Observed latency per deployment in this process (exponentially weighted, seconds).
_latency_ewma: dict[int, float] = {}
# Requests in flight per provider in this process, for max_concurrent_requests.
_in_flight: dict[int, int] = {}
# Deployments this process saw fail recently, so a success resets their shared failure count.
_recently_failed: set[int] = set()


@dataclass(slots=True)
class Attempt:
    """One try (or one skip) of one deployment, as recorded in the audit log."""

    provider: str
    model: str
    upstream_model: str
    tier: str
    outcome: str  # "ok", "error", "skipped", "quota_exhausted" (a skip: an upstream quota is spent)
    error_class: str = ""
    status_code: int | None = None
    latency_ms: int = 0
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "provider": self.provider,
            "model": self.model,
            "tier": self.tier,
            "outcome": self.outcome,
            "latency_ms": self.latency_ms,
        }
        if self.upstream_model != self.model:
            data["upstream_model"] = self.upstream_model
        if self.error_class:
            data["error_class"] = self.error_class
        if self.status_code is not None:
            data["status_code"] = self.status_code
        if self.detail:
            data["detail"] = self.detail
        return data


class RoutingError(GatewayError):
    """No deployment produced an answer: the API's status and code, and every attempt (in the
    error body, so the caller sees what was tried). ``retry_after_s``: when some skipped model
    should be back (a 503's ``Retry-After``); None when not known."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        http_status: int,
        attempts: list[Attempt],
        retry_after_s: float | None = None,
    ):
        super().__init__(message, http_status=http_status, code=code, retry_after_s=retry_after_s)
        self.attempts = attempts

    @property
    def extra(self) -> dict[str, Any]:
        return {"attempts": [a.as_dict() for a in self.attempts]}


@dataclass(slots=True)
class Completed:
    result: ChatResult
    deployment: Deployment
    attempts: list[Attempt]


@dataclass(slots=True)
class OpenStream:
    """A stream whose first chunk has arrived; the rest comes from ``chunks``."""

    deployment: Deployment
    first: StreamChunk
    chunks: AsyncGenerator[StreamChunk, None]
    attempts: list[Attempt]
    attempt: Attempt = field(repr=False, default=None)  # type: ignore[assignment]  # set at open


# --- planning ---------------------------------------------------------------------------------


def route_choice_for(snapshot: RoutingSnapshot, *, task_type: str, caller: str) -> RouteChoice:
    """Where routing starts: the caller's preference, the task's route, the default route."""
    prefs = snapshot.caller_preferences
    choice = (
        prefs.get((caller, task_type))
        or prefs.get((caller, ""))
        or snapshot.task_routes.get(task_type)
        or snapshot.task_routes.get("default")
    )
    return choice or RouteChoice(start_tier=TIER_ORDER[0])


def _weighted_order(deployments: tuple[Deployment, ...] | list[Deployment]) -> list[Deployment]:
    """Local first; within that, a weighted shuffle favouring weight and low observed latency."""

    def key(d: Deployment) -> tuple[int, float]:
        effective = d.weight / (1.0 + _latency_ewma.get(d.id, 0.0))
        # Efraimidis-Spirakis: sorting by u^(1/w) draws a weighted random order.
        return (0 if d.is_local else 1, -(random.random() ** (1.0 / max(effective, 1e-6))))

    return sorted(deployments, key=key)


def plan_route(
    snapshot: RoutingSnapshot, *, choice: RouteChoice, tier: str = "", model: str = ""
) -> list[Deployment]:
    """The deployments to try, in order. An explicit ``model`` or ``tier`` beats ``choice``."""
    pinned = model or ("" if tier else choice.pinned_model)
    plan: list[Deployment] = []
    if pinned:
        pinned_deployments = snapshot.by_public_name.get(pinned, ())
        plan.extend(_weighted_order(pinned_deployments))
        start_tier = pinned_deployments[0].tier if pinned_deployments else TIER_ORDER[0]
    else:
        start_tier = tier or choice.start_tier or TIER_ORDER[0]
    seen = {d.id for d in plan}
    for name in TIER_ORDER[TIER_ORDER.index(start_tier) :]:
        in_tier = snapshot.by_tier.get(name, ())
        ordered = list(in_tier) if name == "external" else _weighted_order(in_tier)
        plan.extend(d for d in ordered if d.id not in seen)
    return plan


# --- shared health state -------------------------------------------------------------------


@dataclass(slots=True)
class _PlanState:
    """What the shared state says about a plan's deployments, read in one round trip."""

    # Deployment id → why it is skipped (cooling down, provider down).
    reasons: dict[int, str]
    # Deployments skipped only because their provider failed its health checks; a request
    # whose every candidate is one of these tries them anyway (``_health_panic``).
    down_by_health: set[int]
    # Provider id → its failed health checks in a row (0: none), so that a real success can
    # clear them without reading the shared state again.
    failed_checks: dict[int, int]
    # Deployment id → when (epoch seconds) the reason to skip it should be gone, where known.
    back_at: dict[int, float]
    # upstream_limits_key → the encoded RateLimits stored there (None: nothing).
    limits: dict[str, str | None]
    # Provider id → (calls, tokens) counted today, for providers with declared daily quotas.
    daily: dict[int, tuple[int, int]]
    # Provider id → why its daily quota refused a call during this walk (detail, metric reason).
    refused: dict[int, tuple[str, str]] = field(default_factory=dict)


def _has_daily_quota(d: Deployment) -> bool:
    return d.daily_request_quota is not None or d.daily_token_quota is not None


def _count(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


async def _read_plan_state(plan: list[Deployment]) -> _PlanState:
    """Cooldowns, health, upstream rate limits and today's quota counters of the plan, in one
    round trip (``aget_many_cached``)."""
    provider_ids = sorted({d.provider_id for d in plan})
    limit_keys = list(
        dict.fromkeys(upstream_limits_key(d.provider_id, d.upstream_model) for d in plan)
    )
    quota_providers = sorted({d.provider_id for d in plan if _has_daily_quota(d)})
    keys = [deployment_cooldown_key(d.id) for d in plan]
    keys += [provider_cooldown_key(p) for p in provider_ids] + [
        provider_failed_checks_key(p) for p in provider_ids
    ]
    keys += limit_keys
    if quota_providers:
        day = quotas.utc_day()
        for p in quota_providers:
            keys += [daily_requests_key(p, day), daily_tokens_key(p, day)]
    values = await shared_state().aget_many_cached(
        tuple(keys), settings.GATEWAY["SHARED_STATE_READ_CACHE_S"]
    )
    n, m = len(plan), len(provider_ids)
    provider_cool = {p: values[n + i] for i, p in enumerate(provider_ids)}
    failed_checks = {p: failed_checks_count(values[n + m + i]) for i, p in enumerate(provider_ids)}
    reasons: dict[int, str] = {}
    down_by_health: set[int] = set()
    back_at: dict[int, float] = {}
    now = time.time()
    for i, d in enumerate(plan):
        if values[i]:
            reasons[d.id] = "cooling down after failures"
            if (until := _cooldown_end(values[i])) is not None:
                back_at[d.id] = until
        elif provider_cool[d.provider_id]:
            reasons[d.id] = "provider cooling down: " + str(provider_cool[d.provider_id])
        elif down_by_health_checks(failed := failed_checks[d.provider_id]):
            reasons[d.id] = f"provider failed its last {failed} health checks"
            down_by_health.add(d.id)
            back_at[d.id] = now + settings.GATEWAY["HEALTH_CHECK_INTERVAL_S"]
    offset = n + 2 * m
    limits = {key: values[offset + i] for i, key in enumerate(limit_keys)}
    offset += len(limit_keys)
    daily = {
        p: (_count(values[offset + 2 * i]), _count(values[offset + 2 * i + 1]))
        for i, p in enumerate(quota_providers)
    }
    return _PlanState(
        reasons=reasons,
        down_by_health=down_by_health,
        failed_checks=failed_checks,
        back_at=back_at,
        limits=limits,
        daily=daily,
    )


def _health_panic(
    plan: list[Deployment], state: _PlanState, needs: dict[str, int], now: float
) -> bool:
    """Envoy's panic threshold, at zero: True when every deployment of the plan that nothing
    else rules out (cooldowns, credentials, context window, upstream quotas) is down by health
    checks alone. Then the request tries those anyway: a check that failed is weaker evidence
    than an upstream that answers, and skipping them would leave the request nothing."""
    if not state.down_by_health:
        return False
    for d in plan:
        if d.id in state.reasons:  # the health-down ones among them
            continue
        if not d.has_credentials or needs[TOKENS] > d.context_window:
            continue
        if _quota_block(d, state, needs, now) is None:
            return False  # a candidate the health checks say nothing against
    return True


async def _cool_down(d: Deployment, seconds: float) -> None:
    """Skip ``d`` for ``seconds`` on every process; the value says until when."""
    await shared_state().aset(
        deployment_cooldown_key(d.id), f"{time.time() + seconds:.3f}", seconds
    )


def _cooldown_end(value: object) -> float | None:
    try:
        return float(str(value))
    except ValueError:
        return None


@lru_cache(maxsize=512)
def _decode_limits(raw: str) -> RateLimits | None:
    return RateLimits.decode(raw)


def _upstream_block(
    d: Deployment, state: _PlanState, needs: dict[str, int], now: float
) -> tuple[float, str, str] | None:
    """Until when the upstream's last reported limits cannot cover this request (epoch
    seconds, detail, metric reason); None when they can (or nothing is recorded)."""
    raw = state.limits.get(upstream_limits_key(d.provider_id, d.upstream_model))
    if not raw:
        return None
    limits = _decode_limits(raw)
    blocked = limits.blocked_until(needs) if limits is not None else None
    if blocked is None or blocked[0] <= now:
        return None
    at, window, need = blocked
    name = window.kind.replace("_", " ") + (f" per {window.period}" if window.period else "")
    of = f" of {window.limit}" if window.limit is not None else ""
    return (
        at,
        f"upstream {name} limit exhausted ({window.remaining}{of} left, {need} needed); "
        f"back in {at - now:.1f}s",
        f"upstream_{window.kind}",
    )


def _quota_block(
    d: Deployment, state: _PlanState, needs: dict[str, int], now: float
) -> tuple[float, str, str] | None:
    """Why ``d`` cannot take this request now for a quota (until when, detail, metric reason),
    or None."""
    upstream = _upstream_block(d, state, needs, now)
    if upstream is not None:
        return upstream
    if not _has_daily_quota(d):
        return None
    refused = state.refused.get(d.provider_id)
    if refused is None:
        calls, tokens = state.daily.get(d.provider_id, (0, 0))
        refused = quotas.refusal(
            requests_today=calls,
            tokens_today=tokens,
            request_quota=d.daily_request_quota,
            token_quota=d.daily_token_quota,
            tokens_needed=needs[TOKENS],
        )
    return None if refused is None else (_daily_quota_back_at(), *refused)


def _daily_quota_back_at() -> float:
    """When a spent daily quota is back: the next UTC midnight, in epoch seconds."""
    return time.time() + quotas.seconds_left_today()


async def _record_rate_limits(d: Deployment, limits: RateLimits, state: _PlanState) -> None:
    """Keep what the upstream said when it could stop a request (some window has less than one
    request or a context window of tokens left) until it is stale; forget an older record when
    it no longer could. Providers without such headers never get here."""
    key = upstream_limits_key(d.provider_id, d.upstream_model)
    most = dict.fromkeys(TOKEN_KINDS, d.context_window)
    most["requests"] = 1
    if limits.is_low(most):
        ttl = limits.expires_at() - time.time()
        if ttl > 0:
            raw = limits.encode()
            await shared_state().aset(key, raw, ttl)
            state.limits[key] = raw
            return
    if state.limits.get(key):
        await shared_state().adelete(key)
        state.limits[key] = None


def _quota_skip(d: Deployment, detail: str, metric_reason: str) -> Attempt:
    metrics.QUOTA_SKIPS.labels(d.provider_name, metric_reason).inc()
    return _attempt(d, "quota_exhausted", detail=detail)


class _TokenCountingStream(AsyncGenerator[StreamChunk, None]):
    """Relays a stream, then adds its tokens to the provider's daily count, however it ends
    (finished, failed, or closed by the consumer, even before its first ``anext``)."""

    def __init__(
        self,
        chunks: AsyncGenerator[StreamChunk, None],
        first: StreamChunk,
        d: Deployment,
        prompt: int,
    ) -> None:
        self._chunks = chunks
        self._provider_id = d.provider_id
        self._prompt = prompt
        self._usage = first.usage
        self._chars = len(first.text)
        self._counted = False

    def _seen(self, chunk: StreamChunk) -> StreamChunk:
        self._chars += len(chunk.text)
        if chunk.usage is not None:
            self._usage = chunk.usage
        return chunk

    async def _count(self) -> None:
        if not self._counted:
            self._counted = True
            usage = self._usage
            reported = usage.input_tokens + usage.output_tokens if usage is not None else 0
            await quotas.add_tokens(
                self._provider_id, reported or self._prompt + chars_to_tokens(self._chars)
            )

    async def asend(self, value: None) -> StreamChunk:
        try:
            return self._seen(await self._chunks.asend(value))
        except BaseException:
            await self._count()
            raise

    async def athrow(self, typ: Any, val: Any = None, tb: Any = None) -> StreamChunk:
        try:
            if val is None and tb is None:
                return self._seen(await self._chunks.athrow(typ))
            return self._seen(await self._chunks.athrow(typ, val, tb))
        except BaseException:
            await self._count()
            raise

    async def aclose(self) -> None:
        try:
            await self._chunks.aclose()
        finally:
            await self._count()


async def _record_failure(d: Deployment, error: ProviderError) -> bool:
    """Count a failure; returns True when the deployment is now cooling down."""
    gw = settings.GATEWAY
    state = shared_state()
    _recently_failed.add(d.id)
    if error.error_class == ErrorClass.AUTH:
        await state.aset(
            provider_cooldown_key(d.provider_id),
            f"API key rejected (HTTP {error.status_code})",
            gw["AUTH_FAILURE_COOLDOWN_S"],
        )
        metrics.PROVIDER_AUTH_FAILURES.labels(d.provider_name).inc()
        logger.error(
            "ALERT provider %s rejected its API key (HTTP %s); skipped for %ss",
            d.provider_name,
            error.status_code,
            int(gw["AUTH_FAILURE_COOLDOWN_S"]),
        )
        return True
    if error.error_class == ErrorClass.NOT_FOUND:
        await _cool_down(d, gw["COOLDOWN_S"])
        return True
    if error.retry_after and error.retry_after > gw["RETRY_AFTER_CAP_S"]:
        await _cool_down(d, min(error.retry_after, gw["MAX_COOLDOWN_S"]))
        return True
    failures = await state.aincr(deployment_failures_key(d.id), gw["COOLDOWN_S"])
    if failures >= gw["FAILURE_THRESHOLD"]:
        await _cool_down(d, gw["COOLDOWN_S"])
        await state.adelete(deployment_failures_key(d.id))
        logger.warning(
            "deployment %s/%s cooled down after %s failures",
            d.provider_name,
            d.public_name,
            failures,
        )
        return True
    return False


async def _record_success(d: Deployment, seconds: float, state: _PlanState) -> None:
    previous = _latency_ewma.get(d.id)
    _latency_ewma[d.id] = seconds if previous is None else previous * 0.8 + seconds * 0.2
    if d.id in _recently_failed:
        _recently_failed.discard(d.id)
        await shared_state().adelete(deployment_failures_key(d.id))
    if state.failed_checks.get(d.provider_id):
        # An answer is better evidence than a probe: clear the failed checks on every process.
        # Only here is the shared state written; a healthy provider costs no extra round trip.
        state.failed_checks[d.provider_id] = 0
        await shared_state().adelete(provider_failed_checks_key(d.provider_id))


def _backoff(retry: int) -> float:
    gw = settings.GATEWAY
    return min(gw["BACKOFF_CAP_S"], gw["BACKOFF_BASE_S"] * (2.0**retry)) * random.uniform(0.5, 1.0)


def _attempt(d: Deployment, outcome: str, **kwargs: Any) -> Attempt:
    return Attempt(
        provider=d.provider_name,
        model=d.public_name,
        upstream_model=d.upstream_model,
        tier=d.tier,
        outcome=outcome,
        **kwargs,
    )


# --- execution -------------------------------------------------------------------------------


class AttemptGuard(Protocol):
    """Asked before the first call to each deployment (e.g. whether a budget can cover it): a
    reason to skip it, or None. ``refusal`` is what to raise when it alone left no deployment."""

    refusal: Exception | None

    async def __call__(self, deployment: Deployment) -> str | None: ...


async def _walk(
    plan: list[Deployment],
    request: ChatRequest,
    deadline: float,
    *,
    stream: bool,
    guard: AttemptGuard | None = None,
) -> Completed | OpenStream:
    """Try the plan in order; return the first answer (or opened stream)."""
    attempts: list[Attempt] = []
    if not plan:
        raise RoutingError(
            "No enabled model can serve this request; check the routing config.",
            code="no_route",
            http_status=503,
            attempts=attempts,
        )
    gw = settings.GATEWAY
    prompt_tokens = estimate_prompt_tokens(m.content for m in request.messages)
    needs = needs_for(prompt_tokens, request.max_tokens)
    needed = needs[TOKENS]
    state = await _read_plan_state(plan)
    unavailable = state.reasons
    panic = _health_panic(plan, state, needs, time.time())
    last_error: ProviderError | None = None
    # When each skipped model should be back, where known: the soonest is a 503's Retry-After.
    back_at: list[float] = []
    for d in plan:
        reason = unavailable.get(d.id)
        # Said in each of its attempts: tried although its provider is down by health checks.
        panic_note = ""
        if panic and d.id in state.down_by_health:
            panic_note = f"{reason}; tried anyway, as no other model could serve (panic routing)"
            reason = None
        if reason is not None and d.id in state.back_at:
            back_at.append(state.back_at[d.id])
        if reason is None and not d.has_credentials:
            reason = "provider has no API key configured"
        if reason is None and needed > d.context_window:
            reason = f"context window {d.context_window} < ~{needed} tokens needed"
        if reason is None and (blocked := _quota_block(d, state, needs, time.time())):
            back_at.append(blocked[0])
            attempts.append(_quota_skip(d, blocked[1], blocked[2]))
            continue
        if (
            reason is None
            and d.max_concurrent
            and _in_flight.get(d.provider_id, 0) >= d.max_concurrent
        ):
            reason = "provider at its concurrency limit"
            back_at.append(time.time() + 1)
        if reason is None and guard is not None:
            reason = await guard(d)
        if reason is not None:
            attempts.append(_attempt(d, "skipped", detail=reason))
            continue
        adapter = adapter_of(d.provider_kind)
        for retry in range(gw["MAX_RETRIES"] + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RoutingError(
                    "The request deadline passed before any model answered.",
                    code="deadline_exceeded",
                    http_status=504,
                    attempts=attempts,
                )
            if _has_daily_quota(d):
                refused = await quotas.admit_call(
                    d.provider_id,
                    request_quota=d.daily_request_quota,
                    token_quota=d.daily_token_quota,
                    tokens_needed=needed,
                )
                if refused is not None:
                    state.refused[d.provider_id] = refused
                    back_at.append(_daily_quota_back_at())
                    attempts.append(_quota_skip(d, *refused))
                    break
            target = d.target
            if target.total_timeout > remaining:
                target = replace(target, total_timeout=remaining)
            started = time.monotonic()
            _in_flight[d.provider_id] = _in_flight.get(d.provider_id, 0) + 1
            try:
                if stream:
                    chunks = adapter.stream(request, target)
                    try:
                        async with asyncio.timeout(remaining):
                            first = await anext(chunks)
                    except StopAsyncIteration:
                        raise ProviderError(
                            "stream ended before any content",
                            error_class=ErrorClass.MALFORMED,
                            permanent=False,
                        ) from None
                    except TimeoutError:
                        await chunks.aclose()
                        raise ProviderError(
                            "no first byte before the deadline",
                            error_class=ErrorClass.TIMEOUT,
                            permanent=False,
                        ) from None
                    elapsed = time.monotonic() - started
                    attempt = _attempt(d, "ok", latency_ms=int(elapsed * 1000), detail=panic_note)
                    attempts.append(attempt)
                    await _record_success(d, elapsed, state)
                    metrics.UPSTREAM_ATTEMPTS.labels(d.provider_name, "ok").inc()
                    if first.rate_limits is not None:
                        await _record_rate_limits(d, first.rate_limits, state)
                    if d.daily_token_quota is not None:
                        chunks = _TokenCountingStream(chunks, first, d, prompt_tokens)
                    return OpenStream(d, first, chunks, attempts, attempt)
                result = await adapter.complete(request, target)
                elapsed = time.monotonic() - started
                attempts.append(
                    _attempt(d, "ok", latency_ms=int(elapsed * 1000), detail=panic_note)
                )
                await _record_success(d, elapsed, state)
                metrics.UPSTREAM_ATTEMPTS.labels(d.provider_name, "ok").inc()
                if result.rate_limits is not None:
                    await _record_rate_limits(d, result.rate_limits, state)
                if d.daily_token_quota is not None:
                    usage = result.usage
                    await quotas.add_tokens(
                        d.provider_id,
                        usage.input_tokens + usage.output_tokens
                        or prompt_tokens + estimate_tokens(result.text),
                    )
                return Completed(result, d, attempts)
            except ProviderError as error:
                last_error = error
                attempts.append(
                    _attempt(
                        d,
                        "error",
                        error_class=str(error.error_class),
                        status_code=error.status_code,
                        latency_ms=int((time.monotonic() - started) * 1000),
                        detail=(f"{panic_note}; " if panic_note else "") + error.message[:300],
                    )
                )
                metrics.UPSTREAM_ATTEMPTS.labels(d.provider_name, str(error.error_class)).inc()
                if error.rate_limits is not None:
                    await _record_rate_limits(d, error.rate_limits, state)
                if error.error_class == ErrorClass.BAD_REQUEST:
                    # The request itself is at fault: every other model would refuse it too.
                    raise RoutingError(
                        f"The upstream rejected the request: {error.message}",
                        code="upstream_rejected_request",
                        http_status=400,
                        attempts=attempts,
                    ) from error
                now = time.time()
                if (
                    error.error_class == ErrorClass.RATE_LIMITED
                    and error.rate_limits is not None
                    and (spent := _upstream_block(d, state, needs, now)) is not None
                ):
                    # A spent quota, as its headers say: not a failure of the deployment (no
                    # circuit breaker count) and no retry before its reset; the next one answers.
                    # A longer Retry-After still cools it down, as for any 429 (ADR 0002).
                    wait = error.retry_after
                    if wait and wait > gw["RETRY_AFTER_CAP_S"] and now + wait > spent[0] + 1:
                        await _cool_down(d, min(wait, gw["MAX_COOLDOWN_S"]))
                    break
                cooled = await _record_failure(d, error)
                if error.permanent or cooled or retry >= gw["MAX_RETRIES"]:
                    break
                delay = _backoff(retry)
                if error.retry_after is not None:
                    delay = max(delay, error.retry_after)
                if time.monotonic() + delay >= deadline:
                    break
                await asyncio.sleep(delay)
            finally:
                _in_flight[d.provider_id] -= 1
    tried = [a for a in attempts if a.outcome not in ("skipped", "quota_exhausted")]
    if not tried and guard is not None and guard.refusal is not None:
        raise guard.refusal
    if not tried:
        raise RoutingError(
            "Every model that could serve this request is unavailable right now "
            "(cooling down, unhealthy, without credentials or out of quota).",
            code="no_available_model",
            http_status=503,
            attempts=attempts,
            retry_after_s=max(1.0, min(back_at) - time.time()) if back_at else None,
        )
    last = last_error.message if last_error else "unknown error"
    raise RoutingError(
        f"All {len(tried)} attempts failed; last error: {last}",
        code="all_providers_failed",
        http_status=502,
        attempts=attempts,
    )


async def complete(
    plan: list[Deployment],
    request: ChatRequest,
    *,
    deadline: float,
    guard: AttemptGuard | None = None,
) -> Completed:
    """A whole answer from the first deployment of the plan that gives one."""
    outcome = await _walk(plan, request, deadline, stream=False, guard=guard)
    assert isinstance(outcome, Completed)
    return outcome


async def open_stream(
    plan: list[Deployment],
    request: ChatRequest,
    *,
    deadline: float,
    guard: AttemptGuard | None = None,
) -> OpenStream:
    """A stream from the first deployment that sends a first chunk; later failures are final."""
    outcome = await _walk(plan, request, deadline, stream=True, guard=guard)
    assert isinstance(outcome, OpenStream)
    return outcome


def reset_process_state() -> None:
    """Forget this process's latency and failure memory (tests)."""
    _latency_ewma.clear()
    _in_flight.clear()
    _recently_failed.clear()
