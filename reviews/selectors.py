"""Reads of the review queue: its depth, a request's verdict, reviewed answers as examples."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.db.models import Count, Min, Q
from django.utils import timezone

from .models import ReviewEvent, ReviewItem


def review_queue_stats() -> tuple[int, timedelta | None]:
    """How many items wait for a person, and how long the oldest has waited (None: none)."""
    stats = ReviewItem.objects.filter(status=ReviewItem.Status.PENDING).aggregate(
        depth=Count("id"), oldest=Min("created_at")
    )
    oldest = stats["oldest"]
    return int(stats["depth"]), (timezone.now() - oldest) if oldest is not None else None


def review_decision_reason(*, item: ReviewItem) -> str:
    """The reason given with the item's decision: the rejection reason, or the reviewer's note
    on an approval or correction (kept on its ``ReviewEvent``)."""
    if item.rejection_reason or item.is_pending:
        return item.rejection_reason
    reason = (
        ReviewEvent.objects.filter(item_id=item.pk, new_status=item.status)
        .values_list("reason", flat=True)
        .first()
    )
    return reason or ""


def verdict_for_request(*, request_id: str) -> dict[str, Any] | None:
    """``{"review": {id, status, queue_reason, decided_at, reason, corrected_output}}`` for a
    request sent to review, or None when it was not. ``id`` is what
    ``POST /v1/reviews/{id}/decision`` takes: the request's id."""
    item = ReviewItem.objects.filter(audit_record__request_id=request_id).first()
    if item is None:
        return None
    return {
        "review": {
            "id": item.request_id,
            "status": item.status,
            "queue_reason": item.reason,
            "decided_at": item.decided_at,
            "reason": review_decision_reason(item=item) or None,
            "corrected_output": item.corrected_output or None,
        }
    }


# A review id as the decision API takes it: the item's number, or its request's id.
_REVIEW_ID = re.compile(r"[0-9]{1,18}|[A-Za-z0-9_-]{1,64}")


def review_item_pk(*, review_id: str) -> int | None:
    """The review item a decision names, by its number or by the id of its request (the id every
    response that queued a review gives out; items are one-to-one with their audit records);
    None when there is none."""
    if not _REVIEW_ID.fullmatch(review_id):
        return None
    if review_id.isdigit():
        return ReviewItem.objects.filter(pk=int(review_id)).values_list("pk", flat=True).first()
    # audit_record__request_id is the FK column itself: no join.
    return (
        ReviewItem.objects.filter(audit_record__request_id=review_id)
        .values_list("pk", flat=True)
        .first()
    )


def examples_for(*, task_type: str, limit: int) -> list[tuple[str, str]]:
    """The latest reviewed answers of a task type as (input, output) pairs, newest first.

    Approved answers give the original output, corrected ones the person's correction. Records
    kept as hashes only (``AUDIT_STORE=hash``) have no text and are skipped.
    """
    if limit <= 0:
        return []
    rows = (
        ReviewItem.objects.filter(
            task_type=task_type,
            status__in=[ReviewItem.Status.APPROVED, ReviewItem.Status.CORRECTED],
        )
        .exclude(audit_record__prompt="")
        .filter(Q(status=ReviewItem.Status.CORRECTED) | ~Q(audit_record__output=""))
        .order_by("-decided_at", "-id")
        .values_list("status", "audit_record__prompt", "audit_record__output", "corrected_output")[
            :limit
        ]
    )
    return [
        (prompt, corrected if status == ReviewItem.Status.CORRECTED else output)
        for status, prompt, output, corrected in rows
    ]
