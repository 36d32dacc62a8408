"""/health, /health/ready and /metrics, over real HTTP."""

from __future__ import annotations

import httpx
import pytest
from factories import new_api_key, sim_setup

from providers.health import probe_providers
from routing.config import providers_to_probe


@pytest.fixture
def setup(gateway, simulator):
    return sim_setup(simulator.url)


def test_health_reports_ollama_queue_and_models(gateway, setup):
    """The seeds' shape: status, ollama, queue, plus every model with its availability."""
    gateway.run_in_loop(probe_providers(providers_to_probe))
    body = httpx.get(f"{gateway.url}/health").json()
    assert body["status"] == "ok"
    assert body["ollama"]["status"] == "up"
    assert body["ollama"]["models"] == ["sim-fast"]
    assert "audit_pending" in body["queue"]
    assert body["audit"]["status"] == "ok" and body["audit"]["dead_letters"] == 0
    assert {m["name"]: m["status"] for m in body["models"]} == {
        "sim-fast": "available",
        "sim-medium": "available",
        "sim-large": "available",
        "sim-external": "available",
    }
    assert {p["name"]: p["status"] for p in body["providers"]}["sim-anthropic"] == "up"


def test_health_needs_no_upstream_call(gateway, setup, simulator):
    """Probing /health repeatedly never calls an upstream."""
    for _ in range(5):
        assert httpx.get(f"{gateway.url}/health").status_code == 200
    assert sum(simulator.stats()["by_protocol"].values()) == 0


def test_a_provider_failing_its_health_checks_is_routed_around(gateway, setup):
    """A provider down for three checks shows as down and its models are skipped without a
    request (tests/providers/test_health.py has the rest of the policy)."""
    from providers.models import Provider
    from routing.config import routing_config_changed

    Provider.objects.filter(name="sim-ollama").update(base_url="http://127.0.0.1:9")
    routing_config_changed()
    for _ in range(3):
        gateway.run_in_loop(probe_providers(providers_to_probe))
    body = httpx.get(f"{gateway.url}/health").json()
    assert body["ollama"]["status"] == "down"
    models = {m["name"]: m["status"] for m in body["models"]}
    assert models["sim-fast"] == "unavailable"
    key = new_api_key()
    answer = httpx.post(
        f"{gateway.url}/v1/completion",
        json={"input": "x"},
        headers={"Authorization": f"Bearer {key}"},
    ).json()
    assert answer["model"] == "sim-medium"
    assert answer["attempts"][0] == {
        "provider": "sim-ollama", "model": "sim-fast", "tier": "fast", "outcome": "skipped",
        "latency_ms": 0, "detail": "provider failed its last 3 health checks",
    }  # fmt: skip


def test_ready_checks_database_and_cache(gateway):
    """/health/ready answers 200 when the database and the cache work and the audit writer
    keeps up."""
    response = httpx.get(f"{gateway.url}/health/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "cache": "ok", "audit": "ok"},
    }


def test_metrics_count_requests_and_attempts(gateway, setup):
    """/metrics exports the gateway's counters in the Prometheus format."""
    key = new_api_key()
    httpx.post(
        f"{gateway.url}/v1/completion",
        json={"input": "x"},
        headers={"Authorization": f"Bearer {key}"},
    )
    text = httpx.get(f"{gateway.url}/metrics").text
    assert 'gateway_requests_total{endpoint="completion",status="' in text
    assert "gateway_gate_status_total{" in text
    assert 'gateway_upstream_attempts_total{outcome="ok",provider="sim-ollama"}' in text
    assert "gateway_request_latency_seconds_bucket" in text
