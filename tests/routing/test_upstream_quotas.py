"""Upstream quotas (docs/adr/0011-upstream-quotas.md), over real HTTP through the live gateway and
the upstream simulator: rate-limit headers steer traffic away from a provider before it answers 429,
and declared daily quotas stop calls at exactly their count per UTC day."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from factories import DeploymentFactory, ProviderFactory, new_api_key, sim_setup
from test_processes import needs_redis

from gateway_project.shared_state import shared_state
from gateway_project.state_keys import deployment_cooldown_key, upstream_limits_key
from providers.models import ModelDeployment, Provider
from providers.quotas import seconds_left_today, usage_today
from providers.services import fallback_chain_set
from routing.config import routing_config_changed


@pytest.fixture
def key(gateway) -> str:
    return new_api_key()


def ask(url: str, key: str, **fields: Any) -> dict[str, Any]:
    response = post(url, key, **fields)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def post(url: str, key: str, **fields: Any) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/completion",
        json={"input": "hello there", **fields},
        headers={"Authorization": f"Bearer {key}"},
        timeout=20,
    )


def external_chain(simulator_url: str) -> tuple[ModelDeployment, ModelDeployment]:
    """Two free-tier-like OpenAI-compatible providers in the external chain: a, then b."""
    a = ProviderFactory.create(name="sim-ext-a", base_url=f"{simulator_url}/v1")
    b = ProviderFactory.create(name="sim-ext-b", base_url=f"{simulator_url}/v1")
    first = DeploymentFactory.create(provider=a, upstream_model="ext-a", tier="external")
    second = DeploymentFactory.create(provider=b, upstream_model="ext-b", tier="external")
    fallback_chain_set(provider_names=["sim-ext-a", "sim-ext-b"])
    routing_config_changed()
    return first, second


def outcomes(answer: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["model"], a["outcome"]) for a in answer["attempts"]]


def wait_for_model(url: str, key: str, model: str, timeout: float, **fields: Any) -> float:
    """Ask until ``model`` answers; returns how long that took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if ask(url, key, **fields)["model"] == model:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{model} did not answer within {timeout}s")


# --- rate-limit headers ----------------------------------------------------------------------


def test_spent_request_limit_moves_down_the_chain_before_any_429(gateway, key, simulator):
    """A provider reporting no requests left is skipped without a call until its limit refills:
    the next provider in the chain answers, and the simulator never has to answer 429."""
    external_chain(simulator.url)
    # Two requests, refilled steadily over 3 s: one is back 1.5 s after the bucket ran dry.
    simulator.configure("ext-a", ratelimit_requests=2, ratelimit_window_s=3)
    answers = [ask(gateway.url, key, tier="external") for _ in range(3)]
    assert [a["model"] for a in answers] == ["ext-a", "ext-a", "ext-b"]
    assert outcomes(answers[2]) == [("ext-a", "quota_exhausted"), ("ext-b", "ok")]
    detail = answers[2]["attempts"][0]["detail"]
    assert "upstream requests limit exhausted (0 of 2 left" in detail, detail
    assert simulator.calls("ext-a") == 2

    waited = wait_for_model(gateway.url, key, "ext-a", timeout=6, tier="external")
    assert waited > 0.8  # it stayed away while the limit was spent...
    assert simulator.stats()["rate_limited"] == {}  # ...and never met a 429


def test_anthropic_headers_steer_too(gateway, key, simulator):
    """Anthropic's headers (RFC 3339 resets) work the same: the large tier's Anthropic model is
    skipped once spent, the external tier answers."""
    sim_setup(simulator.url)
    simulator.configure("sim-large", ratelimit_requests=1, ratelimit_window_s=2)
    assert ask(gateway.url, key, tier="large")["model"] == "sim-large"
    answer = ask(gateway.url, key, tier="large")
    assert outcomes(answer) == [("sim-large", "quota_exhausted"), ("sim-external", "ok")]
    wait_for_model(gateway.url, key, "sim-large", timeout=6, tier="large")
    assert simulator.stats()["rate_limited"] == {}


def test_streams_report_their_headers(gateway, key, simulator):
    """The headers of a streamed answer count as well (they come with its first chunk)."""
    external_chain(simulator.url)
    simulator.configure("ext-a", ratelimit_requests=1, ratelimit_window_s=30)
    providers = []
    for _ in range(2):
        with httpx.stream(
            "POST",
            f"{gateway.url}/v1/chat/completions",
            json={
                "model": "external",
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            },
            headers={"Authorization": f"Bearer {key}"},
            timeout=20,
        ) as response:
            assert response.status_code == 200
            response.read()
            providers.append(response.headers["x-gateway-provider"])
    assert providers == ["sim-ext-a", "sim-ext-b"]
    assert simulator.stats()["rate_limited"] == {}


def test_a_token_limit_skips_requests_it_cannot_cover(gateway, key, simulator):
    """With fewer tokens left than a request may use (prompt + max_tokens), the deployment is
    skipped for that request; smaller requests still go to it."""
    external_chain(simulator.url)
    simulator.configure("ext-a", ratelimit_tokens=1000, ratelimit_window_s=60)
    first = ask(gateway.url, key, tier="external", max_tokens=50)
    assert first["model"] == "ext-a"
    big = ask(gateway.url, key, tier="external", max_tokens=2000)
    assert outcomes(big) == [("ext-a", "quota_exhausted"), ("ext-b", "ok")]
    assert "upstream tokens limit exhausted" in big["attempts"][0]["detail"]
    assert ask(gateway.url, key, tier="external", max_tokens=50)["model"] == "ext-a"
    assert simulator.stats()["rate_limited"] == {}


def test_cerebras_style_day_window_waits_for_its_end(gateway, key, simulator):
    """A window named in the header (-day) is fixed: nothing is back before it ends."""
    external_chain(simulator.url)
    simulator.configure(
        "ext-a", ratelimit_requests=1, ratelimit_window_s=1.5, ratelimit_style="cerebras"
    )
    assert ask(gateway.url, key, tier="external")["model"] == "ext-a"
    answer = ask(gateway.url, key, tier="external")
    assert outcomes(answer) == [("ext-a", "quota_exhausted"), ("ext-b", "ok")]
    assert "requests per day limit exhausted" in answer["attempts"][0]["detail"]
    waited = wait_for_model(gateway.url, key, "ext-a", timeout=6, tier="external")
    assert waited > 1.0
    assert simulator.stats()["rate_limited"] == {}


def test_a_429_with_headers_moves_on_without_retry_or_breaker(gateway, key, simulator):
    """Spent by someone else: the 429's headers say so, so the gateway neither retries it nor
    counts it as a failure of the deployment, answers from the next provider, and skips the
    spent one without a call afterwards."""
    first, _ = external_chain(simulator.url)
    simulator.configure("ext-a", ratelimit_requests=1, ratelimit_window_s=60)
    spent = httpx.post(
        f"{simulator.url}/v1/chat/completions",
        json={"model": "ext-a", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert spent.status_code == 200
    answer = ask(gateway.url, key, tier="external")
    assert [(a["model"], a["outcome"], a.get("status_code")) for a in answer["attempts"]] == [
        ("ext-a", "error", 429),
        ("ext-b", "ok", None),
    ]
    assert shared_state().get(f"fail:d:{first.id}") is None  # no circuit-breaker count
    again = ask(gateway.url, key, tier="external")
    assert outcomes(again) == [("ext-a", "quota_exhausted"), ("ext-b", "ok")]
    assert simulator.stats()["rate_limited"] == {"ext-a": 1}


def test_a_longer_retry_after_still_cools_the_deployment_down(gateway, key, simulator):
    """A 429 whose headers say "back in 12 ms" but whose Retry-After says 30 s: the Retry-After
    wins, as for any 429 (the deployment cools down)."""
    from aiohttp import web

    headers = {
        "x-ratelimit-limit-requests": "1000",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "12ms",
        "retry-after": "30",
    }

    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "slow down"}}, status=429, headers=headers)

    async def start() -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", refuse)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner, int(runner.addresses[0][1])

    runner, port = gateway.run_in_loop(start())
    try:
        first, _ = external_chain(simulator.url)
        Provider.objects.filter(name="sim-ext-a").update(base_url=f"http://127.0.0.1:{port}/v1")
        routing_config_changed()
        answer = ask(gateway.url, key, tier="external")
        assert [(a["model"], a["outcome"]) for a in answer["attempts"]] == [
            ("ext-a", "error"),
            ("ext-b", "ok"),
        ]
        # The cooldown key says until when: Retry-After's 30 s from now.
        until = float(shared_state().get(deployment_cooldown_key(first.id)) or 0)
        assert until == pytest.approx(time.time() + 30, abs=3)
        again = ask(gateway.url, key, tier="external")
        assert again["attempts"][0]["outcome"] == "skipped"  # cooling down, no call
    finally:
        gateway.run_in_loop(runner.cleanup())


def test_nothing_changes_without_rate_limit_headers(gateway, key, simulator):
    """Providers that send no such headers (Ollama, Gemini, most self-hosted servers) are
    routed as before, and nothing is written for them; nor for limits far from running out."""
    setup = sim_setup(simulator.url)
    simulator.configure("sim-medium", ratelimit_requests=10_000)  # headers, far from low
    for tier in ("fast", "medium", "large", "external"):
        answer = ask(gateway.url, key, tier=tier)
        assert outcomes(answer) == [(f"sim-{tier}", "ok")]
    for d in (setup.fast, setup.medium, setup.large, setup.external):
        assert shared_state().get(upstream_limits_key(d.provider_id, d.upstream_model)) is None
        assert usage_today(d.provider_id) == (0, 0)


def test_quota_skips_are_counted_in_metrics(gateway, key, simulator):
    external_chain(simulator.url)
    simulator.configure("ext-a", ratelimit_requests=1, ratelimit_window_s=60)
    ask(gateway.url, key, tier="external")
    ask(gateway.url, key, tier="external")
    text = httpx.get(f"{gateway.url}/metrics").text
    assert 'gateway_quota_skips_total{provider="sim-ext-a",reason="upstream_requests"}' in text


# --- declared daily quotas -------------------------------------------------------------------


def declare(name: str, **quotas: int) -> None:
    Provider.objects.filter(name=name).update(**quotas)
    routing_config_changed()


def test_daily_request_quota_stops_at_exactly_n(gateway, key, simulator, admin_client):
    """Once today's calls reach the declared quota, the provider is skipped (the next tier
    answers), and the admin list shows today's count against the quota."""
    setup = sim_setup(simulator.url)
    declare("sim-ollama", daily_request_quota=3)
    models = [ask(gateway.url, key)["model"] for _ in range(5)]
    assert models == ["sim-fast"] * 3 + ["sim-medium"] * 2
    assert simulator.calls("sim-fast") == 3
    answer = ask(gateway.url, key)
    assert outcomes(answer) == [("sim-fast", "quota_exhausted"), ("sim-medium", "ok")]
    assert answer["attempts"][0]["detail"] == "daily request quota reached (3/3 today, UTC)"
    assert usage_today(setup.ollama.id) == (3, 0)
    listing = admin_client.get("/admin/providers/provider/").content.decode()
    assert "3 / 3 calls" in listing


def test_retries_count_against_the_quota(gateway, key, simulator):
    """Every attempt is a call the provider counts: a retry needs quota too."""
    sim_setup(simulator.url)
    declare("sim-ollama", daily_request_quota=1)
    simulator.configure("sim-fast", status=503)
    answer = ask(gateway.url, key)
    assert outcomes(answer) == [
        ("sim-fast", "error"),
        ("sim-fast", "quota_exhausted"),
        ("sim-medium", "ok"),
    ]
    assert simulator.calls("sim-fast") == 1


def test_everything_out_of_quota_gives_503(gateway, key, simulator):
    """The existing 'nothing available' answer: 503 no_available_model, with the skips."""
    sim_setup(simulator.url)
    ModelDeployment.objects.exclude(upstream_model="sim-fast").update(enabled=False)
    declare("sim-ollama", daily_request_quota=1)
    assert ask(gateway.url, key)["model"] == "sim-fast"
    response = post(gateway.url, key)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "no_available_model"
    assert "out of quota" in error["message"]
    assert [a["outcome"] for a in error["attempts"]] == ["quota_exhausted"]
    # The daily quota is back at the next UTC midnight.
    assert abs(int(response.headers["Retry-After"]) - seconds_left_today()) <= 2


def test_daily_token_quota_counts_answers_and_streams(gateway, key, simulator, admin_client):
    """Tokens are counted once the answer is in, streams included; a request that would pass
    the quota is not sent."""
    setup = sim_setup(simulator.url)
    declare("sim-ollama", daily_token_quota=100_000)
    answer = ask(gateway.url, key)
    spent = answer["tokens"]["in"] + answer["tokens"]["out"]
    assert usage_today(setup.ollama.id) == (1, spent)

    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json={"model": "fast", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=20,
    ) as response:
        assert response.status_code == 200
        response.read()
    deadline = time.monotonic() + 5
    while usage_today(setup.ollama.id)[1] == spent and time.monotonic() < deadline:
        time.sleep(0.02)
    calls, tokens = usage_today(setup.ollama.id)
    assert calls == 2 and tokens > spent

    declare("sim-ollama", daily_token_quota=tokens + 2)  # less than any request needs
    answer = ask(gateway.url, key)
    assert outcomes(answer) == [("sim-fast", "quota_exhausted"), ("sim-medium", "ok")]
    assert "daily token quota reached" in answer["attempts"][0]["detail"]
    assert (
        f"{tokens:,} / {tokens + 2:,} tokens"
        in admin_client.get("/admin/providers/provider/").content.decode()
    )


def test_quota_fields_in_the_admin(gateway, admin_client):
    provider = ProviderFactory.create(name="free-tier")
    data = {
        "name": "free-tier", "kind": "openai_compatible", "base_url": "http://127.0.0.1:9/v1",
        "api_key": "", "api_key_env": "", "connect_timeout_s": 5, "first_byte_timeout_s": 60,
        "total_timeout_s": 300, "max_concurrent_requests": 0, "enabled": "on",
        "daily_request_quota": "14400", "daily_token_quota": "1000000",
        "deployments-TOTAL_FORMS": 0, "deployments-INITIAL_FORMS": 0,
    }  # fmt: skip
    response = admin_client.post(f"/admin/providers/provider/{provider.id}/change/", data)
    assert response.status_code == 302, response.content[:2000]
    provider.refresh_from_db()
    assert (provider.daily_request_quota, provider.daily_token_quota) == (14400, 1_000_000)
    assert (
        "0 / 14,400 calls · 0 / 1,000,000 tokens"
        in admin_client.get("/admin/providers/provider/").content.decode()
    )
    data["daily_request_quota"] = "0"
    response = admin_client.post(f"/admin/providers/provider/{provider.id}/change/", data)
    assert response.status_code == 200  # rejected: 0 would mean "never", use enabled for that


@needs_redis
def test_daily_quota_holds_across_processes(start_gateway, key, simulator, admin_client):
    """With Redis, two gateway processes together make exactly the declared number of calls,
    and the admin (another process again) shows the shared count."""
    setup = sim_setup(simulator.url)
    declare("sim-ollama", daily_request_quota=5)
    _, url_a = start_gateway()
    _, url_b = start_gateway()
    models = [ask(url, key)["model"] for _ in range(6) for url in (url_a, url_b)]
    assert models.count("sim-fast") == 5 and models.count("sim-medium") == 7
    assert simulator.calls("sim-fast") == 5
    assert usage_today(setup.ollama.id) == (5, 0)
    assert "5 / 5 calls" in admin_client.get("/admin/providers/provider/").content.decode()
