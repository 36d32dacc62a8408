"""Every error status the API can return carries the ``type`` of that status, from one builder
(gateway_project/api_errors.py), whichever layer answers: the lean ASGI handler, the async views,
or the DRF review endpoint. Each status is produced for real over HTTP."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from django.conf import settings
from factories import new_api_key, queued_review_item, sim_setup

from agents.models import Agent
from agents.services import api_key_create
from gateway_project.api_errors import ERROR_TYPES
from providers.models import ModelDeployment
from reviews.services import reviewer_api_key_create
from routing.config import routing_config_changed

# The contract, written out: changing a type is a decision, not an accident.
EXPECTED_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "request_timeout",
    409: "conflict_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class Env:
    """What the scenarios need: the gateway, a key, a reviewer key and a decided-once item."""

    def __init__(self, gateway, simulator, monkeypatch) -> None:
        self.gateway = gateway
        self.simulator = simulator
        self.monkeypatch = monkeypatch
        self.key = new_api_key()
        self.reviewer = reviewer_api_key_create(username="rita")[1]

    def post(self, path: str, body: Any, key: str | None = None, **headers: str) -> httpx.Response:
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        headers = {
            "Authorization": f"Bearer {key or self.key}",
            "Content-Type": "application/json",
            **headers,
        }
        return httpx.post(f"{self.gateway.url}{path}", content=content, headers=headers, timeout=20)


def _408(env: Env) -> httpx.Response:
    url = urlsplit(env.gateway.url)
    env.monkeypatch.setitem(settings.GATEWAY, "BODY_READ_TIMEOUT_S", 0.3)
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall(b"POST /v1/completion HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return httpx.Response(int(head.split()[1]), content=body)


def _409(env: Env) -> httpx.Response:
    path = f"/v1/reviews/{queued_review_item()}/decision"
    assert env.post(path, {"decision": "approve"}, env.reviewer).status_code == 200
    return env.post(path, {"decision": "approve"}, env.reviewer)


def _500_view(env: Env) -> httpx.Response:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    env.monkeypatch.setattr("routing.api.views.classification_run", broken)
    return env.post("/v1/classify", {"input": "hi"})


def _500_handler(env: Env) -> httpx.Response:
    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("boom")

    env.monkeypatch.setattr("reviews.api.review_item_decide", broken)
    return env.post(
        f"/v1/reviews/{queued_review_item()}/decision", {"decision": "approve"}, env.reviewer
    )


def _429(env: Env) -> httpx.Response:
    Agent.objects.create(name="limited", rpm_limit=1)
    key = api_key_create(agent_name="limited")[1]
    assert env.post("/v1/completion", {"input": "hi"}, key).status_code == 200
    return env.post("/v1/completion", {"input": "hi"}, key)


def _502(env: Env) -> httpx.Response:
    for model in ("sim-fast", "sim-medium", "sim-large", "sim-external"):
        env.simulator.configure(model, status=500)
    return env.post("/v1/completion", {"input": "hi"})


def _503(env: Env) -> httpx.Response:
    ModelDeployment.objects.update(enabled=False)
    routing_config_changed()
    return env.post("/v1/completion", {"input": "hi"})


def _504(env: Env) -> httpx.Response:
    env.monkeypatch.setitem(settings.GATEWAY, "REQUEST_DEADLINE_S", 0.3)
    env.simulator.configure("sim-fast", latency_ms=2000)
    return env.post("/v1/completion", {"input": "hi"})


def _403(env: Env) -> httpx.Response:
    Agent.objects.create(name="narrow", allowed_models=["sim-medium"])
    return env.post(
        "/v1/completion",
        {"input": "hi", "model": "sim-fast"},
        api_key_create(agent_name="narrow")[1],
    )


SCENARIOS: dict[str, tuple[int, Callable[[Env], httpx.Response]]] = {
    "400 malformed json": (400, lambda env: env.post("/v1/completion", b"{")),
    "400 drf invalid field": (400, lambda env: env.post(f"/v1/reviews/{queued_review_item()}/decision", {"decision": "x"}, env.reviewer)),
    "401 no key": (401, lambda env: httpx.post(f"{env.gateway.url}/v1/completion", json={})),
    "401 drf no key": (401, lambda env: httpx.post(f"{env.gateway.url}/v1/reviews/1/decision", json={})),
    "403 not allowed": (403, _403),
    "403 drf agent key": (403, lambda env: env.post(f"/v1/reviews/{queued_review_item()}/decision", {"decision": "approve"})),
    "404 no endpoint": (404, lambda env: httpx.get(f"{env.gateway.url}/v1/nothing")),
    "404 unknown model": (404, lambda env: env.post("/v1/completion", {"input": "hi", "model": "nope"})),
    "404 no review item": (404, lambda env: env.post("/v1/reviews/999999/decision", {"decision": "approve"}, env.reviewer)),
    "405 view": (405, lambda env: httpx.get(f"{env.gateway.url}/v1/completion")),
    "405 drf": (405, lambda env: httpx.get(f"{env.gateway.url}/v1/reviews/1/decision", headers={"Authorization": f"Bearer {env.reviewer}"})),
    "408 slow body": (408, _408),
    "409 decided twice": (409, _409),
    "413 body too large": (413, lambda env: env.post("/v1/completion", b" " * (settings.GATEWAY["MAX_BODY_BYTES"] + 1))),
    "415 drf not json": (415, lambda env: env.post(f"/v1/reviews/{queued_review_item()}/decision", b"decision=approve", env.reviewer, **{"Content-Type": "text/plain"})),
    "429 rpm": (429, _429),
    "500 view": (500, _500_view),
    "500 handler": (500, _500_handler),
    "502 upstream": (502, _502),
    "503 nothing available": (503, _503),
    "504 deadline": (504, _504),
}  # fmt: skip


def test_the_table_is_the_contract():
    """The status -> type table is the one written in this test (and in ADR 0014)."""
    assert EXPECTED_TYPES == ERROR_TYPES
    assert {status for status, _ in SCENARIOS.values()} == set(EXPECTED_TYPES)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_error_status_carries_its_type(gateway, simulator, monkeypatch, name):
    """Each error status, produced for real, is answered in the error shape with its type."""
    sim_setup(simulator.url)
    status, scenario = SCENARIOS[name]
    response = scenario(Env(gateway, simulator, monkeypatch))
    assert response.status_code == status, response.text[:300]
    error = response.json()["error"]
    assert {"message", "type", "code", "param"} <= set(error)
    assert error["message"] and error["code"]
    assert error["type"] == EXPECTED_TYPES[status], error
