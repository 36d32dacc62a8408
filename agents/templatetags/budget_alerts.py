"""The admin's budget alert banner, on every admin page: one line per budget with alerts not yet
acknowledged, at the highest threshold its latest period reached."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import template
from django.urls import reverse

from agents.limits import usd as money
from agents.models import BudgetAlert

register = template.Library()

_PERIOD_ADJECTIVES = {"day": "daily", "month": "monthly"}


@register.filter
def usd(amount: Decimal | float | None) -> str:
    """The gateway's dollar format without trailing zeros past the cents, so a small budget is
    neither rounded away nor padded ($0.005, $0.004867, $1.60)."""
    if amount is None:
        return "-"
    whole, _, fraction = money(float(amount)).partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


@register.filter
def period_adjective(period: str) -> str:
    return _PERIOD_ADJECTIVES.get(period, period)


# Banners shown at most, and open alerts read to choose them (a few per budget and period).
_BANNERS = 5
_READ = 200


@register.inclusion_tag("admin/agents/budget_alert_banner.html", takes_context=True)
def budget_alert_banner(context: dict[str, Any]) -> dict[str, Any]:
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_staff:
        return {"alerts": [], "count": 0}
    open_alerts = BudgetAlert.objects.filter(acknowledged_at__isnull=True)
    latest = open_alerts.select_related(
        "budget", "budget__agent", "budget__project", "budget__api_key"
    ).order_by("-period_start", "-threshold", "-created_at")[:_READ]
    # One line per budget: its latest period's highest threshold (80 % says 50 % already).
    per_budget: dict[int, BudgetAlert] = {}
    for alert in latest:
        per_budget.setdefault(alert.budget_id, alert)
    alerts = sorted(
        per_budget.values(), key=lambda a: (a.threshold, a.period_start, a.created_at), reverse=True
    )
    return {
        "alerts": alerts[:_BANNERS],
        "count": open_alerts.count(),
        "list_url": reverse("admin:agents_budgetalert_changelist")
        + "?acknowledged_at__isnull=True",
    }
