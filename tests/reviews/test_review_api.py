"""`POST /v1/reviews/{id}/decision` over real HTTP: reviewer keys decide, others are refused."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from factories import new_api_key
from review_helpers import queued_item, reviewer

from agents.services import api_key_revoke
from reviews.models import ReviewEvent, ReviewItem
from reviews.services import review_item_decide, reviewer_api_key_create


@pytest.fixture
def reviewer_key(gateway) -> str:
    return reviewer_api_key_create(username="rita")[1]


def post_decision(
    gateway, item_id: int, body: Any, key: str | None = None, **kwargs: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(
        f"{gateway.url}/v1/reviews/{item_id}/decision",
        json=body,
        headers=headers,
        timeout=10,
        **kwargs,
    )


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert {"message", "type", "code", "param"} <= set(error)
    assert error["code"] == code
    return error


def test_reviewer_key_approves(gateway, reviewer_key):
    """A reviewer-scoped key decides the item; the answer and the audit event name the key."""
    item = queued_item()
    response = post_decision(gateway, item.pk, {"decision": "approve"}, reviewer_key)
    assert response.status_code == 200, response.text
    data = response.json()
    assert (data["id"], data["request_id"], data["status"]) == (
        item.pk,
        item.request_id,
        "approved",
    )
    assert data["decided_by"].startswith("reviewer-rita (API key gwk-")
    assert data["decided_at"]
    item.refresh_from_db()
    assert item.status == "approved" and item.decided_by is None
    event = ReviewEvent.objects.get(item=item)
    assert (event.action, event.actor_label) == ("approve", data["decided_by"])


def test_reviewer_key_rejects_and_corrects(gateway, reviewer_key):
    """Reject carries its reason, correct its output."""
    rejected, corrected = queued_item(), queued_item()
    body = {"decision": "reject", "reason": "invented figures"}
    assert post_decision(gateway, rejected.pk, body, reviewer_key).json()["reason"] == (
        "invented figures"
    )
    body = {"decision": "correct", "corrected_output": "  12\n", "reason": "sum"}
    data = post_decision(gateway, corrected.pk, body, reviewer_key).json()
    assert (data["status"], data["corrected_output"], data["reason"]) == (
        "corrected",
        "  12\n",
        "sum",
    )
    rejected.refresh_from_db()
    corrected.refresh_from_db()
    assert (rejected.status, rejected.rejection_reason) == ("rejected", "invented figures")
    assert (corrected.status, corrected.corrected_output) == ("corrected", "  12\n")


def test_agent_key_gets_403(gateway):
    """An agent-scoped key is a valid key but may not decide: 403, item untouched."""
    item = queued_item()
    response = post_decision(gateway, item.pk, {"decision": "approve"}, new_api_key())
    error = assert_error(response, 403, "insufficient_scope")
    assert error["type"] == "permission_error"
    item.refresh_from_db()
    assert item.status == "pending"


def test_missing_or_unknown_key_gets_401(gateway, reviewer_key):
    """No key, a wrong key or a revoked key: 401 with a Bearer challenge."""
    item = queued_item()
    response = post_decision(gateway, item.pk, {"decision": "approve"})
    assert_error(response, 401, "not_authenticated")
    assert response.headers["www-authenticate"] == "Bearer"
    assert_error(
        post_decision(gateway, item.pk, {"decision": "approve"}, "gwk-nope"), 401, "invalid_api_key"
    )
    from agents.models import ApiKey

    api_key_revoke(key=ApiKey.objects.get(scope="reviewer"))
    response = post_decision(gateway, item.pk, {"decision": "approve"}, reviewer_key)
    assert_error(response, 401, "invalid_api_key")
    item.refresh_from_db()
    assert item.status == "pending"


def test_unknown_item_gets_404(gateway, reviewer_key):
    """Deciding an id that does not exist: 404."""
    response = post_decision(gateway, 987654, {"decision": "approve"}, reviewer_key)
    error = assert_error(response, 404, "review_not_found")
    assert error["type"] == "not_found_error"


def test_already_decided_gets_409_with_who_and_when(gateway, reviewer_key):
    """A decided item is not decided again: 409 naming the first decider and the time."""
    item = queued_item()
    decided = review_item_decide(item_id=item.pk, actor=reviewer("sam"), decision="approve")
    response = post_decision(gateway, item.pk, {"decision": "reject", "reason": "x"}, reviewer_key)
    error = assert_error(response, 409, "already_decided")
    assert (error["decided_by"], error["status"]) == ("sam", "approved")
    assert decided.decided_at is not None
    assert error["decided_at"] == decided.decided_at.isoformat()
    assert "already decided (approved) by sam at" in error["message"]
    item.refresh_from_db()
    assert item.status == "approved"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"decision": "reject"}, "reason"),
        ({"decision": "reject", "reason": "  "}, "reason"),
        ({"decision": "correct"}, "corrected_output"),
        ({"decision": "correct", "corrected_output": ""}, "corrected_output"),
        ({"decision": "maybe"}, "decision"),
        ({}, "decision"),
    ],
)
def test_invalid_bodies_get_400_naming_the_field(gateway, reviewer_key, body, param):
    """The serializer refuses incomplete decisions with the gateway's 400 naming the field."""
    item = queued_item()
    error = assert_error(post_decision(gateway, item.pk, body, reviewer_key), 400, "invalid_field")
    assert error["param"] == param and param in error["fields"]
    assert ReviewItem.objects.get(pk=item.pk).status == "pending"


def test_malformed_json_and_wrong_method(gateway, reviewer_key):
    """A body that is not JSON gets 400 invalid_json, as on every endpoint; GET gets 405; both in
    the gateway's error shape."""
    item = queued_item()
    url = f"{gateway.url}/v1/reviews/{item.pk}/decision"
    headers = {"Authorization": f"Bearer {reviewer_key}", "Content-Type": "application/json"}
    assert_error(httpx.post(url, content=b"{nope", headers=headers), 400, "invalid_json")
    assert_error(httpx.get(url, headers=headers), 405, "method_not_allowed")
