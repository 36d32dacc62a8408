"""Review queue services and selectors: items from audit rows, decisions once, verdicts, examples."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection, transaction
from review_helpers import audit_row, queued_item, reviewer

from reviews.models import ReviewEvent, ReviewItem
from reviews.selectors import examples_for, review_queue_stats, verdict_for_request
from reviews.services import (
    AlreadyDecided,
    InvalidDecision,
    review_item_decide,
    review_items_create,
)
from routing.audit import AuditWriter
from routing.models import AuditRecord

pytestmark = pytest.mark.django_db
needs_postgres = pytest.mark.skipif(
    not settings.DATABASE_URL, reason="row locks need PostgreSQL (SQLite serialises writers)"
)


def _insert_records(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        AuditRecord.objects.create(**{k: v for k, v in row.items() if k != "review_reason"})


def test_create_from_rows_copies_the_routing_fields_and_callback_url():
    """Rows with a review reason become pending items carrying the record's routing fields."""
    rows = [
        audit_row(metadata={"callback_url": "http://127.0.0.1:9/cb", "language": "en"}),
        audit_row(review_reason="sampled", status="approved", confidence=8.5, tier="fast"),
        audit_row(review_reason=None, status="approved"),
    ]
    _insert_records(rows)
    with transaction.atomic():
        assert review_items_create(rows=rows) == 2
    low = ReviewItem.objects.get(audit_record__request_id=rows[0]["request_id"])
    assert (low.status, low.reason, low.gate_status) == (
        "pending",
        "low_confidence",
        "pending_review",
    )
    assert (low.task_type, low.caller, low.model, low.tier) == (
        "invoice",
        "agent-a",
        "sim-medium",
        "medium",
    )
    assert low.confidence == pytest.approx(2.9)
    assert low.callback_url == "http://127.0.0.1:9/cb"
    assert low.callback_state == "none"
    sampled = ReviewItem.objects.get(audit_record__request_id=rows[1]["request_id"])
    assert (sampled.reason, sampled.gate_status, sampled.callback_url) == (
        "sampled",
        "approved",
        "",
    )
    assert not ReviewItem.objects.filter(audit_record__request_id=rows[2]["request_id"]).exists()


def test_create_from_rows_is_idempotent():
    """Queuing the same rows twice creates each item once."""
    rows = [audit_row(), audit_row()]
    _insert_records(rows)
    assert review_items_create(rows=rows) == 2
    assert review_items_create(rows=rows) == 0
    assert review_items_create(rows=[*rows, *rows]) == 0
    assert ReviewItem.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_audit_writer_queues_rows_that_carry_a_review_reason():
    """The audit writer's batch insert creates the review items in the same transaction."""
    writer = AuditWriter()
    flagged, plain = audit_row(), audit_row(review_reason=None, status="approved")
    writer.submit(flagged)
    writer.submit(plain)
    assert writer.flush_sync() == 2
    assert (
        AuditRecord.objects.filter(
            request_id__in=[flagged["request_id"], plain["request_id"]]
        ).count()
        == 2
    )
    assert list(ReviewItem.objects.values_list("audit_record_id", flat=True)) == [
        flagged["request_id"]
    ]


def test_approve_records_who_when_and_the_event():
    """Approving sets the status, the decider and the time, and writes one ReviewEvent."""
    item = queued_item()
    user = reviewer()
    decided = review_item_decide(item_id=item.pk, actor=user, decision="approve", reason="fine")
    item.refresh_from_db()
    assert item.status == decided.status == "approved"
    assert item.decided_by == user and item.decided_by_label == "rita"
    assert item.decided_at is not None
    event = ReviewEvent.objects.get(item=item)
    assert (event.actor, event.action, event.old_status, event.new_status, event.reason) == (
        user, "approve", "pending", "approved", "fine"
    )  # fmt: skip


def test_reject_needs_a_reason():
    """A rejection without a reason is refused and changes nothing; with one it is recorded."""
    item = queued_item()
    user = reviewer()
    with pytest.raises(InvalidDecision):
        review_item_decide(item_id=item.pk, actor=user, decision="reject", reason="  ")
    item.refresh_from_db()
    assert item.status == "pending" and not ReviewEvent.objects.exists()
    review_item_decide(item_id=item.pk, actor=user, decision="reject", reason="wrong total")
    item.refresh_from_db()
    assert (item.status, item.rejection_reason) == ("rejected", "wrong total")
    assert ReviewEvent.objects.get(item=item).new_status == "rejected"


def test_correct_stores_the_corrected_output():
    """A correction needs a non-empty output, which the item then carries."""
    item = queued_item()
    user = reviewer()
    with pytest.raises(InvalidDecision):
        review_item_decide(item_id=item.pk, actor=user, decision="correct", corrected_output=" ")
    review_item_decide(
        item_id=item.pk, actor=user, decision="correct", corrected_output='{"total": 12}'
    )
    item.refresh_from_db()
    assert (item.status, item.corrected_output) == ("corrected", '{"total": 12}')


def test_an_item_is_decided_once():
    """A second decision raises AlreadyDecided naming the first decider and leaves the item."""
    item = queued_item()
    first, second = reviewer("rita"), reviewer("sam")
    review_item_decide(item_id=item.pk, actor=first, decision="approve")
    with pytest.raises(AlreadyDecided) as caught:
        review_item_decide(item_id=item.pk, actor=second, decision="reject", reason="no")
    assert caught.value.decided_by == "rita" and caught.value.status == "approved"
    assert "already decided (approved) by rita at" in str(caught.value)
    item.refresh_from_db()
    assert (item.status, item.decided_by) == ("approved", first)
    assert ReviewEvent.objects.filter(item=item).count() == 1


def test_unknown_item_raises_does_not_exist():
    """Deciding an id that does not exist raises ReviewItem.DoesNotExist."""
    with pytest.raises(ReviewItem.DoesNotExist):
        review_item_decide(item_id=999_999, actor=reviewer(), decision="approve")


def test_decision_enqueues_the_callback_on_commit(django_capture_on_commit_callbacks, monkeypatch):
    """With a callback URL the verdict task is enqueued after commit and the state is pending."""
    from reviews import tasks

    sent: list[int] = []
    monkeypatch.setattr(tasks.deliver_verdict, "delay", sent.append)
    item = queued_item(metadata={"callback_url": "http://127.0.0.1:9/cb"})
    plain = queued_item()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        review_item_decide(item_id=item.pk, actor=reviewer(), decision="approve")
        review_item_decide(item_id=plain.pk, actor=reviewer("sam"), decision="approve")
    assert len(callbacks) == 1 and sent == [item.pk]
    item.refresh_from_db()
    plain.refresh_from_db()
    assert (item.callback_state, plain.callback_state) == ("pending", "none")


def test_queue_stats_count_pending_and_the_oldest_wait():
    """The queue depth counts pending items; the oldest age is the longest wait among them."""
    assert review_queue_stats() == (0, None)
    queued_item(age=timedelta(hours=3))
    queued_item(age=timedelta(minutes=5))
    decided = queued_item(age=timedelta(days=2))
    review_item_decide(item_id=decided.pk, actor=reviewer(), decision="approve")
    depth, oldest = review_queue_stats()
    assert depth == 2
    assert oldest is not None and timedelta(hours=3) <= oldest < timedelta(hours=3, minutes=1)


def test_verdict_for_request():
    """A request's review status: None when never queued, then pending, then the decision."""
    assert verdict_for_request(request_id="call-unknown") is None
    item = queued_item()
    pending = verdict_for_request(request_id=item.request_id)
    assert pending == {
        "review": {
            "id": item.request_id,  # what the decision API takes
            "status": "pending",
            "queue_reason": "low_confidence",
            "decided_at": None,
            "reason": None,
            "corrected_output": None,
        }
    }
    review_item_decide(
        item_id=item.pk,
        actor=reviewer(),
        decision="correct",
        reason="unit",
        corrected_output="12 €",
    )
    verdict = verdict_for_request(request_id=item.request_id)
    assert verdict is not None
    assert verdict["review"]["status"] == "corrected"
    assert verdict["review"]["decided_at"] is not None
    assert (verdict["review"]["reason"], verdict["review"]["corrected_output"]) == ("unit", "12 €")


def test_examples_are_the_latest_reviewed_answers_and_corrections_win():
    """examples_for gives approved outputs and corrected outputs, newest first, never rejected."""
    user = reviewer()
    approved = queued_item(prompt="user: one", output="1")
    corrected = queued_item(prompt="user: two", output="3")
    rejected = queued_item(prompt="user: three", output="x")
    queued_item(prompt="user: pending", output="?")
    queued_item(prompt="user: other", output="o", task_type="other")
    review_item_decide(item_id=approved.pk, actor=user, decision="approve")
    review_item_decide(item_id=corrected.pk, actor=user, decision="correct", corrected_output="2")
    review_item_decide(item_id=rejected.pk, actor=user, decision="reject", reason="wrong")
    assert examples_for(task_type="invoice", limit=5) == [("user: two", "2"), ("user: one", "1")]
    assert examples_for(task_type="invoice", limit=1) == [("user: two", "2")]
    assert examples_for(task_type="invoice", limit=0) == []


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_decisions_exactly_one_wins():
    """PostgreSQL: two threads decide one item at once; the row lock lets exactly one win and
    the other gets AlreadyDecided naming the winner."""
    item = queued_item()
    alice, bob = reviewer("alice"), reviewer("bob")
    alice_decided, release = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def alice_decides() -> None:
        try:
            # Hold alice's transaction open after her decision so bob's runs into the lock.
            with transaction.atomic():
                review_item_decide(item_id=item.pk, actor=alice, decision="approve")
                alice_decided.set()
                release.wait(10)
            results["alice"] = "won"
        except Exception as exc:
            results["alice"] = exc
        finally:
            connection.close()

    def bob_decides() -> None:
        alice_decided.wait(10)
        try:
            review_item_decide(item_id=item.pk, actor=bob, decision="reject", reason="no")
            results["bob"] = "won"
        except Exception as exc:
            results["bob"] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=alice_decides), threading.Thread(target=bob_decides)]
    for thread in threads:
        thread.start()
    alice_decided.wait(10)
    time.sleep(0.3)  # bob is now waiting on the row lock
    assert "bob" not in results
    release.set()
    for thread in threads:
        thread.join(15)
    assert results["alice"] == "won"
    assert isinstance(results["bob"], AlreadyDecided)
    assert results["bob"].decided_by == "alice"
    item.refresh_from_db()
    assert (item.status, item.decided_by_label) == ("approved", "alice")
    assert ReviewEvent.objects.filter(item=item).count() == 1
