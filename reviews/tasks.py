"""Celery tasks of the review queue: thin wrappers holding only the retry policy."""

from __future__ import annotations

from celery import Task, shared_task

from .callbacks import CallbackRetryable, review_verdict_deliver

MAX_RETRIES = 8


@shared_task(
    bind=True,
    autoretry_for=(CallbackRetryable,),
    retry_backoff=True,
    retry_backoff_max=600,
    max_retries=MAX_RETRIES,
    acks_late=True,
)
def deliver_verdict(self: Task[[int], None], item_id: int) -> None:
    """POST a decided item's signed verdict to its agent's callback URL (retried with backoff;
    the last attempt marks the callback failed)."""
    review_verdict_deliver(item_id=item_id, final_attempt=self.request.retries >= MAX_RETRIES)
