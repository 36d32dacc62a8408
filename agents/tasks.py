"""Celery tasks of budgets: thin wrappers holding only the retry policy."""

from __future__ import annotations

from celery import Task, shared_task

from .services import AlertRetryable, budget_alert_deliver, budget_alert_record

MAX_RETRIES = 8


@shared_task(acks_late=True)
def budget_alert_raise(budget_id: int, period_id: str, threshold: int, used_nano: int) -> None:
    """Record a budget alert (shown in the admin) and send it to its webhook."""
    alert = budget_alert_record(
        budget_id=budget_id, period_id=period_id, threshold=threshold, used_nano=used_nano
    )
    if alert is not None and alert.webhook_url:
        deliver_budget_alert.delay(alert.pk)


@shared_task(
    bind=True,
    autoretry_for=(AlertRetryable,),
    retry_backoff=True,
    retry_backoff_max=600,
    max_retries=MAX_RETRIES,
    acks_late=True,
)
def deliver_budget_alert(self: Task[[int], None], alert_id: int) -> None:
    """POST a budget alert, signed, to its webhook (retried with backoff)."""
    budget_alert_deliver(alert_id=alert_id, final_attempt=self.request.retries >= MAX_RETRIES)
