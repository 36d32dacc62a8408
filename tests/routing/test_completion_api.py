"""The native completion API, driven over real HTTP against the upstream simulator."""

from __future__ import annotations

import time

import httpx
import pytest
from factories import new_api_key, sim_setup

from providers.models import ModelDeployment
from routing.config import routing_config_changed
from routing.models import AuditRecord


def audit_record(gateway, request_id: str) -> AuditRecord:
    gateway.flush_audit()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        record = AuditRecord.objects.filter(request_id=request_id).first()
        if record is not None:
            return record
        time.sleep(0.05)
    raise AssertionError(f"no audit record for {request_id}")


@pytest.fixture
def client(gateway, simulator):
    sim_setup(simulator.url)
    key = new_api_key("claude-code")
    with httpx.Client(
        base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}, timeout=20
    ) as c:
        yield c


def test_completion_answers_with_the_seed_contract(client, gateway):
    """A request with caller, task_type, input and language gets the seeds' response fields."""
    response = client.post(
        "/v1/completion",
        json={
            "caller": "phase-2f-test",
            "task_type": "analysis",
            "input": "Explain queues",
            "language": "en",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"].startswith("call-")
    assert body["status"] == "approved" and body["confidence"] >= 7
    assert body["model"] == "sim-fast"
    assert body["task_type"] == "analysis"
    assert body["tier"] == "fast" and body["provider"] == "sim-ollama"
    assert body["tokens"]["in"] > 0 and body["tokens"]["out"] > 0
    assert "queues" in body["output"].lower()
    assert isinstance(body["latency_ms"], int)
    record = audit_record(gateway, body["id"])
    assert record.caller == "phase-2f-test" and record.agent == "claude-code"
    assert record.status == "approved" and record.model == "sim-fast"
    assert record.tokens_out == body["tokens"]["out"]
    assert [a["outcome"] for a in record.attempts] == ["ok"]


def test_failing_tier_falls_over_to_the_next_and_audits_every_attempt(client, gateway, simulator):
    """A fast model answering 503 is retried, then the medium tier answers; all attempts audited."""
    simulator.configure("sim-fast", status=503)
    body = client.post("/v1/completion", json={"input": "hello there"}).json()
    assert body["model"] == "sim-medium" and body["tier"] == "medium"
    outcomes = [(a["model"], a["outcome"], a.get("status_code")) for a in body["attempts"]]
    assert outcomes == [
        ("sim-fast", "error", 503),
        ("sim-fast", "error", 503),
        ("sim-medium", "ok", None),
    ]
    assert body["cost_usd"] > 0
    record = audit_record(gateway, body["id"])
    assert len(record.attempts) == 3 and record.provider == "sim-openai"


def test_retry_recovers_on_the_same_deployment(client, simulator):
    """One transient failure is retried on the same deployment, which then answers."""
    simulator.configure("sim-fast", status=500, fail_times=1)
    body = client.post("/v1/completion", json={"input": "hi"}).json()
    assert body["model"] == "sim-fast"
    assert [a["outcome"] for a in body["attempts"]] == ["error", "ok"]


def test_repeated_failures_cool_a_deployment_down(client, simulator):
    """After the failure threshold the deployment is skipped without being called."""
    simulator.configure("sim-fast", status=503)
    for _ in range(2):
        client.post("/v1/completion", json={"input": "x"})
    calls_before = simulator.calls("sim-fast")
    body = client.post("/v1/completion", json={"input": "x"}).json()
    assert body["model"] == "sim-medium"
    assert body["attempts"][0]["outcome"] == "skipped"
    assert simulator.calls("sim-fast") == calls_before


def test_permanent_auth_error_is_not_retried(client, simulator):
    """A 401 from an upstream is not retried; routing moves on and the provider is cooled down."""
    simulator.configure("sim-fast", status=401)
    body = client.post("/v1/completion", json={"input": "x"}).json()
    assert [(a["model"], a["outcome"]) for a in body["attempts"]] == [
        ("sim-fast", "error"),
        ("sim-medium", "ok"),
    ]
    assert body["attempts"][0]["error_class"] == "auth_error"


def test_upstream_bad_request_is_returned_not_fallen_over(client, simulator):
    """A 400 from the upstream means the request is at fault: no fallback, a 400 to the caller."""
    simulator.configure("sim-fast", status=400)
    response = client.post("/v1/completion", json={"input": "x"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "upstream_rejected_request"
    assert simulator.calls("sim-medium") == 0


def test_all_tiers_failing_gives_502_with_attempts(client, gateway, simulator):
    """When every deployment fails the caller gets 502 listing the attempts, and it is audited."""
    for model in ("sim-fast", "sim-medium", "sim-large", "sim-external"):
        simulator.configure(model, status=503)
    response = client.post("/v1/completion", json={"input": "x"})
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "all_providers_failed"
    assert {a["model"] for a in error["attempts"]} == {
        "sim-fast",
        "sim-medium",
        "sim-large",
        "sim-external",
    }
    gateway.flush_audit()
    record = AuditRecord.objects.get(status="failed")
    assert record.http_status == 502 and len(record.attempts) == 8


def test_retry_after_within_cap_is_honoured(client, simulator):
    """A 429 with a short Retry-After is waited for, then the same deployment answers."""
    simulator.configure("sim-fast", status=429, retry_after=1, fail_times=1)
    started = time.monotonic()
    body = client.post("/v1/completion", json={"input": "x"}).json()
    assert body["model"] == "sim-fast"
    assert time.monotonic() - started >= 0.9


def test_long_retry_after_cools_down_and_falls_over(client, simulator):
    """A Retry-After beyond the cap is not waited for: fall over now, skip the model later."""
    simulator.configure("sim-fast", status=429, retry_after=120)
    body = client.post("/v1/completion", json={"input": "x"}).json()
    assert body["model"] == "sim-medium"
    assert len([a for a in body["attempts"] if a["model"] == "sim-fast"]) == 1
    again = client.post("/v1/completion", json={"input": "x"}).json()
    assert again["attempts"][0]["outcome"] == "skipped"


def test_nothing_available_says_when_to_retry(client, simulator):
    """When every model is cooling down, the 503 carries Retry-After: the soonest one's end."""
    ModelDeployment.objects.exclude(upstream_model="sim-fast").update(enabled=False)
    routing_config_changed()
    simulator.configure("sim-fast", status=429, retry_after=120)
    assert client.post("/v1/completion", json={"input": "x"}).status_code == 502
    refused = client.post("/v1/completion", json={"input": "x"})
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "no_available_model"
    assert 110 <= int(refused.headers["Retry-After"]) <= 120
    assert simulator.calls("sim-fast") == 1


def test_pinned_model_and_tier(client):
    """An explicit model or tier starts routing there."""
    assert (
        client.post("/v1/completion", json={"input": "x", "model": "sim-large"}).json()["model"]
        == "sim-large"
    )
    assert (
        client.post("/v1/completion", json={"input": "x", "tier": "external"}).json()["model"]
        == "sim-external"
    )


def test_task_route_starts_at_its_tier(client):
    """A task route sends its task type to its starting tier."""
    from routing.config import routing_config_changed
    from routing.models import TaskRoute

    TaskRoute.objects.create(task_type="architecture", start_tier="large")
    routing_config_changed()
    body = client.post("/v1/completion", json={"input": "x", "task_type": "architecture"}).json()
    assert body["model"] == "sim-large"


def test_context_window_too_small_is_skipped(client, simulator):
    """A deployment whose context window cannot hold the request is skipped."""
    from providers.models import ModelDeployment
    from routing.config import routing_config_changed

    ModelDeployment.objects.filter(upstream_model="sim-fast").update(context_window=100)
    routing_config_changed()
    body = client.post("/v1/completion", json={"input": "word " * 400}).json()
    assert body["model"] == "sim-medium"
    assert "context window" in body["attempts"][0]["detail"]
    assert simulator.calls("sim-fast") == 0


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b"{}", 400, "invalid_field"),
        (b'{"input": "x", "max_tokens": 0}', 400, "invalid_field"),
        (b'{"input": "x", "max_tokens": 99999999}', 400, "invalid_field"),
        (b'{"input": "x", "temperature": "hot"}', 400, "invalid_field"),
        (b'{"input": "x", "tier": "huge"}', 400, "invalid_field"),
        (b'{"input": "x", "api_base": "http://evil.example"}', 400, "forbidden_field"),
        (b'{"input": "x", "base_url": "http://evil.example"}', 400, "forbidden_field"),
        (b'{"input": "x", "model": "no-such-model"}', 404, "model_not_found"),
    ],
)
def test_bad_input_gets_a_clear_json_error(client, payload, status, code):
    """Malformed or invalid requests get the right status and a JSON error naming the problem."""
    response = client.post(
        "/v1/completion", content=payload, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_invalid_field_errors_name_the_fields(client):
    """A 400 for wrong fields names each of them."""
    response = client.post(
        "/v1/completion", json={"input": "x", "max_tokens": -1, "temperature": 9}
    )
    fields = response.json()["error"]["fields"]
    assert set(fields) == {"max_tokens", "temperature"}


def test_oversized_body_gets_413(client):
    """A body over the size limit is refused with 413 before it is parsed."""
    response = client.post(
        "/v1/completion", content=b'{"input": "' + b"a" * (3 * 1024 * 1024) + b'"}'
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


def test_missing_or_bad_key_gets_401(gateway):
    """No key or an unknown key is refused with a JSON 401."""
    missing = httpx.post(f"{gateway.url}/v1/completion", json={"input": "x"})
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
    bad = httpx.post(
        f"{gateway.url}/v1/completion",
        json={"input": "x"},
        headers={"Authorization": "Bearer nope"},
    )
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"


def test_revoked_key_is_refused(gateway, simulator):
    """A revoked key stops working."""
    from agents.models import ApiKey
    from agents.services import api_key_revoke

    sim_setup(simulator.url)
    key = new_api_key("revoked-agent")
    api_key_revoke(key=ApiKey.objects.get(agent__name="revoked-agent"))
    response = httpx.post(
        f"{gateway.url}/v1/completion",
        json={"input": "x"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 401


def test_caller_preference_overrides_the_task_route(gateway, simulator):
    """An agent's own preference (seed ADR-004's agent-type map) decides where it starts."""
    from routing.config import routing_config_changed
    from routing.models import CallerPreference

    sim_setup(simulator.url)
    CallerPreference.objects.create(caller="architect-agent", start_tier="large")
    routing_config_changed()
    architect = new_api_key("architect-agent")
    other = new_api_key("qa-agent")
    for key, model in ((architect, "sim-large"), (other, "sim-fast")):
        answer = httpx.post(
            f"{gateway.url}/v1/completion", json={"input": "x"},
            headers={"Authorization": f"Bearer {key}"},
        ).json()  # fmt: skip
        assert answer["model"] == model


def test_cheap_model_classifies_when_no_rule_matches(client, simulator, settings):
    """With a classifier model configured, an unmatched input is classified by asking it."""
    from routing.config import routing_config_changed
    from routing.models import TaskRoute

    settings.GATEWAY = {**settings.GATEWAY, "CLASSIFIER_MODEL": "sim-medium"}
    TaskRoute.objects.create(task_type="review", start_tier="large")
    routing_config_changed()
    simulator.configure("sim-medium", reply="review")
    answer = client.post("/v1/completion", json={"input": "please look over my change"}).json()
    assert answer["task_type"] == "review"
    assert answer["model"] == "sim-large"
    assert simulator.calls("sim-medium") == 1


def test_deadline_cuts_a_slow_upstream(client, simulator, settings):
    """A request whose deadline passes while the upstream is silent gets 504, not a hang."""
    settings.GATEWAY = {**settings.GATEWAY, "REQUEST_DEADLINE_S": 0.5}
    for model in ("sim-fast", "sim-medium", "sim-large", "sim-external"):
        simulator.configure(model, latency_ms=2000)
    started = time.monotonic()
    response = client.post("/v1/completion", json={"input": "x"})
    assert time.monotonic() - started < 1.5
    assert response.status_code in (502, 504)
    assert response.json()["error"]["attempts"][0]["error_class"] == "timeout"
