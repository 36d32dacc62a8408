"""Reads for agents and keys, including the cached lookup the hot path uses."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import Q

from gateway_project.versions import ACCESS_VERSION

from .models import ApiKey, Budget
from .services import api_key_hash


@dataclass(frozen=True, slots=True)
class BudgetRef:
    """A budget as the request path needs it: limits in nano-USD (integers add up exactly)."""

    id: int
    label: str
    scope: str
    target: str  # the project's or agent's name, the key's prefix; "" for global
    period: str
    limit_nano: int
    revision: int


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, as the request path needs it (no ORM object on the hot path)."""

    agent: str
    key_prefix: str
    key_id: int = 0
    kind: str = ""
    project: str = ""
    expires_at: float | None = None  # epoch seconds
    allowed_models: frozenset[str] = field(default_factory=frozenset)
    allowed_tiers: frozenset[str] = field(default_factory=frozenset)
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    budgets: tuple[BudgetRef, ...] = ()

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or time.time())


_key_cache: dict[str, tuple[Caller | None, float]] = {}
_MAX_CACHED_KEYS = 10_000
_refreshing: set[str] = set()


@dataclass(slots=True)
class _AccessSeen:
    version: str = ""
    checked: float = 0.0


_access_seen = _AccessSeen()


def budget_ref(budget: Budget) -> BudgetRef:
    target = ""
    if budget.scope == Budget.Scope.PROJECT and budget.project is not None:
        target = budget.project.name
    elif budget.scope == Budget.Scope.AGENT and budget.agent is not None:
        target = budget.agent.name
    elif budget.scope == Budget.Scope.KEY and budget.api_key is not None:
        target = budget.api_key.prefix
    period = "daily" if budget.period == Budget.Period.DAY else "monthly"
    return BudgetRef(
        id=budget.pk,
        label=f"{period} {budget.target}",
        scope=budget.scope,
        target=target,
        period=budget.period,
        limit_nano=int(budget.limit_usd * 1_000_000_000),
        revision=int(budget.created_at.timestamp()),
    )


def _caller_from_db(key_hash: str) -> Caller | None:
    key = (
        ApiKey.objects.select_related("agent", "agent__project")
        .filter(
            key_hash=key_hash,
            revoked_at__isnull=True,
            agent__is_active=True,
            # Reviewer keys decide reviews; they do not spend money on completions.
            scope=ApiKey.Scope.AGENT,
        )
        .first()
    )
    if key is None:
        return None
    agent = key.agent
    applies = Q(scope=Budget.Scope.GLOBAL) | Q(scope=Budget.Scope.AGENT, agent=agent)
    applies |= Q(scope=Budget.Scope.KEY, api_key=key)
    if agent.project_id is not None:
        applies |= Q(scope=Budget.Scope.PROJECT, project_id=agent.project_id)
    budgets = Budget.objects.filter(applies, is_active=True).select_related(
        "project", "agent", "api_key"
    )
    return Caller(
        agent=agent.name,
        key_prefix=key.prefix,
        key_id=key.pk,
        kind=agent.kind,
        project=agent.project.name if agent.project else "",
        expires_at=key.expires_at.timestamp() if key.expires_at else None,
        allowed_models=frozenset(agent.allowed_models or ()),
        allowed_tiers=frozenset(agent.allowed_tiers or ()),
        rpm_limit=agent.rpm_limit,
        tpm_limit=agent.tpm_limit,
        budgets=tuple(budget_ref(b) for b in budgets),
    )


async def _drop_stale_callers(now: float) -> None:
    """Forget every cached caller when the access version moved (a key revoked, a budget or a
    limit changed anywhere); checked at most every ``ACCESS_CHECK_INTERVAL_S``."""
    if now - _access_seen.checked < settings.GATEWAY["ACCESS_CHECK_INTERVAL_S"]:
        return
    _access_seen.checked = now
    version = await ACCESS_VERSION.aget()
    if version != _access_seen.version:
        _access_seen.version = version
        _key_cache.clear()


async def caller_for_key(raw_key: str) -> Caller | None:
    """The caller a bearer key belongs to, or None; cached in process until the access version
    changes (or ``API_KEY_CACHE_S`` passes)."""
    key_hash = api_key_hash(raw_key)
    now = time.monotonic()
    await _drop_stale_callers(now)
    cached = _key_cache.get(key_hash)
    if cached is not None:
        if cached[1] > now:
            return cached[0]
        if key_hash in _refreshing:
            # Another request is re-reading this key: don't send every concurrent one to the
            # database; the previous answer stands for the moment that takes.
            return cached[0]
    _refreshing.add(key_hash)
    try:
        caller = await sync_to_async(_caller_from_db, thread_sensitive=False)(key_hash)
    finally:
        _refreshing.discard(key_hash)
    if len(_key_cache) >= _MAX_CACHED_KEYS:
        _key_cache.clear()
    _key_cache[key_hash] = (caller, now + settings.GATEWAY["API_KEY_CACHE_S"])
    return caller


def forget_cached_keys() -> None:
    _key_cache.clear()
    _access_seen.checked = 0.0
