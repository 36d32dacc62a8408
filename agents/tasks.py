"""Celery tasks of budgets: thin wrappers holding only the retry policy."""

from __future__ import annotations

from celery import Task, shared_task

from .services import AlertRetryable, budget_alert_deliver, budget_alert_record

MAX_RETRIES = 8


@shared_task(
    bind=True,
    autoretry_for=(AlertRetryable,),
    retry_backoff=True,
    retry_backoff_max=600,
    max_retries=MAX_RETRIES,
    acks_late=True,
)
def budget_alert_raise(
    self: Task[[int, str, int, int, int], None],
    budget_id: int,
    period_id: str,
    threshold: int,
    used_nano: int,
    reserved_nano: int = 0,  # absent from alerts enqueued before reservations were reported
) -> None:
    """Record a budget alert (shown in the admin) and POST it to its webhook; a failed POST is
    retried with backoff (recording again is a no-op). ``used_nano`` is the settled spend,
    ``reserved_nano`` what requests in flight had reserved besides."""
    alert = budget_alert_record(
        budget_id=budget_id,
        period_id=period_id,
        threshold=threshold,
        used_nano=used_nano,
        reserved_nano=reserved_nano,
    )
    if alert is not None and alert.webhook_url and alert.delivered_at is None:
        budget_alert_deliver(alert_id=alert.pk, final_attempt=self.request.retries >= MAX_RETRIES)
