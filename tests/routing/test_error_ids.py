"""Errors a request meets after its id is assigned carry that id (``error.id`` and the header
``X-Gateway-Request-Id``), and the audit record of the failed call exists under it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.conf import settings
from factories import sim_setup

from agents.models import Agent
from agents.services import api_key_create
from gateway_project.api_errors import ERROR_TYPES
from routing.models import AuditRecord


@pytest.fixture
def sim(gateway, simulator):
    sim_setup(simulator.url)
    return simulator


def agent_key(name: str = "coder", **profile: Any) -> str:
    Agent.objects.create(name=name, **profile)
    return api_key_create(agent_name=name)[1]


@pytest.fixture
def short_deadline() -> Iterator[None]:
    previous = settings.GATEWAY["REQUEST_DEADLINE_S"]
    settings.GATEWAY["REQUEST_DEADLINE_S"] = 0.5
    yield
    settings.GATEWAY["REQUEST_DEADLINE_S"] = previous


def post(gateway, path: str, key: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}{path}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=20
    )


NATIVE = ("/v1/completion", {"input": "Explain queues", "model": "sim-fast"})
CHAT = (
    "/v1/chat/completions",
    {"model": "sim-fast", "messages": [{"role": "user", "content": "hi"}]},
)
STREAM = ("/v1/chat/completions", {**CHAT[1], "stream": True})


def assert_error_with_id(response: httpx.Response, status: int, code: str) -> str:
    """The error's status, type and code, and the id in body and header (the same one)."""
    assert response.status_code == status, response.text[:300]
    error = response.json()["error"]
    assert error["code"] == code and error["type"] == ERROR_TYPES[status], error
    request_id: str = error["id"]
    assert request_id.startswith("call-")
    assert response.headers["X-Gateway-Request-Id"] == request_id
    return request_id


def audited(gateway, request_id: str) -> AuditRecord:
    gateway.flush_audit()
    return AuditRecord.objects.get(request_id=request_id)


@pytest.mark.parametrize(("path", "body"), [NATIVE, CHAT, STREAM], ids=["native", "chat", "stream"])
def test_a_502_carries_the_request_id_of_its_audit_record(gateway, sim, path, body):
    """Every attempt failing upstream: 502 with the request id, whose audit record says 502."""
    for model in ("sim-fast", "sim-medium", "sim-large", "sim-external"):
        sim.configure(model, status=500)
    key = agent_key()
    request_id = assert_error_with_id(post(gateway, path, key, body), 502, "all_providers_failed")
    record = audited(gateway, request_id)
    assert (record.status, record.http_status, record.agent) == ("failed", 502, "coder")
    assert record.attempts and record.attempts[0]["status_code"] == 500


@pytest.mark.parametrize(("path", "body"), [NATIVE, CHAT], ids=["native", "chat"])
def test_a_504_carries_the_request_id_of_its_audit_record(gateway, sim, short_deadline, path, body):
    """An upstream slower than the request's deadline: 504 with the id of the failed call's record."""
    sim.configure("sim-fast", latency_ms=3000)
    key = agent_key()
    response = post(gateway, path, key, body)
    request_id = assert_error_with_id(response, 504, response.json()["error"]["code"])
    record = audited(gateway, request_id)
    assert (record.status, record.http_status) == ("failed", 504)


def test_403_and_429_carry_the_request_id(gateway, sim):
    """A model the agent may not use (403) and a request over its RPM limit (429) both name the
    request, and both requests are audited under that id."""
    key = agent_key(allowed_models=["sim-medium"], rpm_limit=1)
    forbidden = assert_error_with_id(post(gateway, NATIVE[0], key, NATIVE[1]), 403, "not_allowed")
    assert post(gateway, "/v1/completion", key, {"input": "hi", "model": "sim-medium"}).is_success
    limited = assert_error_with_id(
        post(gateway, "/v1/completion", key, {"input": "hi", "model": "sim-medium"}),
        429,
        "rate_limit_requests",
    )
    assert audited(gateway, forbidden).http_status == 403
    assert audited(gateway, limited).http_status == 429


@pytest.mark.parametrize(("path", "body"), [NATIVE, CHAT, STREAM], ids=["native", "chat", "stream"])
def test_an_unknown_model_names_the_request(gateway, sim, path, body):
    """404 model_not_found comes after the id is assigned, so it carries one too."""
    key = agent_key()
    assert_error_with_id(
        post(gateway, path, key, {**body, "model": "nope"}), 404, "model_not_found"
    )


def test_errors_before_an_id_carry_none(gateway, sim):
    """A request refused before it has an id (no key, a bad body) has no id to give."""
    response = httpx.post(f"{gateway.url}/v1/completion", content=b"{")
    assert response.status_code == 401 and "id" not in response.json()["error"]
    key = agent_key()
    response = post(gateway, "/v1/completion", key, {"input": 5})
    assert response.status_code == 400 and "id" not in response.json()["error"]
    assert "X-Gateway-Request-Id" not in response.headers


def test_a_503_carries_the_request_id_of_its_audit_record(gateway, sim):
    """No enabled model to route to: 503 with the id of the failed call's audit record."""
    from providers.models import ModelDeployment
    from routing.config import routing_config_changed

    ModelDeployment.objects.update(enabled=False)
    routing_config_changed()
    key = agent_key()
    request_id = assert_error_with_id(
        post(gateway, "/v1/completion", key, {"input": "hi"}), 503, "no_route"
    )
    assert audited(gateway, request_id).http_status == 503
