"""Writes for agents and their keys."""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from gateway_project.webhooks import webhook_post

from .models import Agent, ApiKey, Budget, BudgetAlert

logger = logging.getLogger(__name__)

# What every raw API key starts with, so a leaked one is recognisable (secret scanners, logs).
API_KEY_PREFIX = "gwk-"


def api_key_hash(raw_key: str) -> str:
    """Keys carry 256 random bits, so a plain SHA-256 is enough to store them safely."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_mint(
    *,
    agent: Agent,
    label: str = "",
    scope: str = ApiKey.Scope.AGENT,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """The one place a key is made: 256 random bits behind ``API_KEY_PREFIX``, stored as its
    hash with its first characters to recognise it; returns the record and the raw key, once."""
    raw_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        agent=agent,
        label=label,
        prefix=raw_key[:12],
        key_hash=api_key_hash(raw_key),
        scope=scope,
        expires_at=expires_at,
    )
    return key, raw_key


@transaction.atomic
def api_key_create(
    *, agent_name: str, label: str = "", expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """Create a key for the agent (created if new); returns the record and the raw key, once."""
    agent, _ = Agent.objects.get_or_create(name=agent_name)
    return api_key_mint(agent=agent, label=label, expires_at=expires_at)


def api_key_revoke(*, key: ApiKey) -> None:
    """Revoke a key; every gateway process stops accepting it within ``ACCESS_CHECK_INTERVAL_S``
    of the commit (``agents.signals``)."""
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])


# --- budget alerts ----------------------------------------------------------------------------


class AlertRetryable(Exception):
    """The alert webhook did not take the alert; Celery tries again later."""


def _period_start(period_id: str) -> date:
    if len(period_id) == 6:  # a month: YYYYMM
        return date(int(period_id[:4]), int(period_id[4:]), 1)
    return date(int(period_id[:4]), int(period_id[4:6]), int(period_id[6:]))


def budget_alert_record(
    *, budget_id: int, period_id: str, threshold: int, used_nano: int, reserved_nano: int = 0
) -> BudgetAlert | None:
    """Record a budget's alert for one period and threshold, once; returns it (the one recorded
    earlier for a duplicate), or None when the budget is gone. ``used_nano`` is the settled
    spend that reached the threshold; ``reserved_nano`` what requests in flight held besides."""
    budget = Budget.objects.filter(pk=budget_id).first()
    if budget is None:
        return None
    webhook = budget.alert_webhook_url or settings.GATEWAY["BUDGET_ALERT_WEBHOOK_URL"]
    alert, _ = BudgetAlert.objects.get_or_create(
        budget=budget,
        period_start=_period_start(period_id),
        threshold=threshold,
        defaults={
            "spent_usd": Decimal(used_nano) / 1_000_000_000,
            "reserved_usd": Decimal(max(0, reserved_nano)) / 1_000_000_000,
            "limit_usd": budget.limit_usd,
            "webhook_url": webhook,
        },
    )
    return alert


def budget_alert_payload(alert: BudgetAlert) -> dict[str, object]:
    budget = alert.budget
    return {
        "type": "budget.alert",
        "alert_id": alert.pk,
        "budget": {
            "id": budget.pk,
            "scope": budget.scope,
            "target": budget.target,
            "period": budget.period,
            "limit_usd": str(alert.limit_usd),
        },
        "period_start": alert.period_start.isoformat(),
        "threshold_percent": alert.threshold,
        # Settled spend (what the threshold is of), and what requests still in flight reserved.
        "spent_usd": str(alert.spent_usd),
        "reserved_usd": str(alert.reserved_usd),
        "created_at": alert.created_at.isoformat(),
    }


def budget_alert_deliver(*, alert_id: int, final_attempt: bool) -> bool:
    """POST the alert, signed like verdict callbacks, to its webhook; True once delivered.

    A failure raises ``AlertRetryable`` unless ``final_attempt`` (then it is recorded). A webhook
    the gateway refuses to call (one leading to an internal address, checked again now: ADR
    0015) is recorded as ``refused: ...`` and not tried again.
    """
    alert = BudgetAlert.objects.select_related("budget").filter(pk=alert_id).first()
    if alert is None or alert.delivered_at is not None or not alert.webhook_url:
        return alert is not None and alert.delivered_at is not None
    delivery = webhook_post(
        url=alert.webhook_url,
        payload=budget_alert_payload(alert),
        user_agent="llm-gateway-budget-alert",
    )
    if delivery.delivered:
        alert.delivered_at = timezone.now()
        alert.delivery_error = ""
        alert.save(update_fields=["delivered_at", "delivery_error"])
        return True
    alert.delivery_error = delivery.error[:300]
    alert.save(update_fields=["delivery_error"])
    if delivery.outcome == "refused" or final_attempt:
        logger.warning("budget alert %s: webhook failed for good: %s", alert_id, delivery.error)
        return False
    raise AlertRetryable(delivery.error)


@transaction.atomic
def budget_alerts_acknowledge(*, alert_ids: Iterable[int]) -> int:
    """Acknowledge alerts, and with each the lower thresholds of its budget and period (the
    banner shows only the highest); returns how many were acknowledged."""
    now = timezone.now()
    chosen = BudgetAlert.objects.filter(pk__in=list(alert_ids))
    superseded = Q()
    for budget_id, period_start, threshold in chosen.values_list(
        "budget_id", "period_start", "threshold"
    ):
        superseded |= Q(budget_id=budget_id, period_start=period_start, threshold__lt=threshold)
    return (
        BudgetAlert.objects.filter(Q(pk__in=chosen.values("pk")) | superseded)
        .filter(acknowledged_at__isnull=True)
        .update(acknowledged_at=now)
    )
