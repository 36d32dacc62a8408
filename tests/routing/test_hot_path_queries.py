"""The hot path asks the database nothing (docs/adr/0006-config-caching.md): once the caches are
warm (the routing snapshot, the caller, its budget counter), POST /v1/completion and
POST /v1/chat/completions, whole and streamed, make no query in any thread of the gateway; only
the audit writer's own thread writes, in batches.

Every cursor of every thread is watched: Django's cursor wrapper is patched for the test's
duration, in this process, where the live gateway (tests/conftest.py) serves on loopback."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import httpx
import pytest
from django.db.backends.utils import CursorWrapper
from factories import sim_setup

from agents.models import Agent, Budget
from agents.selectors import forget_cached_keys
from agents.services import api_key_create

AUDIT_WRITER_THREAD = "audit-writer"  # routing/audit.py: the writer's own executor
REQUESTS_PER_KIND = 5


class QueryLog:
    """The SQL each thread sent, while recording."""

    def __init__(self) -> None:
        self.queries: list[tuple[str, str]] = []
        self.recording = False
        self._lock = threading.Lock()

    def seen(self, sql: Any) -> None:
        if self.recording:
            with self._lock:
                self.queries.append((threading.current_thread().name, str(sql)[:200]))

    def outside(self, thread_prefix: str) -> list[tuple[str, str]]:
        return [q for q in self.queries if not q[0].startswith(thread_prefix)]


@pytest.fixture
def query_log(monkeypatch: pytest.MonkeyPatch) -> QueryLog:
    """Every query of every thread of this process (the debug cursor calls these too)."""
    log = QueryLog()
    execute, executemany = CursorWrapper.execute, CursorWrapper.executemany

    def logged_execute(cursor: CursorWrapper, sql: Any, params: Any = None) -> Any:
        log.seen(sql)
        return execute(cursor, sql, params)

    def logged_executemany(cursor: CursorWrapper, sql: Any, param_list: Any) -> Any:
        log.seen(sql)
        return executemany(cursor, sql, param_list)

    monkeypatch.setattr(CursorWrapper, "execute", logged_execute)
    monkeypatch.setattr(CursorWrapper, "executemany", logged_executemany)
    return log


@pytest.fixture
def client(gateway, simulator, settings):
    """An agent as users run them: rate limits, a daily budget, and the production key cache."""
    settings.GATEWAY = {**settings.GATEWAY, "API_KEY_CACHE_S": 60}
    sim_setup(simulator.url)
    Agent.objects.create(name="coder", rpm_limit=10_000, tpm_limit=10_000_000)
    Budget.objects.update_or_create(
        scope=Budget.Scope.GLOBAL, period=Budget.Period.DAY, defaults={"limit_usd": Decimal("10")}
    )
    _, key = api_key_create(agent_name="coder")
    with httpx.Client(
        base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}, timeout=20
    ) as c:
        yield c


def _requests(client: httpx.Client) -> list[int]:
    """One of each hot-path request; the status of each (a stream read to its end)."""
    statuses = [
        client.post(
            "/v1/completion",
            json={"caller": "me", "task_type": "analysis", "input": "Explain queues"},
        ).status_code,
        client.post(
            "/v1/chat/completions",
            json={"model": "auto", "messages": [{"role": "user", "content": "Explain queues"}]},
            headers={"X-Task-Type": "analysis"},
        ).status_code,
    ]
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": "fast",
            "stream": True,
            "messages": [{"role": "user", "content": "Explain queues"}],
        },
    ) as stream:
        body = b"".join(stream.iter_bytes())
        statuses.append(stream.status_code if body.endswith(b"data: [DONE]\n\n") else 0)
    return statuses


def test_warm_requests_make_no_query_outside_the_audit_writer(client, gateway, query_log):
    """With warm caches, completions (native, OpenAI-compatible, streamed) query nothing on
    the request path; the audit writer's batches are the only queries, in its own thread."""
    for _ in range(2):  # warm up: snapshot, caller, budget counter, validators
        assert _requests(client) == [200, 200, 200]
    gateway.flush_audit()

    query_log.recording = True
    for _ in range(REQUESTS_PER_KIND):
        assert _requests(client) == [200, 200, 200]
    gateway.flush_audit()
    query_log.recording = False

    assert query_log.outside(AUDIT_WRITER_THREAD) == []
    # The watch sees other threads: the audit writer's inserts of these requests are there.
    assert any("INSERT" in sql.upper() for _, sql in query_log.queries)


def test_a_cold_cache_is_seen(client, gateway, query_log):
    """The watch is real: the first request after the key cache is dropped reads the key from
    the database, in a worker thread of the gateway."""
    assert _requests(client) == [200, 200, 200]
    gateway.flush_audit()
    query_log.recording = True
    forget_cached_keys()
    assert _requests(client) == [200, 200, 200]
    query_log.recording = False
    read = query_log.outside(AUDIT_WRITER_THREAD)
    assert read and any("api_key" in sql.lower() for _, sql in read)
