"""Verdict callbacks: once a person has decided, the agent's ``callback_url`` receives the verdict,
signed (gateway_project/webhooks.py). Delivered by a Celery task (reviews/tasks.py) that holds only
the retry policy; the decision enqueues it on commit (reviews/services.py).
"""

from __future__ import annotations

import logging
from typing import Any

from gateway_project.webhooks import webhook_post

from .models import DECISION_STATUS, ReviewItem
from .selectors import review_decision_reason

logger = logging.getLogger(__name__)


class CallbackRetryable(Exception):
    """The agent's callback endpoint did not take the verdict (non-2xx, timeout): try again."""


def verdict_payload(*, item: ReviewItem) -> dict[str, Any]:
    """The JSON an agent receives about its request once a person has decided."""
    verdict = {status: decision for decision, status in DECISION_STATUS.items()}
    return {
        "id": item.request_id,
        "status": item.status,
        "verdict": verdict.get(item.status),
        "corrected_output": item.corrected_output or None,
        "reason": review_decision_reason(item=item) or None,
        "decided_at": item.decided_at.isoformat() if item.decided_at else None,
    }


def _callback_record(item: ReviewItem, state: str, error: str = "") -> None:
    item.callback_state = state
    item.callback_error = error[:300]
    item.save(update_fields=["callback_state", "callback_attempts", "callback_error"])


def review_verdict_deliver(*, item_id: int, final_attempt: bool) -> str:
    """POST the item's verdict to its callback URL, signed; returns the new ``callback_state``.

    2xx: delivered. Anything else (another status, a timeout, a refused connection) raises
    ``CallbackRetryable`` unless ``final_attempt``, when the state becomes failed. A URL the
    gateway refuses to call (one leading to an internal address, checked again now: ADR 0015)
    fails at once, without a request. Redirects are not followed.
    """
    try:
        item = ReviewItem.objects.get(pk=item_id)
    except ReviewItem.DoesNotExist:
        logger.warning("reviews: verdict callback for unknown item %s dropped", item_id)
        return ReviewItem.CallbackState.NONE
    if item.callback_state == ReviewItem.CallbackState.DELIVERED or item.is_pending:
        return item.callback_state  # a duplicate message, or nothing decided yet
    if not item.callback_url:
        return item.callback_state
    delivery = webhook_post(
        url=item.callback_url,
        payload=verdict_payload(item=item),
        user_agent="llm-gateway-review-callback",
    )
    if delivery.outcome == "refused":
        _callback_record(item, ReviewItem.CallbackState.FAILED, delivery.error)
        logger.warning("reviews: verdict callback of item %s %s", item_id, delivery.error)
        return item.callback_state
    item.callback_attempts += 1
    if delivery.delivered:
        _callback_record(item, ReviewItem.CallbackState.DELIVERED)
        return item.callback_state
    if final_attempt:
        _callback_record(item, ReviewItem.CallbackState.FAILED, delivery.error)
        logger.warning(
            "reviews: verdict callback of item %s failed for good: %s", item_id, delivery.error
        )
        return item.callback_state
    _callback_record(item, ReviewItem.CallbackState.PENDING, delivery.error)
    raise CallbackRetryable(delivery.error)
