"""Budget alerts say what was spent: thresholds are computed from settled spend while requests are
in flight (their reservations reported apart), and the admin shows one banner per budget."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from django.utils import timezone
from factories import sim_setup

from agents import limits
from agents.models import Agent, Budget, BudgetAlert
from agents.services import api_key_create
from routing.models import AuditRecord

# The largest answer a request below may get: 1500 tokens on sim-large ($15 per million).
MAX_TOKENS = 1500
SLOW = "[[sim latency_ms=1500 words=5]]"


@pytest.fixture
def alerts(monkeypatch) -> list[tuple[int, str, int, int, int]]:
    """The alerts the gateway raises: (budget id, period, threshold, spent, reserved) in nano-USD."""
    sent: list[tuple[int, str, int, int, int]] = []
    monkeypatch.setattr(limits, "_enqueue_alert", lambda *args: sent.append(args))
    return sent


async def ask(client: httpx.AsyncClient, key: str, text: str) -> httpx.Response:
    return await client.post(
        "/v1/completion",
        json={"input": f"Explain queues {text}", "model": "large", "max_tokens": MAX_TOKENS},
        headers={"Authorization": f"Bearer {key}", "Cache-Control": "no-store"},
    )


def worst_case_nano(text: str) -> int:
    """What a request of ``ask`` reserves: its prompt's bytes (plus 8 per message) at $3 per
    million input tokens, and MAX_TOKENS at $15 per million."""
    prompt_bytes = len(f"Explain queues {text}".encode()) + 8
    return prompt_bytes * 3_000 + MAX_TOKENS * 15_000


async def upstream_calls(simulator_url: str, model: str, count: int) -> None:
    """Wait until the simulator has received ``count`` calls of ``model``."""
    async with httpx.AsyncClient(base_url=simulator_url) as client:
        for _ in range(200):
            stats = (await client.get("/_sim/stats")).json()
            if stats["calls"].get(model, 0) >= count:
                return
            await asyncio.sleep(0.02)
    raise AssertionError(f"{model} never got {count} calls")


def test_alerts_count_settled_spend_not_reservations_in_flight(gateway, simulator, alerts):
    """Requests in flight reserve their worst case: neither a refusal for lack of room nor a
    settlement while others are in flight raises an alert their reservations would justify; 50
    and 80 % fire when the spend passes them, with the spend and the reservations in flight
    reported apart, and no 100 % while the spend stays below it."""
    sim_setup(simulator.url)
    agent = Agent.objects.create(name="spender")
    key = api_key_create(agent_name="spender")[1]
    limit = Decimal("0.08")  # 3.5 worst cases
    budget = Budget.objects.create(scope="agent", agent=agent, period="day", limit_usd=limit)

    async def traffic() -> tuple[list[int], list[int]]:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            # Four at once, slow: three reservations fit, the fourth is refused (429).
            burst = await asyncio.gather(
                *(ask(client, key, f"{i} [[sim latency_ms=800 words=5]]") for i in range(4))
            )
            assert alerts == [], "an alert while almost nothing was spent"
            # A big answer (30 %), then another one settles while a slow request holds its
            # reservation: spend passes 50 %, reserved plus spent would be 85 %.
            big = [(await ask(client, key, "a [[sim words=3000]]")).status_code]
            slow = asyncio.ensure_future(ask(client, key, SLOW))
            await upstream_calls(simulator.url, "sim-large", 5)  # the slow one holds its part
            big.append((await ask(client, key, "b [[sim words=3000]]")).status_code)
            assert [a[2] for a in alerts] == [50]
            big.append((await slow).status_code)
            big.append((await ask(client, key, "c [[sim words=3000]]")).status_code)  # 85 %
            big.append((await ask(client, key, "d [[sim words=3000]]")).status_code)  # no room
            return sorted(r.status_code for r in burst), big

    burst, big = asyncio.run(traffic())
    assert burst == [200, 200, 200, 429]
    assert big == [200, 200, 200, 200, 429]
    assert [a[2] for a in alerts] == [50, 80]  # and no 100 %: the spend stayed below the limit
    assert {a[0] for a in alerts} == {budget.pk}

    gateway.flush_audit()
    answered = AuditRecord.objects.filter(agent="spender", http_status=200)
    cost = {r.prompt: r.cost_usd for r in answered}
    nano = {prompt: int(usd * 1_000_000_000) for prompt, usd in cost.items()}
    slow_prompt = f"user: Explain queues {SLOW}"
    # The 50 % alert: everything answered so far but the slow request, which was in flight.
    _, _, _, spent, reserved = alerts[0]
    assert (
        spent
        == sum(nano.values())
        - nano[slow_prompt]
        - nano["user: Explain queues c [[sim words=3000]]"]
    )
    assert reserved == worst_case_nano(SLOW)
    assert spent < limit * 1_000_000_000 * Decimal("0.8") < spent + reserved
    # The 80 % alert: everything, nothing in flight.
    _, _, _, spent, reserved = alerts[1]
    assert (spent, reserved) == (sum(nano.values()), 0)
    assert sum(cost.values()) < limit


def _budget(agent: str, limit: str = "1") -> Budget:
    return Budget.objects.create(
        scope="agent", agent=Agent.objects.create(name=agent), limit_usd=Decimal(limit)
    )


def _alert(
    budget: Budget, threshold: int, *, reserved: str = "0", days_ago: int = 0
) -> BudgetAlert:
    return BudgetAlert.objects.create(
        budget=budget,
        period_start=timezone.now().date() - timedelta(days=days_ago),
        threshold=threshold,
        spent_usd=budget.limit_usd * threshold / 100,
        reserved_usd=Decimal(reserved),
        limit_usd=budget.limit_usd,
    )


def banners(admin_client) -> list[tuple[str, str]]:
    """The budget alert list of the admin's front page: (class, text) per item."""
    page = admin_client.get("/admin/").content.decode()
    found = re.search(r'<ul class="messagelist budget-alerts">(.*?)</ul>', page, re.S)
    if found is None:
        return []
    items = re.findall(r'<li class="([^"]*)">(.*?)</li>', found.group(1), re.S)
    return [(css, " ".join(re.sub(r"<[^>]+>", "", text).split())) for css, text in items]


def test_one_banner_per_budget_at_its_highest_level(db, admin_client):
    """A budget whose alerts reached 100, 50 and 80 % (recorded in that order) shows one
    banner, at 100 %, before another budget's 80 %; the reservations in flight are said apart;
    the link to the alert list is styled as a warning, not as a success; acknowledging the
    highest alert acknowledges the lower ones of its budget and period."""
    coder = _budget("coder")
    for threshold in (100, 50, 80):
        _alert(coder, threshold)
    _alert(coder, 100, days_ago=1)  # an earlier period: the latest one is shown
    tester = _budget("tester", "2")
    _alert(tester, 50)
    _alert(tester, 80, reserved="0.3")

    shown = banners(admin_client)
    assert [css for css, _ in shown] == ["error", "warning", "warning budget-alerts-link"]
    assert shown[0][1].startswith("Budget alert: the daily budget of agent coder reached 100 %")
    assert shown[1][1].startswith(
        "Budget alert: the daily budget of agent tester reached 80 % ($1.60 of $2.00 spent since"
    )
    assert shown[1][1].endswith(", UTC; $0.30 more reserved by requests in flight).")
    assert shown[2][1] == "6 open budget alerts: review and acknowledge"

    latest = BudgetAlert.objects.get(
        budget=coder, threshold=100, period_start=timezone.now().date()
    )
    admin_client.post(
        "/admin/agents/budgetalert/", {"action": "acknowledge", "_selected_action": [latest.pk]}
    )
    open_alerts = BudgetAlert.objects.filter(acknowledged_at__isnull=True)
    assert sorted((a.budget.target, a.threshold, a.period_start == latest.period_start)
                  for a in open_alerts) == [
        ("agent coder", 100, False),
        ("agent tester", 50, True),
        ("agent tester", 80, True),
    ]  # fmt: skip
    levels = [
        re.search(r"of (agent \w+) reached (\d+) %", text) for _, text in banners(admin_client)
    ]
    assert [m.groups() for m in levels if m] == [("agent coder", "100"), ("agent tester", "80")]
