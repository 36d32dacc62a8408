"""Limits as operators run the gateway: several processes sharing one Redis enforce one limit,
a revoked key stops everywhere within a second, and Redis going away leaves limits in force."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest
from conftest import free_port
from django.conf import settings
from factories import sim_setup

from agents.models import Agent, ApiKey, Budget
from agents.services import api_key_create, api_key_revoke

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="shared limits need REDIS_URL")

# Production-like key caching: only the access version tells a process that a key changed.
CACHED_KEYS = {"GATEWAY_API_KEY_CACHE_S": "60", "GATEWAY_ACCESS_CHECK_INTERVAL_S": "0.5"}


def ask(url: str, key: str, **body: object) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/completion",
        json={"input": "Explain queues", **body},
        headers={"Authorization": f"Bearer {key}", "Cache-Control": "no-store"},
        timeout=20,
    )


def agent_key(name: str = "coder", **profile: object) -> str:
    Agent.objects.create(name=name, **profile)
    return api_key_create(agent_name=name)[1]


@needs_redis
def test_two_processes_enforce_one_rate_limit(start_gateway, simulator):
    sim_setup(simulator.url)
    key = agent_key(rpm_limit=6)
    _, url_a = start_gateway(**CACHED_KEYS)
    _, url_b = start_gateway(**CACHED_KEYS)
    statuses = [ask(url, key).status_code for url in [url_a, url_b] * 5]
    assert statuses.count(200) == 6 and statuses.count(429) == 4
    assert simulator.calls("sim-fast") == 6


@needs_redis
def test_two_processes_enforce_one_budget(start_gateway, simulator):
    sim_setup(simulator.url)
    simulator.configure("sim-large", words=400)
    key = agent_key("spender")
    agent = Agent.objects.get(name="spender")
    Budget.objects.create(scope="agent", agent=agent, limit_usd=Decimal("0.02"))
    _, url_a = start_gateway(**CACHED_KEYS)
    _, url_b = start_gateway(**CACHED_KEYS)
    results: list[int] = []

    def hammer(url: str) -> None:
        for _ in range(10):
            results.append(ask(url, key, model="large", max_tokens=300).status_code)

    threads = [threading.Thread(target=hammer, args=(url,)) for url in (url_a, url_b) * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    answered = results.count(200)
    assert answered + results.count(429) == 40 and results.count(429) > 0
    # Each answer costs 300 * $15/M + its prompt: about $0.0045; the cap holds across processes.
    assert answered * Decimal("0.0045") <= Decimal("0.02")
    assert simulator.calls("sim-large") == answered


@needs_redis
def test_a_key_revoked_while_traffic_runs_stops_on_every_process_within_a_second(
    start_gateway, simulator
):
    sim_setup(simulator.url)
    key = agent_key()
    _, url_a = start_gateway(**CACHED_KEYS)
    _, url_b = start_gateway(**CACHED_KEYS)
    stop = threading.Event()
    last_ok: dict[str, float] = {}
    first_refused: dict[str, float] = {}

    def traffic(url: str) -> None:
        while not stop.is_set():
            status = ask(url, key).status_code
            now = time.monotonic()
            if status == 200:
                last_ok[url] = now
            elif status == 401:
                first_refused.setdefault(url, now)

    threads = [threading.Thread(target=traffic, args=(url,)) for url in (url_a, url_b)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    assert set(last_ok) == {url_a, url_b}
    revoked_at = time.monotonic()
    api_key_revoke(key=ApiKey.objects.get(agent__name="coder"))
    time.sleep(1.5)
    stop.set()
    for thread in threads:
        thread.join()
    for url in (url_a, url_b):
        assert url in first_refused, f"{url} still accepts the revoked key"
        assert first_refused[url] - revoked_at <= 1.0
        assert last_ok[url] - revoked_at <= 1.0


@pytest.fixture
def private_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Redis of the test's own, so it can be stopped mid-run."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    import redis

    client = redis.Redis(port=port)
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0", process
    if process.poll() is None:
        process.kill()
        process.wait()


@needs_redis
def test_redis_stopped_mid_run_keeps_serving_with_conservative_limits(
    start_gateway, simulator, private_redis
):
    """With Redis gone, each of two processes allows half of the limit on its own: traffic is
    served, and the two together never pass the limit."""
    sim_setup(simulator.url)
    redis_url, redis_process = private_redis
    key = agent_key(rpm_limit=8)
    env = {**CACHED_KEYS, "REDIS_URL": redis_url, "GATEWAY_FALLBACK_PROCESSES": "2"}
    _, url_a = start_gateway(**env)
    _, url_b = start_gateway(**env)
    assert [ask(url, key).status_code for url in (url_a, url_b)] == [200, 200]
    redis_process.kill()
    redis_process.wait()
    statuses = {url: [ask(url, key).status_code for _ in range(8)] for url in (url_a, url_b)}
    for url, seen in statuses.items():
        assert set(seen) <= {200, 429}, seen  # no errors: served on per-process state
        assert seen.count(200) == 4, (url, seen)  # half of 8 each, counted afresh
    assert sum(s.count(200) for s in statuses.values()) <= 8
