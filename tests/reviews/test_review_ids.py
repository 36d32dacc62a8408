"""Review ids round trip over real HTTP: every response that queued a review gives its id, the
decision API takes it, and the completion's state shows the decision."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from factories import new_api_key, sim_setup

from reviews.models import ReviewItem
from reviews.services import reviewer_api_key_create


@pytest.fixture
def keys(gateway, simulator) -> dict[str, str]:
    """An agent's key and a reviewer's key; the large model answers badly (no escalation from
    the large tier, so every answer waits for review)."""
    sim_setup(simulator.url)
    simulator.configure("sim-large", quality="bad")
    return {"agent": new_api_key("codex"), "reviewer": reviewer_api_key_create(username="rita")[1]}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def queued(gateway, request_id: str) -> None:
    """Wait until the audit writer has written the request's review item."""
    deadline = time.monotonic() + 5
    while not ReviewItem.objects.filter(audit_record__request_id=request_id).exists():
        assert time.monotonic() < deadline, f"no review item for {request_id}"
        gateway.flush_audit()
        time.sleep(0.05)


def decide(gateway, review_id: str, key: str, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/reviews/{review_id}/decision", json=body, headers=auth(key), timeout=10
    )


def completion(gateway, request_id: str, key: str) -> dict[str, Any]:
    response = httpx.get(f"{gateway.url}/v1/completion/{request_id}", headers=auth(key))
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def test_native_review_id_round_trip(gateway, keys):
    """The native response names its review (id, pending, why); a reviewer decides with that id;
    GET /v1/completion/{id} then has the decision as its status and the correction as its final
    output, the gate's verdict kept apart."""
    answer = httpx.post(
        f"{gateway.url}/v1/completion",
        json={"input": "Explain how tides work", "model": "large"},
        headers=auth(keys["agent"]),
        timeout=20,
    ).json()
    assert answer["status"] == "pending_review"
    assert answer["review"] == {
        "id": answer["id"],
        "status": "pending",
        "queue_reason": "low_confidence",
    }
    before = completion(gateway, answer["id"], keys["agent"])
    assert before["status"] == "pending_review" and before["review"]["status"] == "pending"
    assert before["review"]["id"] == answer["id"]

    queued(gateway, answer["id"])
    decided = decide(
        gateway,
        answer["review"]["id"],
        keys["reviewer"],
        decision="correct",
        corrected_output="Tides rise twice a day.",
        reason="fixed",
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["request_id"] == answer["id"]
    assert decided.json()["status"] == "corrected"

    after = completion(gateway, answer["id"], keys["agent"])
    assert after["status"] == "corrected" and after["gate_status"] == "pending_review"
    assert after["final_output"] == "Tides rise twice a day."
    assert after["review"]["id"] == answer["id"] and after["review"]["status"] == "corrected"
    assert after["review"]["reason"] == "fixed"

    again = decide(gateway, answer["id"], keys["reviewer"], decision="approve")
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_decided"


def test_a_rejection_leaves_no_final_output(gateway, keys):
    """A rejected answer's completion says rejected and gives no output to use."""
    answer = httpx.post(
        f"{gateway.url}/v1/completion",
        json={"input": "Explain how tides work", "model": "large"},
        headers=auth(keys["agent"]),
        timeout=20,
    ).json()
    queued(gateway, answer["id"])
    rejected = decide(
        gateway, answer["review"]["id"], keys["reviewer"], decision="reject", reason="refused"
    )
    assert rejected.status_code == 200, rejected.text
    after = completion(gateway, answer["id"], keys["agent"])
    assert (after["status"], after["final_output"]) == ("rejected", None)
    assert after["output"]  # the model's answer is still there to read


def test_chat_completions_and_streams_give_the_review_id(gateway, keys):
    """A whole chat answer queued for review carries X-Gateway-Review-Id; a stream names it in
    its final SSE comment; both decide the review."""
    body = {"model": "sim-large", "messages": [{"role": "user", "content": "Explain tides"}]}
    whole = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=body, headers=auth(keys["agent"]), timeout=20
    )
    assert whole.headers["x-gateway-status"] == "pending_review"
    review_id = whole.headers["x-gateway-review-id"]
    assert review_id == whole.headers["x-gateway-request-id"]

    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json={**body, "stream": True},
        headers=auth(keys["agent"]),
        timeout=20,
    ) as response:
        lines = list(response.iter_lines())
        stream_id = response.headers["x-gateway-request-id"]
    comment = next(line for line in lines if line.startswith(": x-gateway-status="))
    assert f"x-gateway-review-id={stream_id}" in comment.split()

    for request_id in (review_id, stream_id):
        queued(gateway, request_id)
        decided = decide(gateway, request_id, keys["reviewer"], decision="approve")
        assert decided.status_code == 200, decided.text
        assert completion(gateway, request_id, keys["agent"])["status"] == "approved"


def test_an_answer_not_queued_gives_no_review_id(gateway, keys, simulator):
    """An approved answer that was not sampled has no review, and says so."""
    from scoring.services import tunable_set

    tunable_set(name="sample_approved", value=0)
    answer = httpx.post(
        f"{gateway.url}/v1/completion",
        json={"input": "Explain how tides work", "model": "medium"},
        headers=auth(keys["agent"]),
        timeout=20,
    ).json()
    assert answer["status"] == "approved" and answer["review"] is None
    chat = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "sim-medium", "messages": [{"role": "user", "content": "Explain tides"}]},
        headers=auth(keys["agent"]),
        timeout=20,
    )
    assert chat.headers["x-gateway-status"] == "approved"
    assert "x-gateway-review-id" not in chat.headers


def test_an_unknown_review_id_is_a_clear_404(gateway, keys):
    """A request id with no review item, and a string that is no id at all, get the review API's
    404 in the gateway's error shape (not the router's "No endpoint at …")."""
    for review_id in ("call-00000000000000000000000000000000", "not%20an%20id", "987654"):
        response = decide(gateway, review_id, keys["reviewer"], decision="approve")
        assert response.status_code == 404, response.text
        error = response.json()["error"]
        assert error["code"] == "review_not_found" and error["type"] == "not_found_error"
        assert "No endpoint" not in error["message"]
        assert "an%20id" not in error["message"] and "an id" not in error["message"]
