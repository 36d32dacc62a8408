"""The whole loop: a weak answer escalates, lands in the queue, a reviewer corrects it in the
admin, and the calling agent sees the correction by polling and by a signed callback."""

from __future__ import annotations

import time

import httpx
import pytest
from django.test import Client
from factories import new_api_key, sim_setup
from test_verdict_callbacks import (  # noqa: F401 - fixtures used by name
    assert_signed,
    callback_server,
    celery_worker,
    worker_queue,
)

from reviews.models import ReviewItem
from reviews.services import reviewer_create


def wait_for_item(gateway, request_id: str) -> ReviewItem:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        gateway.flush_audit()
        item = ReviewItem.objects.filter(audit_record__request_id=request_id).first()
        if item is not None:
            return item
        time.sleep(0.05)
    raise AssertionError("no review item")


@pytest.mark.usefixtures("worker_queue")
def test_weak_answer_is_escalated_queued_corrected_and_delivered(
    gateway,
    simulator,
    callback_server,  # noqa: F811 - the fixture imported above
):
    """Escalation, the queue, a correction in the admin, then polling and the callback agree."""
    sim_setup(simulator.url)
    for model in ("sim-fast", "sim-medium", "sim-large"):
        simulator.configure(model, quality="bad")
    key = new_api_key("codex")
    auth = {"Authorization": f"Bearer {key}"}
    answer = httpx.post(
        f"{gateway.url}/v1/completion",
        json={"caller": "codex", "task_type": "summary", "input": "Summarise the tides report",
              "callback_url": callback_server.url},
        headers=auth, timeout=20,
    ).json()  # fmt: skip
    assert answer["escalations"] >= 1
    assert answer["status"] == "pending_review"
    item = wait_for_item(gateway, answer["id"])

    user, _ = reviewer_create(username="rita")
    browser = Client()
    browser.force_login(user)  # type: ignore[arg-type]  # the configured user model is User
    queue = browser.get("/admin/reviews/reviewitem/")
    assert queue.status_code == 200 and answer["id"].encode() in queue.content
    decided = browser.post(
        f"/admin/reviews/reviewitem/{item.pk}/decide/",
        {"decision": "correct", "corrected_output": "Tides rise twice a day.", "reason": "fixed"},
    )
    assert decided.status_code == 302

    polled = httpx.get(f"{gateway.url}/v1/completion/{answer['id']}", headers=auth).json()
    assert polled["review"]["status"] == "corrected"
    assert polled["final_output"] == "Tides rise twice a day."

    verdict = assert_signed(callback_server.wait_for(1)[0])
    assert verdict["id"] == answer["id"]
    assert verdict["status"] == "corrected"
    assert verdict["corrected_output"] == "Tides rise twice a day."
