"""Confidence gates and escalation, end to end over real HTTP against the simulator."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from factories import new_api_key, sim_setup

from routing.models import AuditRecord
from scoring.services import tunable_set


@pytest.fixture
def client(gateway, simulator):
    sim_setup(simulator.url)
    key = new_api_key("claude-code")
    with httpx.Client(
        base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}, timeout=20
    ) as c:
        c.key = key  # type: ignore[attr-defined]
        yield c


def record(gateway, request_id: str) -> AuditRecord:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        gateway.flush_audit()
        found = AuditRecord.objects.filter(request_id=request_id).first()
        if found is not None:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no audit record for {request_id}")


def test_good_answer_is_approved(client, gateway):
    """A clean answer scores 7 or more: status approved, with the validator breakdown."""
    body = client.post("/v1/completion", json={"input": "Explain how tides work"}).json()
    assert body["status"] == "approved"
    assert body["confidence"] >= 7
    assert body["escalations"] == 0
    assert {v["name"] for v in body["validation"]} >= {"completeness"}
    stored = record(gateway, body["id"])
    assert stored.status == "approved" and stored.confidence == body["confidence"]
    assert stored.validation == body["validation"]


def test_weak_fast_answer_escalates_to_the_next_tier(client, simulator):
    """A low-confidence answer on the fast tier is asked of the medium tier; the better one wins."""
    simulator.configure("sim-fast", quality="bad")
    body = client.post("/v1/completion", json={"input": "Explain how tides work"}).json()
    assert body["model"] == "sim-medium"
    assert body["escalations"] == 1
    assert body["status"] == "approved"
    scored = [a for a in body["attempts"] if "confidence" in a]
    assert [a["model"] for a in scored] == ["sim-fast", "sim-medium"]
    assert scored[0]["confidence"] < 5 <= scored[1]["confidence"]
    assert body["cost_usd"] > 0


def test_still_weak_answer_waits_for_review(client, gateway, simulator):
    """When every tier answers badly, the best answer is pending_review and a review item exists."""
    from reviews.models import ReviewItem

    for model in ("sim-fast", "sim-medium", "sim-large"):
        simulator.configure(model, quality="bad")
    body = client.post("/v1/completion", json={"input": "Explain how tides work"}).json()
    assert body["status"] == "pending_review"
    assert body["confidence"] < 4
    assert body["escalations"] == 2  # fast → medium → large, then the step budget is spent
    record(gateway, body["id"])
    item = ReviewItem.objects.get(audit_record__request_id=body["id"])
    assert item.status == "pending" and item.reason == "low_confidence"
    polled = client.get(f"/v1/completion/{body['id']}").json()
    assert polled["status"] == "pending_review" and polled["review"]["status"] == "pending"


def test_escalation_respects_the_step_budget(client, simulator):
    """With max_escalation_steps 0 for a task type, its weak answers are not escalated."""
    tunable_set(name="max_escalation_steps", task_type="quick", value=0)
    simulator.configure("sim-fast", quality="bad")
    body = client.post("/v1/completion", json={"input": "x y z", "task_type": "quick"}).json()
    assert body["model"] == "sim-fast" and body["escalations"] == 0


def test_validators_and_thresholds_are_set_per_task_type(client):
    """A task type's own validator settings and thresholds apply to it, and only to it."""
    from scoring.models import ValidatorConfig
    from scoring.services import validator_config_save

    # The simulator answers in about 30 words: too short for "essay", a mild finding.
    validator_config_save(
        config=ValidatorConfig(task_type="essay", validator="length", params={"min_words": 45})
    )
    essay = client.post("/v1/completion", json={"input": "Explain tides", "task_type": "essay"})
    other = client.post("/v1/completion", json={"input": "Explain tides", "task_type": "other"})
    assert essay.json()["status"] == "warning"
    assert other.json()["status"] == "approved"
    tunable_set(name="approve_at", task_type="essay", value=5.5, reason="short is fine")
    again = client.post("/v1/completion", json={"input": "Explain tides", "task_type": "essay"})
    assert again.json()["status"] == "approved"
    assert again.json()["confidence"] == essay.json()["confidence"]


def test_wrong_language_lowers_confidence(client):
    """An answer in another language than the requested one is not approved."""
    body = client.post(
        "/v1/completion",
        json={"input": "Erkläre Gezeiten [[sim language=en]]", "language": "de", "task_type": "t"},
    ).json()
    language = next(v for v in body["validation"] if v["name"] == "language")
    assert language["score"] < 4
    assert body["status"] != "approved"


def test_openai_endpoint_sends_the_gate_in_headers(gateway, client):
    """The OpenAI-compatible answer carries status, confidence and request id as headers."""
    sdk = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=client.key, max_retries=0)
    raw = sdk.chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": "Explain tides"}]
    )
    assert raw.headers["x-gateway-status"] == "approved"
    assert float(raw.headers["x-gateway-confidence"]) >= 7
    assert raw.headers["x-gateway-request-id"].startswith("call-")
    assert raw.parse().choices[0].message.content


def test_stream_is_scored_at_the_end(gateway, client, simulator):
    """A stream ends with an SSE comment carrying its gate; a bad stream goes to review."""
    from reviews.models import ReviewItem

    simulator.configure("sim-fast", quality="bad")
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json={"model": "fast", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers={"Authorization": f"Bearer {client.key}"},
        timeout=20,
    ) as response:
        lines = list(response.iter_lines())
        request_id = response.headers["x-gateway-request-id"]
    comment = next(line for line in lines if line.startswith(": x-gateway-status="))
    assert "x-gateway-status=pending_review" in comment
    assert lines.index(comment) < lines.index("data: [DONE]")
    record(gateway, request_id)
    assert ReviewItem.objects.filter(audit_record__request_id=request_id).exists()


def test_agreement_asks_a_second_model(client, simulator):
    """With the agreement check configured, a second model is asked in parallel and compared."""
    from scoring.models import ValidatorConfig
    from scoring.services import validator_config_save

    validator_config_save(
        config=ValidatorConfig(
            task_type="legal", validator="agreement", params={"model": "sim-large"}
        )
    )
    same = client.post(
        "/v1/completion", json={"input": "Explain tides", "task_type": "legal"}
    ).json()
    agreement = next(v for v in same["validation"] if v["name"] == "agreement")
    assert agreement["score"] >= 7
    assert simulator.calls("sim-large") == 1

    # When the second model disagrees, the fast answer scores low and is escalated.
    simulator.configure("sim-large", reply="Bananas are yellow fruit grown in warm places.")
    differ = client.post(
        "/v1/completion", json={"input": "Explain tides", "task_type": "legal"}
    ).json()
    first = next(
        a for a in differ["attempts"] if a.get("model") == "sim-fast" and "confidence" in a
    )
    assert first["confidence"] < 4
    assert differ["escalations"] >= 1


def test_exploration_starts_some_requests_on_a_neighbouring_tier(client, gateway, settings):
    """With exploration_share 0.5 some routed requests start one tier away and say so; with 0
    none does."""
    from routing.config import routing_config_changed
    from routing.models import TaskRoute

    settings.GATEWAY = {**settings.GATEWAY, "EXPLORATION": True}
    TaskRoute.objects.create(task_type="explore", start_tier="medium")
    TaskRoute.objects.create(task_type="stay", start_tier="medium")
    tunable_set(name="exploration_share", task_type="explore", value=0.5)
    tunable_set(name="sample_explored", task_type="explore", value=1)
    tunable_set(name="exploration_share", task_type="stay", value=0)
    routing_config_changed()
    tiers = set()
    for _ in range(30):
        body = client.post(
            "/v1/completion", json={"input": "Explain tides", "task_type": "explore"}
        )
        tiers.add(body.json()["tier"])
    assert tiers >= {"medium"} and tiers & {"fast", "large"}
    explored = AuditRecord.objects.none()
    deadline = time.monotonic() + 5
    while not explored.exists() and time.monotonic() < deadline:
        gateway.flush_audit()
        explored = AuditRecord.objects.filter(metadata__has_key="exploration")
    assert explored.exists()
    # sample_explored is 1 for "explore": every explored answer is in the review queue.
    from reviews.models import ReviewItem

    explored_ids = set(explored.values_list("request_id", flat=True))
    queued = set(
        ReviewItem.objects.filter(reason="explored").values_list(
            "audit_record__request_id", flat=True
        )
    )
    assert queued == explored_ids
    assert {
        client.post("/v1/completion", json={"input": "x y", "task_type": "stay"}).json()["tier"]
        for _ in range(10)
    } == {"medium"}


def test_a_callers_own_thresholds_gate_its_requests_only(client, gateway):
    """approve_at lowered to 4 for codex's analysis requests: the same warning-band answer is
    approved for codex and stays a warning for claude-code. Each caller's gate is its own."""
    from routing.config import routing_config_changed
    from scoring.models import ValidatorConfig
    from scoring.services import validator_config_save

    # The simulator answers in about 30 words: too short for analysis here, a mild finding.
    validator_config_save(
        config=ValidatorConfig(task_type="analysis", validator="length", params={"min_words": 45})
    )
    ask = {"input": "Explain how tides work", "task_type": "analysis"}
    before = client.post("/v1/completion", json=ask).json()
    assert 4 <= before["confidence"] < 7 and before["status"] == "warning"
    tunable_set(name="approve_at", task_type="analysis", caller="codex", value=4)
    routing_config_changed()
    mine = client.post("/v1/completion", json=ask).json()
    other = httpx.post(
        f"{gateway.url}/v1/completion",
        json=ask,
        headers={"Authorization": f"Bearer {new_api_key('codex')}"},
        timeout=20,
    ).json()
    assert mine["confidence"] == other["confidence"] == before["confidence"]
    assert (mine["status"], other["status"]) == ("warning", "approved")
