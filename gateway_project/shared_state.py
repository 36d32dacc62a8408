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
import math
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from .state_keys import SHARED_STATE_NAMESPACE

logger = logging.getLogger(__name__)

REDIS_RETRY_AFTER_S = 5.0

ADMITTED, REFUSED, MISSING = "admitted", "refused", "missing"


@dataclass(frozen=True, slots=True)
class Counter:
    """One limited counter of an admission: ``amount`` is added to ``key`` if, for every counter,
    its use plus the amount stays within ``limit``. The use is the key's value plus ``weight``
    times ``previous_key``'s (a sliding window over two fixed ones). A ``strict`` counter must
    exist (a budget counter is loaded from the database first)."""

    key: str
    amount: int
    limit: int
    ttl: float
    previous_key: str = ""
    weight: float = 0.0
    strict: bool = False
    # Also added to when admitted: a budget's outstanding reservations (docs/adr/0012).
    held_key: str = ""


@dataclass(frozen=True, slots=True)
class Admission:
    """``status``: admitted (``used`` holds each counter's use after the addition), refused
    (``index`` names the counter over its limit, ``used[0]`` its use, ``held`` the value of its
    ``held_key``) or missing (``index`` names a strict counter that does not exist)."""

    status: str
    index: int
    used: list[int]
    held: int = 0


# KEYS: per counter, its key, its previous window's key and its held key. ARGV: per counter,
# amount, limit, weight, ttl in ms, strict (1/0), held (1/0: the held key is added to as well).
# Returns {status, index, use...}: 1 admitted, 0 refused (then {0, index, use, held}), -1 missing.
_ADMIT_LUA = """
local n = #KEYS / 3
local used = {}
for i = 1, n do
  local k = (i - 1) * 3
  local b = (i - 1) * 6
  local amount = tonumber(ARGV[b + 1])
  local limit = tonumber(ARGV[b + 2])
  local weight = tonumber(ARGV[b + 3])
  local current = redis.call('GET', KEYS[k + 1])
  if current == false then
    if ARGV[b + 5] == '1' then return {-1, i - 1} end
    current = 0
  else
    current = tonumber(current)
  end
  if weight > 0 then
    -- Rounded up: a request of the previous window that still overlaps counts whole, so the
    -- limit never opens up at a window's start.
    current = current + math.ceil(tonumber(redis.call('GET', KEYS[k + 2]) or '0') * weight)
  end
  if current + amount > limit then
    local held = 0
    if ARGV[b + 6] == '1' then held = tonumber(redis.call('GET', KEYS[k + 3]) or '0') end
    return {0, i - 1, current, held}
  end
  used[i] = current + amount
end
local result = {1, -1}
for i = 1, n do
  local k = (i - 1) * 3
  local b = (i - 1) * 6
  redis.call('INCRBY', KEYS[k + 1], ARGV[b + 1])
  redis.call('PEXPIRE', KEYS[k + 1], ARGV[b + 4])
  if ARGV[b + 6] == '1' then
    redis.call('INCRBY', KEYS[k + 3], ARGV[b + 1])
    redis.call('PEXPIRE', KEYS[k + 3], ARGV[b + 4])
  end
  result[i + 2] = used[i]
end
return result
"""


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

    def admit(self, items: list[Counter], *, divisor: int = 1) -> Admission:
        """Check every counter against its limit and, only if all pass, add to each (atomic).
        ``divisor`` shares the non-strict limits between processes (Redis is down)."""
        now = time.monotonic()
        with self._lock:
            used = []
            for index, item in enumerate(items):
                current = self._live(item.key, now)
                if current is None and item.strict:
                    return Admission(status=MISSING, index=index, used=[])
                total = int(current or 0)
                if item.weight > 0:
                    # Rounded up, as in the Lua script: the limit never opens up.
                    previous = int(self._live(item.previous_key, now) or 0)
                    total += math.ceil(previous * item.weight)
                limit = item.limit if item.strict else max(1, item.limit // divisor)
                if total + item.amount > limit:
                    held = int(self._live(item.held_key, now) or 0) if item.held_key else 0
                    return Admission(status=REFUSED, index=index, used=[total], held=held)
                used.append(total + item.amount)
            for item in items:
                self._add(item.key, item.amount, item.ttl, now)
                if item.held_key:
                    self._add(item.held_key, item.amount, item.ttl, now)
            return Admission(status=ADMITTED, index=-1, used=used)

    def adjust(self, deltas: list[tuple[str, int, float]]) -> list[int]:
        """Add ``delta`` to each key (counters created as needed); returns the new values."""
        now = time.monotonic()
        with self._lock:
            return [self._add(key, delta, ttl, now) for key, delta, ttl in deltas]

    def _add(self, key: str, delta: int, ttl: float, now: float) -> int:
        value = int(self._live(key, now) or 0) + delta
        self._data[key] = (str(value), now + ttl)
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


class LocalValues:
    """Larger values (cached answers) with expiry, bounded in size: the oldest entries go first.

    Sizes are counted in characters of key and value, close enough to bytes for a memory bound.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._data: dict[str, tuple[str, float]] = {}  # insertion order: the oldest first
        self._bytes = 0
        self._lock = threading.Lock()

    def _pop(self, key: str) -> bool:
        item = self._data.pop(key, None)
        if item is None:
            return False
        self._bytes -= len(key) + len(item[0])
        return True

    def get(self, key: str) -> str | None:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            if item[1] <= time.monotonic():
                self._pop(key)
                return None
            return item[0]

    def set(self, key: str, value: str, ttl: float) -> None:
        size = len(key) + len(value)
        with self._lock:
            self._pop(key)
            if size > self.max_bytes:
                return
            self._data[key] = (value, time.monotonic() + ttl)
            self._bytes += size
            while self._bytes > self.max_bytes:
                self._pop(next(iter(self._data)))

    def delete(self, *keys: str) -> int:
        with self._lock:
            return sum(self._pop(key) for key in keys)

    def delete_prefix(self, prefix: str) -> int:
        with self._lock:
            return sum(self._pop(key) for key in [k for k in self._data if k.startswith(prefix)])

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0


class SharedState:
    """Redis-backed when configured, with the local store as the fallback when Redis fails."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.local = LocalState()
        # Larger values (the response cache) when Redis is not used: bounded, never read-cached.
        self.local_values = LocalValues(settings.GATEWAY["CACHE_LOCAL_MAX_BYTES"])
        self._last_refusal_warning = 0.0
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
            # Imported on first use: the embedded defaults (no REDIS_URL) never load the client.
            import redis

            self._sync_client = redis.Redis.from_url(
                self.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
            )
        return self._sync_client

    def _async(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            # Imported on first use, as in _sync.
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

    def _fallback_divisor(self) -> int:
        """1 on the embedded defaults; with Redis configured but down, the number of processes
        that now each keep their own counters."""
        if not self.redis_url:
            return 1
        return max(1, int(settings.GATEWAY["FALLBACK_PROCESSES"]))

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
            values = await self._async().mget([SHARED_STATE_NAMESPACE + k for k in keys])
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
            await self._async().set(
                SHARED_STATE_NAMESPACE + key, value, px=int(ttl * 1000) if ttl else None
            )
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
                await self._async().set(
                    SHARED_STATE_NAMESPACE + key, value, px=int(ttl * 1000), nx=True
                )
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
            pipe.incr(SHARED_STATE_NAMESPACE + key)
            pipe.pexpire(SHARED_STATE_NAMESPACE + key, int(ttl * 1000), nx=True)
            count, _ = await pipe.execute()
            return int(count)
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)
            return self.local.incr(key, ttl)

    async def aadmit(self, items: list[Counter]) -> Admission:
        """All counters within their limits, then added to, in one atomic step (a Lua script on
        Redis): concurrent requests on any number of processes cannot all pass the same check."""
        self._read_cache.clear()
        if not items:
            return Admission(status=ADMITTED, index=-1, used=[])
        if not self.uses_redis:
            return self.local.admit(items, divisor=self._fallback_divisor())
        keys, args = [], []
        for item in items:
            keys += [
                SHARED_STATE_NAMESPACE + item.key,
                SHARED_STATE_NAMESPACE + (item.previous_key or item.key),
                SHARED_STATE_NAMESPACE + (item.held_key or item.key),
            ]
            args += [
                item.amount,
                item.limit,
                item.weight,
                int(item.ttl * 1000),
                int(item.strict),
                int(bool(item.held_key)),
            ]
        try:
            client = self._async()
            result = await client.eval(_ADMIT_LUA, len(keys), *keys, *args)
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)
            return self.local.admit(items, divisor=self._fallback_divisor())
        code, index, *used = (int(v) for v in result)
        if code == 0:
            return Admission(status=REFUSED, index=index, used=used[:1], held=used[1])
        status = {1: ADMITTED, -1: MISSING}[code]
        return Admission(status=status, index=index, used=used)

    async def aadjust(self, deltas: list[tuple[str, int, float]]) -> list[int]:
        """Add to counters (key, delta, ttl) and return their new values: settles a reservation.
        One atomic step (MULTI on Redis), so values read together are consistent: a budget's
        counter minus its held reservations is its settled spend."""
        self._read_cache.clear()
        if not deltas:
            return []
        if not self.uses_redis:
            return self.local.adjust(deltas)
        try:
            pipe = self._async().pipeline(transaction=True)
            for key, delta, ttl in deltas:
                pipe.incrby(SHARED_STATE_NAMESPACE + key, delta)
                pipe.pexpire(SHARED_STATE_NAMESPACE + key, int(ttl * 1000))
            results = await pipe.execute()
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)
            return self.local.adjust(deltas)
        return [int(value) for value in results[::2]]

    async def adelete(self, *keys: str) -> None:
        self._read_cache.clear()
        if not self.uses_redis:
            self.local.delete(*keys)
            return
        try:
            await self._async().delete(*[SHARED_STATE_NAMESPACE + k for k in keys])
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)
            self.local.delete(*keys)

    # -- larger values (the response cache) ----------------------------------------------------
    # Kept apart from the small keys above: without Redis they live in a size-bounded store, and
    # writing them leaves the read cache of the cooldown keys alone (they are never read through it).
    async def aget_value(self, key: str) -> str | None:
        if not self.uses_redis:
            return self.local_values.get(key)
        try:
            value = await self._async().get(SHARED_STATE_NAMESPACE + key)
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)
            return self.local_values.get(key)
        return value.decode() if value is not None else None

    async def aset_value(self, key: str, value: str, ttl: float) -> None:
        if not self.uses_redis:
            self.local_values.set(key, value, ttl)
            return
        try:
            await self._async().set(SHARED_STATE_NAMESPACE + key, value, px=max(1, int(ttl * 1000)))
        except Exception as exc:  # noqa: BLE001
            # Only reached with Redis configured: the client is loaded by then.
            import redis.exceptions

            if isinstance(exc, redis.exceptions.ResponseError):
                # Redis answered but refused (out of memory): drop this value, and don't treat
                # Redis as down for everything else (cooldowns, limits) because of it.
                now = time.monotonic()
                if now - self._last_refusal_warning > 60:
                    self._last_refusal_warning = now
                    logger.warning("shared state: Redis refused a cached value: %s", exc)
                return
            self._redis_failed(exc)
            self.local_values.set(key, value, ttl)

    def get_value(self, key: str) -> str | None:
        if not self.uses_redis:
            return self.local_values.get(key)
        try:
            value = self._sync().get(SHARED_STATE_NAMESPACE + key)
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)
            return self.local_values.get(key)
        return value.decode() if value is not None else None

    def delete_values(self, *keys: str) -> None:
        self.local_values.delete(*keys)
        if not self.uses_redis:
            return
        try:
            self._sync().delete(*[SHARED_STATE_NAMESPACE + k for k in keys])
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)

    def delete_values_matching(self, prefix: str) -> int:
        """Delete every value whose key starts with ``prefix``; returns how many (scans Redis:
        for admin actions, not the request path)."""
        deleted = self.local_values.delete_prefix(prefix)
        if not self.uses_redis:
            return deleted
        pattern = (
            SHARED_STATE_NAMESPACE + "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
        )
        try:
            client = self._sync()
            batch: list[bytes] = []
            for key in client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += int(client.delete(*batch))
                    batch = []
            if batch:
                deleted += int(client.delete(*batch))
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)
        return deleted

    # -- sync API (admin, services, commands) ------------------------------------------------
    def get(self, key: str) -> str | None:
        if not self.uses_redis:
            return self.local.get_many([key])[0]
        try:
            value = self._sync().get(SHARED_STATE_NAMESPACE + key)
            return value.decode() if value is not None else None
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)
            return self.local.get_many([key])[0]

    def set(self, key: str, value: str, ttl: float | None = None) -> None:
        if not self.uses_redis:
            self.local.set(key, value, ttl)
            return
        try:
            self._sync().set(
                SHARED_STATE_NAMESPACE + key, value, px=int(ttl * 1000) if ttl else None
            )
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)
            self.local.set(key, value, ttl)

    def incr(self, key: str) -> int:
        """Increment a counter that never expires (used for config versions)."""
        if not self.uses_redis:
            return self.local.incr(key, ttl=10 * 365 * 86400)
        try:
            return int(self._sync().incr(SHARED_STATE_NAMESPACE + key))
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)
            return self.local.incr(key, ttl=10 * 365 * 86400)

    def delete(self, *keys: str) -> None:
        if not self.uses_redis:
            self.local.delete(*keys)
            return
        try:
            self._sync().delete(*[SHARED_STATE_NAMESPACE + k for k in keys])
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)
            self.local.delete(*keys)

    def clear(self) -> None:
        """Forget everything this gateway keeps here (tests use it between cases)."""
        self.local.clear()
        self.local_values.clear()
        self._read_cache.clear()
        self._redis_down_until = 0.0
        if self.uses_redis:
            client = self._sync()
            keys = list(client.scan_iter(match=SHARED_STATE_NAMESPACE + "*", count=1000))
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
