"""Reads for agents and keys, including the cached lookup the hot path uses."""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings

from .models import ApiKey
from .services import api_key_hash


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, as the request path needs it (no ORM object on the hot path)."""

    agent: str
    key_prefix: str


_key_cache: dict[str, tuple[Caller | None, float]] = {}
_MAX_CACHED_KEYS = 10_000
_refreshing: set[str] = set()


def _caller_from_db(key_hash: str) -> Caller | None:
    key = (
        ApiKey.objects.select_related("agent")
        .filter(
            key_hash=key_hash,
            revoked_at__isnull=True,
            agent__is_active=True,
            # Reviewer keys decide reviews; they do not spend money on completions.
            scope=ApiKey.Scope.AGENT,
        )
        .first()
    )
    return Caller(agent=key.agent.name, key_prefix=key.prefix) if key else None


async def caller_for_key(raw_key: str) -> Caller | None:
    """The caller a bearer key belongs to, or None; cached in process for a few seconds."""
    key_hash = api_key_hash(raw_key)
    now = time.monotonic()
    cached = _key_cache.get(key_hash)
    if cached is not None:
        if cached[1] > now:
            return cached[0]
        if key_hash in _refreshing:
            # Another request is re-reading this key: don't send every concurrent one to the
            # database; the previous answer stands for the moment that takes.
            return cached[0]
    from asgiref.sync import sync_to_async

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
