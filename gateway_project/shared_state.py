"""Small key-value state shared by every gateway process: cooldowns, failure counts, health.

With ``REDIS_URL`` set it lives in Redis, so several processes on several hosts act as one; without
it, in a dictionary of this process (the embedded default runs one gateway process). The hot path
uses the async methods; admin actions and management commands use the sync ones.

If Redis stops answering, calls fall back to the local store (and stay there for a few seconds before
trying Redis again, so no request waits on a dead connection) and a warning is logged once a minute:
routing keeps working on per-process state rather than failing requests
(docs/adr/0008-embedded-defaults-and-shared-state.md).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)

KEY_PREFIX = "gw:"
REDIS_RETRY_AFTER_S = 5.0


class LocalState:
    """Thread-safe dictionary with expiry; the embedded default."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[str, float | None]] = {}
        self._lock = threading.Lock()

    def _live(self, key: str, now: float) -> str | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= now:
            del self._data[key]
            return None
        return value

    def get_many(self, keys: list[str]) -> list[str | None]:
        now = time.monotonic()
        with self._lock:
            return [self._live(k, now) for k in keys]

    def set(self, key: str, value: str, ttl: float | None = None) -> None:
        expires = time.monotonic() + ttl if ttl else None
        with self._lock:
            self._data[key] = (value, expires)

    def add(self, key: str, value: str, ttl: float) -> bool:
        now = time.monotonic()
        with self._lock:
            if self._live(key, now) is not None:
                return False
            self._data[key] = (value, now + ttl)
            return True

    def incr(self, key: str, ttl: float) -> int:
        now = time.monotonic()
        with self._lock:
            current = int(self._live(key, now) or 0) + 1
            previous = self._data.get(key)
            expires = previous[1] if previous and current > 1 else now + ttl
            self._data[key] = (str(current), expires)
            return current

    def delete(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


class SharedState:
    """Redis-backed when configured, with the local store as the fallback when Redis fails."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.local = LocalState()
        self._sync_client: Any = None
        # redis.asyncio clients are bound to the event loop that created them.
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._last_warning = 0.0
        self._redis_down_until = 0.0
        # keys → (fresh until, values, refresh in progress); see aget_many_cached.
        self._read_cache: dict[tuple[str, ...], tuple[float, list[str | None], bool]] = {}

    @property
    def uses_redis(self) -> bool:
        """Whether to try Redis now: configured, and not failed within the last few seconds."""
        return bool(self.redis_url) and time.monotonic() >= self._redis_down_until

    # -- clients ---------------------------------------------------------------------------
    def _sync(self) -> Any:
        if self._sync_client is None:
            import redis

            self._sync_client = redis.Redis.from_url(
                self.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
            )
        return self._sync_client

    def _async(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            import redis.asyncio

            # A blocking pool: a burst of requests waits briefly for a connection instead of
            # failing with "Too many connections" (which would look like Redis being down).
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                self.redis_url,
                max_connections=64,
                timeout=1.0,
                socket_timeout=0.5,
                socket_connect_timeout=0.5,
            )
            client = redis.asyncio.Redis(connection_pool=pool)
            self._async_clients[loop] = client
        return client

    def _redis_failed(self, exc: Exception) -> None:
        now = time.monotonic()
        # Don't make every request wait for a connect timeout while Redis is away.
        self._redis_down_until = now + REDIS_RETRY_AFTER_S
        if now - self._last_warning > 60:
            self._last_warning = now
            logger.warning("shared state: Redis unavailable, using per-process state: %s", exc)

    # -- async API (hot path) ----------------------------------------------------------------
    async def aget_many_cached(self, keys: tuple[str, ...], max_age: float) -> list[str | None]:
        """Like ``aget_many``, but reuses a read of the same keys younger than ``max_age``.

        The hot path reads the same cooldown keys for every request; with Redis, one read per
        ``max_age`` per process is enough. While one request refreshes an entry, others use the
        previous values. Writes made by this process clear the cache, so its own cooldowns apply
        at once; other processes' writes are seen within ``max_age``.
        """
        if not self.uses_redis or max_age <= 0:
            return await self.aget_many(list(keys))
        now = time.monotonic()
        entry = self._read_cache.get(keys)
        if entry is not None and (entry[0] > now or entry[2]):
            return entry[1]
        if entry is not None:
            self._read_cache[keys] = (entry[0], entry[1], True)
        try:
            values = await self.aget_many(list(keys))
        except BaseException:
            self._read_cache.pop(keys, None)
            raise
        if len(self._read_cache) > 10_000:
            self._read_cache.clear()
        self._read_cache[keys] = (now + max_age, values, False)
        return values

    async def aget_many(self, keys: list[str]) -> list[str | None]:
        if not self.uses_redis:
            return self.local.get_many(keys)
        try:
            values = await self._async().mget([KEY_PREFIX + k for k in keys])
            return [v.decode() if v is not None else None for v in values]
        except Exception as exc:  # noqa: BLE001 - any Redis failure degrades to local state
            self._redis_failed(exc)
            return self.local.get_many(keys)

    async def aget(self, key: str) -> str | None:
        return (await self.aget_many([key]))[0]

    async def aset(self, key: str, value: str, ttl: float | None = None) -> None:
        self._read_cache.clear()
        if not self.uses_redis:
            self.local.set(key, value, ttl)
            return
        try:
            await self._async().set(KEY_PREFIX + key, value, px=int(ttl * 1000) if ttl else None)
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)
            self.local.set(key, value, ttl)

    async def aadd(self, key: str, value: str, ttl: float) -> bool:
        """Set only if absent (a lock or a once-per-interval claim)."""
        self._read_cache.clear()
        if not self.uses_redis:
            return self.local.add(key, value, ttl)
        try:
            return bool(
                await self._async().set(KEY_PREFIX + key, value, px=int(ttl * 1000), nx=True)
            )
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)
            return self.local.add(key, value, ttl)

    async def aincr(self, key: str, ttl: float) -> int:
        """Increment a counter whose window starts with its first increment."""
        self._read_cache.clear()
        if not self.uses_redis:
            return self.local.incr(key, ttl)
        try:
            pipe = self._async().pipeline()
            pipe.incr(KEY_PREFIX + key)
            pipe.pexpire(KEY_PREFIX + key, int(ttl * 1000), nx=True)
            count, _ = await pipe.execute()
            return int(count)
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)
            return self.local.incr(key, ttl)

    async def adelete(self, *keys: str) -> None:
        self._read_cache.clear()
        if not self.uses_redis:
            self.local.delete(*keys)
            return
        try:
            await self._async().delete(*[KEY_PREFIX + k for k in keys])
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)
            self.local.delete(*keys)

    # -- sync API (admin, services, commands) ------------------------------------------------
    def get(self, key: str) -> str | None:
        if not self.uses_redis:
            return self.local.get_many([key])[0]
        try:
            value = self._sync().get(KEY_PREFIX + key)
            return value.decode() if value is not None else None
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)
            return self.local.get_many([key])[0]

    def set(self, key: str, value: str, ttl: float | None = None) -> None:
        if not self.uses_redis:
            self.local.set(key, value, ttl)
            return
        try:
            self._sync().set(KEY_PREFIX + key, value, px=int(ttl * 1000) if ttl else None)
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)
            self.local.set(key, value, ttl)

    def incr(self, key: str) -> int:
        """Increment a counter that never expires (used for config versions)."""
        if not self.uses_redis:
            return self.local.incr(key, ttl=10 * 365 * 86400)
        try:
            return int(self._sync().incr(KEY_PREFIX + key))
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)
            return self.local.incr(key, ttl=10 * 365 * 86400)

    def delete(self, *keys: str) -> None:
        if not self.uses_redis:
            self.local.delete(*keys)
            return
        try:
            self._sync().delete(*[KEY_PREFIX + k for k in keys])
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)
            self.local.delete(*keys)

    def clear(self) -> None:
        """Forget everything this gateway keeps here (tests use it between cases)."""
        self.local.clear()
        self._read_cache.clear()
        self._redis_down_until = 0.0
        if self.uses_redis:
            client = self._sync()
            keys = list(client.scan_iter(match=KEY_PREFIX + "*", count=1000))
            if keys:
                client.delete(*keys)


_state: SharedState | None = None
_state_lock = threading.Lock()


def shared_state() -> SharedState:
    """The process-wide shared state, created on first use from settings."""
    global _state
    if _state is None:
        with _state_lock:
            if _state is None:
                _state = SharedState(settings.REDIS_URL)
    return _state
