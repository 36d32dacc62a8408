"""Declared daily quotas of providers, counted per UTC day in the shared state.

An admin can declare how many calls and tokens a provider allows per UTC day (a free tier's daily
quota: ``Provider.daily_request_quota`` / ``daily_token_quota``). Every call to such a provider is
admitted against today's counters first, atomically (``SharedState.aadmit``: with Redis one Lua
step, so several gateway processes together never pass the quota); its tokens are added once the
answer is in. Counters are named by the day and expire at its end, so a new UTC day starts from
zero. The router reads the counters with its other shared-state keys, once per plan, to skip an
exhausted provider without a round trip (docs/adr/0011-upstream-quotas.md).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway_project.shared_state import ADMITTED, Counter, shared_state
from gateway_project.state_keys import daily_requests_key, daily_tokens_key

NO_LIMIT = 2**62
"""The limit of a counter that only counts (a provider with a token quota but no request quota)."""


def utc_day(now: datetime | None = None) -> str:
    """Today (UTC) as ``YYYYMMDD``, the suffix of the day's counter keys."""
    return (now or datetime.now(UTC)).strftime("%Y%m%d")


def seconds_left_today(now: datetime | None = None) -> float:
    """Seconds until the next UTC midnight (at least one)."""
    now = now or datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1.0, (midnight - now).total_seconds())


def refusal(
    *,
    requests_today: int,
    tokens_today: int,
    request_quota: int | None,
    token_quota: int | None,
    tokens_needed: int,
) -> tuple[str, str] | None:
    """Why a call would pass a quota (detail, metric reason), None when it would not."""
    if request_quota is not None and requests_today >= request_quota:
        return (
            f"daily request quota reached ({requests_today}/{request_quota} today, UTC)",
            "daily_requests",
        )
    if token_quota is not None and tokens_today + tokens_needed > token_quota:
        return (
            f"daily token quota reached ({tokens_today} + ~{tokens_needed} > {token_quota} "
            "tokens today, UTC)",
            "daily_tokens",
        )
    return None


async def admit_call(
    provider_id: int, *, request_quota: int | None, token_quota: int | None, tokens_needed: int
) -> tuple[str, str] | None:
    """Count one call against today's quotas if it fits them; else why not (detail, reason).

    The request counter only grows when the call is admitted, so it never passes its quota. The
    token counter is checked (today's tokens plus ``tokens_needed`` within the quota) and grows
    after the answer (:func:`add_tokens`).
    """
    day = utc_day()
    ttl = seconds_left_today()
    counters = [
        Counter(
            key=daily_requests_key(provider_id, day),
            amount=1,
            limit=NO_LIMIT if request_quota is None else request_quota,
            ttl=ttl,
        )
    ]
    if token_quota is not None:
        counters.append(
            Counter(
                key=daily_tokens_key(provider_id, day),
                amount=0,
                limit=token_quota - tokens_needed,
                ttl=ttl,
            )
        )
    admission = await shared_state().aadmit(counters)
    if admission.status == ADMITTED:
        return None
    used = admission.used[0] if admission.used else 0
    if admission.index == 0:
        return refusal(
            requests_today=used,
            tokens_today=0,
            request_quota=request_quota,
            token_quota=None,
            tokens_needed=tokens_needed,
        ) or ("daily request quota reached", "daily_requests")
    return refusal(
        requests_today=0,
        tokens_today=used,
        request_quota=None,
        token_quota=token_quota,
        tokens_needed=tokens_needed,
    ) or ("daily token quota reached", "daily_tokens")


async def add_tokens(provider_id: int, tokens: int) -> None:
    """Add an answer's tokens to today's count."""
    if tokens > 0:
        day = utc_day()
        await shared_state().aadjust(
            [(daily_tokens_key(provider_id, day), tokens, seconds_left_today())]
        )


def usage_today(provider_id: int) -> tuple[int, int]:
    """Today's (calls, tokens) of a provider, for the admin (sync API)."""
    state = shared_state()
    day = utc_day()
    calls = state.get(daily_requests_key(provider_id, day))
    tokens = state.get(daily_tokens_key(provider_id, day))
    return int(calls or 0), int(tokens or 0)
