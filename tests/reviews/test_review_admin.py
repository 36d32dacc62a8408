"""The reviewers' admin: the queue, its filters, decisions one by one and in bulk, permissions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from review_helpers import queued_item, reviewer

from reviews.models import ReviewEvent, ReviewItem
from reviews.services import review_item_decide

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:reviews_reviewitem_changelist"


@pytest.fixture
def rita() -> User:
    return reviewer("rita")


@pytest.fixture
def reviewer_client(rita: User) -> Client:
    client = Client()
    client.force_login(rita)
    return client


def listed(client: Client, **params: str) -> list[int]:
    response = client.get(reverse(CHANGELIST), params)
    assert response.status_code == 200
    return [item.pk for item in response.context["cl"].result_list]


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def decide(client: Client, item: ReviewItem, **data: str):
    url = reverse("admin:reviews_reviewitem_decide", args=[item.pk])
    return client.post(url, data, follow=True)


def test_changelist_shows_depth_and_oldest_age_oldest_first(reviewer_client):
    """The queue lists pending items oldest first, under its depth and the oldest item's wait."""
    newer = queued_item(age=timedelta(minutes=10))
    oldest = queued_item(age=timedelta(hours=3, minutes=5))
    decided = queued_item(age=timedelta(days=3))
    review_item_decide(item_id=decided.pk, actor=reviewer("sam"), decision="approve")
    response = reviewer_client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    html = response.content.decode()
    assert '<strong id="review-queue-depth">2</strong> pending' in html
    assert '<strong id="review-queue-oldest">3 h 5 min</strong>' in html
    assert [i.pk for i in response.context["cl"].result_list] == [oldest.pk, newer.pk]


def test_status_filter_defaults_to_pending(reviewer_client):
    """Without a status the list shows pending items; other statuses and "all" on request."""
    pending = queued_item()
    approved = queued_item()
    review_item_decide(item_id=approved.pk, actor=reviewer("sam"), decision="approve")
    assert listed(reviewer_client) == [pending.pk]
    assert listed(reviewer_client, status="approved") == [approved.pk]
    assert listed(reviewer_client, status="all") == [pending.pk, approved.pk]


def test_filters_by_confidence_band_age_and_routing_fields(reviewer_client):
    """Confidence bands, age buckets, task type, model and caller narrow the queue."""
    low = queued_item(confidence=2.0, age=timedelta(minutes=30), task_type="invoice")
    mid = queued_item(confidence=5.5, age=timedelta(hours=5), model="sim-fast")
    high = queued_item(confidence=8.0, age=timedelta(days=2), caller="agent-b")
    unscored = queued_item(confidence=None, age=timedelta(days=1, hours=1), task_type="chat")
    assert listed(reviewer_client, confidence="low") == [low.pk]
    assert listed(reviewer_client, confidence="medium") == [mid.pk]
    assert listed(reviewer_client, confidence="high") == [high.pk]
    assert listed(reviewer_client, confidence="none") == [unscored.pk]
    assert listed(reviewer_client, age="1h") == [low.pk]
    assert listed(reviewer_client, age="24h") == [mid.pk, low.pk]
    assert listed(reviewer_client, age="older") == [high.pk, unscored.pk]
    assert listed(reviewer_client, task_type="chat") == [unscored.pk]
    assert listed(reviewer_client, model="sim-fast") == [mid.pk]
    assert listed(reviewer_client, caller="agent-b") == [high.pk]
    assert listed(reviewer_client, confidence="low", _facets="True") == [low.pk]


def test_search_by_request_id_caller_and_input_text(reviewer_client):
    """Search finds items by request id, caller, or words of the input."""
    first = queued_item(prompt="user: What is the VAT on invoice 42?")
    second = queued_item(caller="billing-bot")
    assert listed(reviewer_client, q=first.request_id) == [first.pk]
    assert listed(reviewer_client, q="billing-bot") == [second.pk]
    assert listed(reviewer_client, q="VAT on invoice") == [first.pk]


def test_change_view_shows_the_evidence_and_the_decision_controls(reviewer_client):
    """The item page shows input, output, validator table, every attempt and the three buttons."""
    item = queued_item(prompt="user: Sum of 5 and 7?", output='{"sum": 12}')
    response = reviewer_client.get(reverse("admin:reviews_reviewitem_change", args=[item.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "user: Sum of 5 and 7?" in html
    assert "{&quot;sum&quot;: 12}" in html
    assert (
        "<td>json_schema</td><td>1.5</td><td>2.0</td><td>missing key &#x27;total&#x27;</td>" in html
    )
    assert "<td>sim-ollama</td><td>sim-fast</td>" in html and "<td>sim-medium</td>" in html
    for decision in ("approve", "reject", "correct"):
        assert f'name="decision" value="{decision}"' in html
    assert 'name="_save"' not in html  # the evidence itself is read-only


def test_approve_reject_and_correct_through_the_change_view(reviewer_client, rita):
    """Each button decides the item through the service, with an audit event by the reviewer."""
    approve, reject, correct = queued_item(), queued_item(), queued_item()
    response = decide(reviewer_client, approve, decision="approve")
    assert response.redirect_chain[-1][0].startswith(reverse(CHANGELIST))
    assert any("approved" in m for m in messages_of(response))
    decide(reviewer_client, reject, decision="reject", reason="made-up total")
    decide(reviewer_client, correct, decision="correct", corrected_output='{"sum": 12}')
    for item in (approve, reject, correct):
        item.refresh_from_db()
    assert (approve.status, approve.decided_by) == ("approved", rita)
    assert (reject.status, reject.rejection_reason) == ("rejected", "made-up total")
    assert (correct.status, correct.corrected_output) == ("corrected", '{"sum": 12}')
    assert set(ReviewEvent.objects.values_list("actor__username", flat=True)) == {"rita"}


def test_reject_without_reason_is_refused_with_a_message(reviewer_client):
    """Rejecting without a reason leaves the item pending and says why."""
    item = queued_item()
    response = decide(reviewer_client, item, decision="reject", reason=" ")
    assert "A rejection needs a reason." in messages_of(response)
    item.refresh_from_db()
    assert item.status == "pending"


def test_a_concurrent_decision_is_reported_not_overwritten(reviewer_client):
    """When someone decided first, the reviewer is told who and when; nothing is overwritten."""
    item = queued_item()
    review_item_decide(item_id=item.pk, actor=reviewer("sam"), decision="approve")
    response = decide(reviewer_client, item, decision="reject", reason="nope")
    assert any("already decided (approved) by sam at" in m for m in messages_of(response))
    item.refresh_from_db()
    assert (item.status, item.decided_by_label) == ("approved", "sam")
    page = reviewer_client.get(reverse("admin:reviews_reviewitem_change", args=[item.pk]))
    assert "Decided: <strong>Approved</strong> by sam" in page.content.decode()


def test_bulk_approve_goes_through_the_service_per_item(reviewer_client):
    """Bulk approve decides each pending item (with an event each) and skips decided ones."""
    items = [queued_item() for _ in range(3)]
    review_item_decide(item_id=items[0].pk, actor=reviewer("sam"), decision="reject", reason="x")
    response = reviewer_client.post(
        reverse(CHANGELIST) + "?status=all",
        {"action": "approve_selected", "_selected_action": [i.pk for i in items], "index": "0"},
        follow=True,
    )
    messages = messages_of(response)
    assert "Approved 2 review item(s)." in messages
    assert any(m.startswith("Skipped 1 item(s) already decided") for m in messages)
    statuses = dict(ReviewItem.objects.values_list("pk", "status"))
    assert [statuses[i.pk] for i in items] == ["rejected", "approved", "approved"]
    assert ReviewEvent.objects.filter(action="approve").count() == 2


def test_bulk_reject_asks_for_a_reason_first(reviewer_client):
    """Bulk reject shows a confirmation page asking for the reason, then rejects each item."""
    items = [queued_item() for _ in range(2)]
    ids = [i.pk for i in items]
    page = reviewer_client.post(
        reverse(CHANGELIST), {"action": "reject_selected", "_selected_action": ids, "index": "0"}
    )
    assert page.status_code == 200
    assert "admin/reviews/reviewitem/reject_selected.html" in [t.name for t in page.templates]
    assert not ReviewItem.objects.exclude(status="pending").exists()
    no_reason = reviewer_client.post(
        reverse(CHANGELIST), {"action": "reject_selected", "_selected_action": ids, "apply": "1"}
    )
    assert "Give a reason for the rejection." in no_reason.content.decode()
    done = reviewer_client.post(
        reverse(CHANGELIST),
        {"action": "reject_selected", "_selected_action": ids, "apply": "1", "reason": "spam"},
        follow=True,
    )
    assert "Rejected 2 review item(s)." in messages_of(done)
    assert set(ReviewItem.objects.values_list("status", "rejection_reason")) == {
        ("rejected", "spam")
    }


def test_deciding_needs_the_decide_permission(client):
    """A staff user who may only view the queue sees no buttons and gets 403 when deciding."""
    viewer = User.objects.create_user("vic", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_reviewitem"))
    client.force_login(viewer)
    item = queued_item()
    page = client.get(reverse("admin:reviews_reviewitem_change", args=[item.pk]))
    assert page.status_code == 200 and 'name="decision"' not in page.content.decode()
    url = reverse("admin:reviews_reviewitem_decide", args=[item.pk])
    assert client.post(url, {"decision": "approve"}).status_code == 403
    response = client.post(
        reverse(CHANGELIST),
        {"action": "approve_selected", "_selected_action": [item.pk], "index": "0"},
    )
    assert response.status_code in (200, 302)
    item.refresh_from_db()
    assert item.status == "pending"


OTHER_ADMIN_PAGES = [
    "admin:providers_provider_changelist",
    "admin:providers_provider_add",
    "admin:agents_apikey_changelist",
    "admin:agents_agent_changelist",
    "admin:auth_user_changelist",
    "admin:auth_group_changelist",
    "admin:routing_auditrecord_changelist",
    "admin:routing_taskroute_changelist",
    "admin:routing_prompttemplate_changelist",
    "admin:reviews_reviewevent_changelist",
    "admin:django_celery_beat_periodictask_changelist",
]


@pytest.mark.parametrize("name", OTHER_ADMIN_PAGES)
def test_reviewers_get_403_on_every_other_admin_page(reviewer_client, name):
    """A reviewer can open nothing but the review queue: providers, keys, users, audit: 403."""
    assert reviewer_client.get(reverse(name)).status_code == 403


def test_reviewers_see_only_the_queue_and_admins_see_everything(reviewer_client, admin_client):
    """The reviewer's admin index lists only review items; a superuser opens every page."""
    index = reviewer_client.get(reverse("admin:index"))
    assert [m["object_name"] for app in index.context["app_list"] for m in app["models"]] == [
        "ReviewItem"
    ]
    queued_item()
    for name in [CHANGELIST, *OTHER_ADMIN_PAGES]:
        assert admin_client.get(reverse(name)).status_code == 200, name


def test_admin_can_decide(admin_client, admin_user):
    """A superuser decides like a reviewer, and is recorded as the decider."""
    item = queued_item()
    decide(admin_client, item, decision="approve")
    item.refresh_from_db()
    assert (item.status, item.decided_by) == ("approved", admin_user)
