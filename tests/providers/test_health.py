"""Health checks inform routing without locking it, over real HTTP against the simulator.

A provider is skipped only after three failed checks in a row; a real success clears that on
every process; a request whose every candidate is down by health checks alone tries them anyway
(panic routing, said in the attempt); real failures still trip the circuit breaker.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from django.conf import settings
from factories import SimSetup, new_api_key, sim_setup

from gateway_project.shared_state import shared_state
from gateway_project.state_keys import provider_failed_checks_key
from providers.health import probe_providers
from providers.models import ModelDeployment
from providers.selectors import provider_runtime_status
from routing.config import providers_to_probe, routing_config_changed

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="shared state needs REDIS_URL")

DOWN_3 = "provider failed its last 3 health checks"
PANIC = DOWN_3 + "; tried anyway, as no other model could serve (panic routing)"


@pytest.fixture
def setup(gateway, simulator) -> SimSetup:
    return sim_setup(simulator.url)


def outage(simulator: Any, *protocols: str) -> None:
    """The simulator's providers of these protocols (all by default) answer 503 to everything."""
    body = {"protocols": list(protocols)} if protocols else {}
    httpx.put(f"{simulator.url}/_sim/outage", json=body).raise_for_status()


def recovered(simulator: Any) -> None:
    httpx.delete(f"{simulator.url}/_sim/outage").raise_for_status()


def checks(gateway: Any, times: int) -> None:
    """Run the background health check ``times`` times, as the interval would."""
    for _ in range(times):
        gateway.run_in_loop(probe_providers(providers_to_probe))


def ask(url: str, key: str, status: int = 200) -> dict[str, Any]:
    response = httpx.post(
        f"{url}/v1/completion",
        json={"input": "hi"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=20,
    )
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def first_attempt(answer: dict[str, Any]) -> dict[str, Any]:
    """Where the first attempt went and how it ended (timings, scores and costs left out)."""
    keys = ("provider", "model", "tier", "outcome", "detail")
    return {k: v for k, v in answer["attempts"][0].items() if k in keys}


def health_of(gateway: Any) -> tuple[dict[str, int], dict[str, str]]:
    """/health's failed checks per provider and status per model."""
    body = httpx.get(f"{gateway.url}/health").json()
    failed = {p["name"]: p["failed_checks"] for p in body["providers"]}
    return failed, {m["name"]: m["status"] for m in body["models"]}


def only_the_fast_model(setup: SimSetup) -> None:
    """The issue's set-up: one model, so the provider behind it is the only candidate."""
    ModelDeployment.objects.exclude(pk=setup.fast.pk).update(enabled=False)
    routing_config_changed()


def test_fewer_than_three_failed_checks_do_not_skip(gateway, setup, simulator):
    """Two failed checks: /health counts them, routing still calls the provider, and the real
    success that follows clears the count."""
    outage(simulator, "ollama")
    checks(gateway, 2)
    recovered(simulator)
    failed, models = health_of(gateway)
    assert failed["sim-ollama"] == 2 and models["sim-fast"] == "available"

    answer = ask(gateway.url, new_api_key())
    assert answer["model"] == "sim-fast"
    assert first_attempt(answer) == {
        "provider": "sim-ollama", "model": "sim-fast", "tier": "fast", "outcome": "ok"
    }  # fmt: skip
    assert health_of(gateway)[0]["sim-ollama"] == 0


def test_three_failed_checks_skip_while_another_model_can_serve(gateway, setup, simulator):
    """The third failed check in a row marks the provider down: its model is skipped without a
    call while another model answers."""
    outage(simulator, "ollama")
    checks(gateway, 3)
    recovered(simulator)
    assert health_of(gateway)[1]["sim-fast"] == "unavailable"
    status = provider_runtime_status(provider_id=setup.ollama.pk)
    assert status.endswith("3 failed checks in a row: skipped while other models can serve")

    answer = ask(gateway.url, new_api_key())
    assert answer["model"] == "sim-medium"
    assert first_attempt(answer) == {
        "provider": "sim-ollama", "model": "sim-fast", "tier": "fast", "outcome": "skipped",
        "detail": DOWN_3,
    }  # fmt: skip
    assert simulator.calls("sim-fast") == 0


def test_a_passed_check_starts_the_count_again(gateway, setup, simulator):
    """Failed checks count only in a row: fail, fail, pass, fail leaves the provider routed."""
    outage(simulator, "ollama")
    checks(gateway, 2)
    recovered(simulator)
    checks(gateway, 1)
    outage(simulator, "ollama")
    checks(gateway, 1)
    recovered(simulator)
    assert health_of(gateway)[0]["sim-ollama"] == 1
    assert ask(gateway.url, new_api_key())["model"] == "sim-fast"


def test_the_only_candidate_down_by_health_checks_still_answers(gateway, setup, simulator):
    """A gateway started just before its upstream: the only model's provider failed its checks,
    the upstream now serves, and requests are answered (they used to get 503)."""
    only_the_fast_model(setup)
    outage(simulator)
    checks(gateway, 3)
    recovered(simulator)

    answer = ask(gateway.url, new_api_key())
    assert answer["model"] == "sim-fast"
    assert first_attempt(answer) == {
        "provider": "sim-ollama", "model": "sim-fast", "tier": "fast", "outcome": "ok",
        "detail": PANIC,
    }  # fmt: skip


def test_when_every_candidate_is_down_by_health_a_real_success_clears_its_mark(
    gateway, setup, simulator
):
    """Every provider failed three checks: the request tries the plan anyway (panic routing);
    the provider that answered is routed normally again, the others stay marked down."""
    outage(simulator)
    checks(gateway, 3)
    recovered(simulator)
    key = new_api_key()

    answer = ask(gateway.url, key)
    assert answer["model"] == "sim-fast"
    assert first_attempt(answer)["detail"] == PANIC
    failed, models = health_of(gateway)
    assert failed == {"sim-ollama": 0, "sim-openai": 3, "sim-anthropic": 3, "sim-gemini": 3}
    assert models["sim-fast"] == "available" and models["sim-medium"] == "unavailable"

    again = ask(gateway.url, key)
    assert again["model"] == "sim-fast"
    assert first_attempt(again) == {
        "provider": "sim-ollama", "model": "sim-fast", "tier": "fast", "outcome": "ok"
    }  # fmt: skip


def test_panic_routing_still_trips_the_circuit_breaker(gateway, setup, simulator):
    """Tried although down by health checks, a provider that really fails counts its failures:
    the third one cools the deployment down and it is skipped without a call."""
    only_the_fast_model(setup)
    outage(simulator)
    checks(gateway, 3)
    recovered(simulator)
    simulator.configure("sim-fast", status=503)
    key = new_api_key()

    failed = ask(gateway.url, key, status=502)["error"]
    assert [a["outcome"] for a in failed["attempts"]] == ["error", "error"]
    assert failed["attempts"][0]["detail"].startswith(PANIC + "; ")
    ask(gateway.url, key, status=502)  # the third failure cools sim-fast down
    calls = simulator.calls("sim-fast")
    assert calls == 3

    refused = ask(gateway.url, key, status=503)["error"]
    assert refused["code"] == "no_available_model"
    assert [(a["outcome"], a["detail"]) for a in refused["attempts"]] == [
        ("skipped", "cooling down after failures")
    ]
    assert simulator.calls("sim-fast") == calls


@needs_redis
def test_a_real_success_clears_the_mark_for_every_process(gateway, start_gateway, setup, simulator):
    """With Redis, the real success of gateway process A clears the failed checks that process
    B routes by: B calls the provider as usual, without panic routing."""
    _, url_a = start_gateway()
    _, url_b = start_gateway()
    outage(simulator)
    checks(gateway, 3)
    recovered(simulator)
    key = new_api_key()

    assert first_attempt(ask(url_a, key))["detail"] == PANIC
    assert shared_state().get(provider_failed_checks_key(setup.ollama.pk)) is None
    time.sleep(settings.GATEWAY["SHARED_STATE_READ_CACHE_S"] + 0.1)
    assert first_attempt(ask(url_b, key)) == {
        "provider": "sim-ollama", "model": "sim-fast", "tier": "fast", "outcome": "ok"
    }  # fmt: skip
