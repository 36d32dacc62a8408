"""The shared hot-path state: expiry, counters, and the fail mode when Redis is unreachable."""

from __future__ import annotations

import asyncio

import pytest
from django.conf import settings

from gateway_project.shared_state import REFUSED, Counter, LocalState, SharedState


def test_local_state_expires_keys():
    """Keys set with a TTL disappear after it; counters keep the window of their first hit."""
    state = LocalState()
    state.set("a", "1", ttl=0.05)
    assert state.get_many(["a"]) == ["1"]
    assert state.incr("n", ttl=10) == 1 and state.incr("n", ttl=10) == 2
    asyncio.run(asyncio.sleep(0.06))
    assert state.get_many(["a"]) == [None]
    assert state.add("lock", "x", ttl=10) and not state.add("lock", "y", ttl=10)


async def test_unreachable_redis_degrades_to_process_state():
    """With Redis down, every call still works, on this process's own state."""
    state = SharedState("redis://127.0.0.1:1/0")
    await state.aset("cool:d:1", "1", 30)
    assert await state.aget_many(["cool:d:1", "missing"]) == ["1", None]
    assert await state.aincr("fail:d:1", 30) == 1
    assert await state.aadd("claim", "1", 5) is True
    state.incr("routing:config_version")
    assert state.get("routing:config_version") == "1"


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL")
async def test_redis_state_is_shared_between_clients():
    """Two SharedState objects on one Redis (two processes, in effect) see each other's writes."""
    one, two = SharedState(settings.REDIS_URL), SharedState(settings.REDIS_URL)
    try:
        await one.aset("test:shared", "yes", 5)
        assert await two.aget("test:shared") == "yes"
        assert await one.aincr("test:count", 5) == 1 and await two.aincr("test:count", 5) == 2
    finally:
        await one.adelete("test:shared", "test:count")


async def test_failed_redis_is_not_retried_on_every_call(monkeypatch):
    """After a Redis failure the state stays local for a few seconds instead of timing out per call."""
    state = SharedState("redis://127.0.0.1:1/0")
    await state.aset("k", "v", 30)
    assert not state.uses_redis
    calls = []
    monkeypatch.setattr(state, "_async", lambda: calls.append(1))
    assert await state.aget("k") == "v"
    assert calls == []


@pytest.mark.parametrize("backend", ["local", "redis"])
async def test_a_sliding_window_does_not_open_up_when_a_minute_turns(backend):
    """Two requests of the last minute at a limit of 2 still hold the third back just after the
    minute turned (the previous window's weighted count is rounded up, never down)."""
    if backend == "redis" and not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL")
    state = SharedState(settings.REDIS_URL if backend == "redis" else "")
    await state.adelete("test:rpm:1", "test:rpm:0")
    try:
        assert await state.aadjust([("test:rpm:0", 2, 60)]) == [2]
        counter = Counter(
            key="test:rpm:1", amount=1, limit=2, ttl=60, previous_key="test:rpm:0", weight=0.99
        )
        refused = await state.aadmit([counter])
        assert (refused.status, refused.used) == (REFUSED, [2])
    finally:
        await state.adelete("test:rpm:1", "test:rpm:0")
