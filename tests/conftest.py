"""Shared fixtures: the upstream simulator and the gateway, both served for real on loopback."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up within {timeout}s")


def pytest_configure(config: pytest.Config) -> None:
    import os

    backend = "PostgreSQL" if os.environ.get("DATABASE_URL") else "SQLite"
    cache = "Redis" if os.environ.get("REDIS_URL") else "in-process cache"
    print(f"\n[llm-gateway tests] database: {backend}; shared state: {cache}")


@pytest.fixture(autouse=True, scope="session")
def _test_tunables() -> None:
    """Fast flushes and short backoffs, and no background health probes unless a test asks."""
    settings.GATEWAY.update(
        {
            "AUDIT_FLUSH_INTERVAL_S": 0.05,
            "BACKOFF_BASE_S": 0.01,
            "BACKOFF_CAP_S": 0.05,
            "HEALTH_CHECK_INTERVAL_S": 0,
            "CONFIG_CHECK_INTERVAL_S": 0,
            "API_KEY_CACHE_S": 0,
            # Routing must be deterministic in tests; the exploration test turns it on.
            "EXPLORATION": False,
            # Tests repeat identical requests and count upstream calls; the cache tests turn it on.
            "CACHE_ENABLED": False,
        }
    )


# --- the upstream simulator -----------------------------------------------------------------


@dataclass
class Simulator:
    url: str

    def configure(self, model: str, **knobs: Any) -> None:
        httpx.put(f"{self.url}/_sim/models/{model}", json=knobs).raise_for_status()

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{self.url}/_sim/stats").json()
        return data

    def calls(self, model: str) -> int:
        return int(self.stats()["calls"].get(model, 0))


@pytest.fixture(scope="session")
def simulator_url() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/_sim/health")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def simulator(simulator_url: str) -> Simulator:
    httpx.post(f"{simulator_url}/_sim/reset").raise_for_status()
    return Simulator(simulator_url)


# --- the gateway, served by uvicorn in a thread of this process ---------------------------


class GatewayServer:
    def __init__(self) -> None:
        from gateway_project.asgi import application

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            application, host="127.0.0.1", port=self.port, lifespan="on", log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve())

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def run_in_loop(self, coroutine: Any, timeout: float = 10.0) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def flush_audit(self) -> None:
        from routing.audit import audit_writer

        self.run_in_loop(audit_writer.flush())


@pytest.fixture(scope="session")
def gateway_server(django_db_setup: None, django_db_blocker: Any) -> Iterator[GatewayServer]:
    server = GatewayServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True, scope="session")
def _end_worker_thread_connections(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """Worker threads (the server's, sync_to_async's) keep persistent connections; end them before
    the test database is dropped."""
    yield
    with django_db_blocker.unblock():
        _close_server_connections()


def _close_server_connections() -> None:
    """The server's worker threads keep persistent connections; end them so the test database
    can be dropped."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


def reset_gateway_state() -> None:
    from agents.selectors import forget_cached_keys
    from gateway_project.shared_state import shared_state
    from routing import router
    from routing.config import snapshot_cache

    shared_state().clear()
    snapshot_cache.clear()
    router.reset_process_state()
    forget_cached_keys()


@pytest.fixture
def gateway(
    gateway_server: GatewayServer, transactional_db: None, simulator: Simulator
) -> Iterator[GatewayServer]:
    """The live gateway with a clean database and state; audit rows are flushed at the end."""
    reset_gateway_state()
    yield gateway_server
    gateway_server.flush_audit()
    reset_gateway_state()


# --- gateway processes, as operators run them ----------------------------------------------


def test_database_url() -> str:
    """A DATABASE_URL naming the test database this session created."""
    from django.db import connection

    name = connection.settings_dict["NAME"]
    if connection.vendor == "sqlite":
        return f"sqlite:///{name}"
    user = connection.settings_dict.get("USER") or "postgres"
    host = connection.settings_dict.get("HOST") or "127.0.0.1"
    port = connection.settings_dict.get("PORT") or 5432
    return f"postgres://{user}@{host}:{port}/{name}"


test_database_url.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@pytest.fixture
def start_gateway(gateway) -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], str]]]:
    """Start gateway processes (uvicorn, as in production) on the test database."""
    started: list[subprocess.Popen[bytes]] = []

    def start(**extra_env: str) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "GATEWAY_HEALTH_CHECK_INTERVAL_S": "0",
            "GATEWAY_CONFIG_CHECK_INTERVAL_S": "0",
            "GATEWAY_API_KEY_CACHE_S": "0",
            "GATEWAY_BACKOFF_BASE_S": "0.01",
            "GATEWAY_CACHE_ENABLED": "0",  # as in this process (conftest); a test may turn it on
            "GATEWAY_EXPLORATION": "0",  # deterministic routing, as in this process
            "LOG_LEVEL": "WARNING",
            **extra_env,
        }
        if settings.REDIS_URL and "REDIS_URL" not in extra_env:
            env["REDIS_URL"] = settings.REDIS_URL
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "gateway_project.asgi:application",
             "--host", "127.0.0.1", "--port", str(port), "--lifespan", "on", "--no-access-log"],
            cwd=ROOT, env=env,
        )  # fmt: skip
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/health/ready", timeout=30)
        return process, url

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()
