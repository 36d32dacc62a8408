"""Reads about providers for the admin: what the running gateway currently knows of each one."""

from __future__ import annotations

import time

import orjson

from gateway_project.shared_state import shared_state
from gateway_project.state_keys import (
    provider_cooldown_key,
    provider_failed_checks_key,
    provider_health_key,
    upstream_limits_key,
)

from .health import down_by_health_checks, failed_checks_count
from .quotas import usage_today
from .ratelimits import RateLimits


def provider_runtime_status(*, provider_id: int) -> str:
    """A short line for the admin: key rejected, cooling down, or the last health check (and
    the failed checks in a row, which routing counts)."""
    state = shared_state()
    cooling = state.get(provider_cooldown_key(provider_id))
    if cooling:
        return cooling
    health = state.get(provider_health_key(provider_id))
    if not health:
        return "not checked yet"
    check = orjson.loads(health)
    line = f"{check.get('status', 'unknown')} ({check.get('latency_ms', '?')} ms)"
    failed = failed_checks_count(state.get(provider_failed_checks_key(provider_id)))
    if failed:
        line += f", {failed} failed check{'s' if failed != 1 else ''} in a row"
        if down_by_health_checks(failed):
            line += ": skipped while other models can serve"
    return line


def provider_quota_usage(
    *, provider_id: int, request_quota: int | None, token_quota: int | None
) -> str:
    """Today's count against the declared daily quotas, e.g. "12 / 100 calls", "" when none."""
    if request_quota is None and token_quota is None:
        return ""
    calls, tokens = usage_today(provider_id)
    parts = []
    if request_quota is not None:
        parts.append(f"{min(calls, request_quota):,} / {request_quota:,} calls")
    if token_quota is not None:
        parts.append(f"{tokens:,} / {token_quota:,} tokens")
    return " · ".join(parts)


def upstream_limits_status(*, provider_id: int, upstream_model: str) -> str:
    """What the upstream's rate-limit headers last said when a limit was running low, e.g.
    "requests 0/30 (back in 12s)"; "" when nothing is recorded."""
    raw = shared_state().get(upstream_limits_key(provider_id, upstream_model))
    limits = RateLimits.decode(raw) if raw else None
    if limits is None:
        return ""
    now = time.time()
    parts = []
    for window in limits.windows:
        name = window.kind.replace("_", " ") + (f"/{window.period}" if window.period else "")
        of = f"/{window.limit}" if window.limit is not None else ""
        reset = ""
        if window.reset_at is not None and window.reset_at > now:
            reset = f" (reset in {window.reset_at - now:.0f}s)"
        parts.append(f"{name} {window.remaining}{of}{reset}")
    return ", ".join(parts)
