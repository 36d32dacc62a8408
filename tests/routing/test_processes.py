"""Gateway processes as operators run them: graceful shutdown, and several processes sharing Redis."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from factories import new_api_key, sim_setup

from routing.config import routing_config_changed
from routing.models import AuditRecord

ROOT = Path(__file__).resolve().parents[2]

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="shared state needs REDIS_URL")


def ask(url: str, key: str) -> dict[str, Any]:
    response = httpx.post(
        f"{url}/v1/completion", json={"input": "hi"}, headers={"Authorization": f"Bearer {key}"},
        timeout=20,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def test_graceful_shutdown_writes_every_queued_record(start_gateway, simulator):
    """SIGTERM flushes the audit queue: every answered request has its record."""
    sim_setup(simulator.url)
    key = new_api_key()
    process, url = start_gateway(
        GATEWAY_AUDIT_FLUSH_INTERVAL_S="3600", GATEWAY_AUDIT_BATCH_SIZE="100000"
    )
    ids = {ask(url, key)["id"] for _ in range(25)}
    assert AuditRecord.objects.filter(request_id__in=ids).count() == 0  # still queued
    process.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert AuditRecord.objects.filter(request_id__in=ids).count() == 25


@needs_redis
def test_cooldown_tripped_in_one_process_is_seen_by_another(start_gateway, simulator):
    """With Redis, a deployment cooled down by process A is skipped by process B without a call."""
    sim_setup(simulator.url)
    key = new_api_key()
    _, url_a = start_gateway()
    _, url_b = start_gateway()
    simulator.configure("sim-fast", status=503)
    ask(url_a, key)
    ask(url_a, key)  # the third failure cools sim-fast down
    calls = simulator.calls("sim-fast")
    answer = ask(url_b, key)
    assert answer["model"] == "sim-medium"
    assert answer["attempts"][0]["outcome"] == "skipped"
    assert simulator.calls("sim-fast") == calls


def test_config_change_reaches_every_process(start_gateway, simulator):
    """A config change made anywhere is used by every process on its next request: through Redis,
    or on the embedded defaults through the version file every process on the host reads."""
    from providers.models import ModelDeployment

    sim_setup(simulator.url)
    key = new_api_key()
    _, url_a = start_gateway()
    _, url_b = start_gateway()
    assert ask(url_a, key)["model"] == ask(url_b, key)["model"] == "sim-fast"
    ModelDeployment.objects.filter(public_name="sim-fast").update(enabled=False)
    routing_config_changed()
    time.sleep(0.05)
    assert ask(url_a, key)["model"] == ask(url_b, key)["model"] == "sim-medium"
