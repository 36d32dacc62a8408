"""Agent profiles, keys, rate limits, budgets and spend, driven over real HTTP through the gateway
(on the embedded defaults and on PostgreSQL + Redis)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from django.utils import timezone
from factories import sim_setup

from agents.models import Agent, ApiKey, Budget, Project, SpendRollup
from agents.services import api_key_create, api_key_revoke
from routing.models import AuditRecord


def agent_key(name: str = "coder", **profile: object) -> tuple[Agent, str]:
    agent = Agent.objects.create(name=name, **profile)
    return agent, api_key_create(agent_name=name)[1]


def ask(gateway, key: str, *, cache: str = "no-store", **body: object) -> httpx.Response:
    payload = {"input": "Explain queues", "task_type": "analysis", **body}
    return httpx.post(
        f"{gateway.url}/v1/completion",
        json=payload,
        headers={"Authorization": f"Bearer {key}", "Cache-Control": cache},
        timeout=20,
    )


def flushed(gateway) -> None:
    gateway.flush_audit()


@pytest.fixture
def sim(gateway, simulator):
    sim_setup(simulator.url)
    return simulator


def test_rpm_limit_refuses_over_the_limit_without_an_upstream_call(gateway, sim):
    _, key = agent_key(rpm_limit=3)
    answers = [ask(gateway, key) for _ in range(5)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429, 429]
    first, refused = answers[0], answers[3]
    assert first.headers["x-ratelimit-limit-requests"] == "3"
    assert first.headers["x-ratelimit-remaining-requests"] == "2"
    assert answers[2].headers["x-ratelimit-remaining-requests"] == "0"
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_requests" and error["type"] == "rate_limit_error"
    assert "3 requests per minute" in error["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 120
    assert sim.calls("sim-fast") == 3
    flushed(gateway)
    assert AuditRecord.objects.filter(http_status=429, agent="coder").count() == 2


def test_tpm_limit_counts_tokens_and_settles_the_real_count(gateway, sim):
    _, key = agent_key(tpm_limit=1000)
    ok = ask(gateway, key, max_tokens=300)
    assert ok.status_code == 200
    used = 1000 - int(ok.headers["x-ratelimit-remaining-tokens"])
    assert used >= 300  # the prompt plus max_tokens were counted up front
    again = ask(gateway, key, max_tokens=300)
    # The first answer's real tokens replaced its estimate (the answer is shorter than 300).
    assert 1000 - int(again.headers["x-ratelimit-remaining-tokens"]) < used + 300 + used
    refused = ask(gateway, key, max_tokens=5000)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_tokens"


def test_allowed_models_and_tiers(gateway, sim):
    _, key = agent_key(allowed_models=["fast", "sim-fast"], allowed_tiers=["fast", "medium"])
    assert ask(gateway, key, model="sim-fast").status_code == 200
    refused = ask(gateway, key, model="sim-large")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "not_allowed"
    assert "sim-large" in refused.json()["error"]["message"]
    _, key2 = agent_key("lead", allowed_tiers=["large"])
    answer = ask(gateway, key2)  # routed start tier is fast: the plan keeps only large
    assert answer.status_code == 200 and answer.json()["tier"] == "large"


def test_expired_and_revoked_keys(gateway, sim):
    agent, key = agent_key()
    assert ask(gateway, key).status_code == 200
    ApiKey.objects.filter(agent=agent).update(expires_at=timezone.now() - timedelta(seconds=1))
    # .update() sends no signal: save one to announce the change, as the admin does.
    record = ApiKey.objects.get(agent=agent)
    record.save()
    expired = ask(gateway, key)
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "expired_api_key"
    _, other = agent_key("other")
    assert ask(gateway, other).status_code == 200
    api_key_revoke(key=ApiKey.objects.get(agent__name="other"))
    revoked = ask(gateway, other)
    assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "invalid_api_key"


def test_concurrent_requests_cannot_overshoot_a_budget(gateway, sim):
    """50 requests at once against a small budget: each reserves its worst case first, so the
    answered ones stay within the cap, and the refused ones (429) never reach an upstream."""
    sim.configure("sim-medium", words=400)  # every answer is cut at max_tokens: cost ≈ worst case
    agent, key = agent_key()
    limit = Decimal("0.008")
    Budget.objects.create(scope="agent", agent=agent, period="day", limit_usd=limit)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"{gateway.url}/v1/completion",
                        json={"input": "Explain queues", "model": "medium", "max_tokens": 200},
                        headers={"Authorization": f"Bearer {key}", "Cache-Control": "no-store"},
                    )
                    for _ in range(50)
                )
            )

    answers = asyncio.run(burst())
    answered = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code == 429]
    assert len(answered) + len(refused) == 50 and answered and refused
    assert {r.json()["error"]["code"] for r in refused} == {"budget_exceeded"}
    assert sim.calls("sim-medium") == len(answered)
    flushed(gateway)
    spent = sum(r.cost_usd for r in AuditRecord.objects.filter(agent="coder", http_status=200))
    assert spent <= limit
    # Once the burst is over, the budget is exact: what is left admits what fits, no more.
    worst = Decimal("0.0005")  # 200 output tokens at $2/M, with the prompt
    more = [ask(gateway, key, model="medium", max_tokens=200).status_code for _ in range(40)]
    assert more.count(200) <= int((limit - spent) / Decimal("0.0004")) + 1
    flushed(gateway)
    total = sum(r.cost_usd for r in AuditRecord.objects.filter(agent="coder", http_status=200))
    assert total <= limit
    assert limit - total < worst  # refused only when the worst case no longer fits


def test_budget_counter_starts_from_the_rollups_of_the_day(gateway, sim):
    """A budget already spent today (by rollups written earlier) refuses at once."""
    agent, key = agent_key()
    Budget.objects.create(scope="agent", agent=agent, period="day", limit_usd=Decimal("0.01"))
    SpendRollup.objects.create(
        day=timezone.now().date(), agent="coder", model="sim-medium", cost_usd=Decimal("0.0099")
    )
    refused = ask(gateway, key, model="medium", max_tokens=2000)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
    assert "daily agent coder" in refused.json()["error"]["message"]
    assert int(refused.headers["Retry-After"]) <= 86400
    assert ask(gateway, key, model="fast", max_tokens=50).status_code == 200  # sim-fast is free


def test_project_and_global_budgets_apply_to_every_agent_under_them(gateway, sim):
    project = Project.objects.create(name="web")
    _, key_a = agent_key("a", project=project)
    _, key_b = agent_key("b", project=project)
    Budget.objects.create(scope="project", project=project, limit_usd=Decimal("0.0006"))
    sim.configure("sim-medium", words=400)
    assert ask(gateway, key_a, model="medium", max_tokens=200).status_code == 200
    refused = ask(gateway, key_b, model="medium", max_tokens=200)
    assert refused.status_code == 429 and "project web" in refused.json()["error"]["message"]
    Budget.objects.create(scope="global", limit_usd=Decimal("0"))
    _, key_c = agent_key("c")
    assert ask(gateway, key_c, model="medium", max_tokens=10).status_code == 429


def test_spend_rollups_match_the_audit_records(gateway, sim):
    project = Project.objects.create(name="web")
    _, key = agent_key(project=project)
    for model in ("medium", "medium", "large", "fast"):
        assert ask(gateway, key, model=model, max_tokens=50).status_code == 200
    flushed(gateway)
    rows = {r.model: r for r in SpendRollup.objects.filter(agent="coder")}
    assert set(rows) == {"sim-medium", "sim-large", "sim-fast"}
    assert rows["sim-medium"].requests == 2 and rows["sim-medium"].project == "web"
    for model, row in rows.items():
        records = AuditRecord.objects.filter(agent="coder", model=model)
        assert row.cost_usd == sum(r.cost_usd for r in records)
        assert row.tokens_out == sum(r.tokens_out for r in records)


def test_budget_alerts_fire_once_per_threshold_of_settled_spend(gateway, sim, monkeypatch):
    """50 and 80 % fire once each as the spend passes them; a refusal because the next worst
    case does not fit is no 100 % alert; spend at the limit (here: the limit lowered below it)
    is."""
    from agents import limits

    sent: list[tuple[int, str, int, int, int]] = []
    monkeypatch.setattr(limits, "_enqueue_alert", lambda *args: sent.append(args))
    agent, key = agent_key()
    budget = Budget.objects.create(
        scope="agent", agent=agent, period="day", limit_usd=Decimal("0.0014")
    )
    sim.configure("sim-medium", words=400)  # cut at max_tokens: each costs about $0.00045
    statuses = [ask(gateway, key, model="medium", max_tokens=200).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    thresholds = [threshold for budget_id, _, threshold, _, _ in sent if budget_id == budget.pk]
    assert thresholds == [50, 80]
    budget.limit_usd = Decimal("0.0012")
    budget.save()
    assert ask(gateway, key, model="medium", max_tokens=200).status_code == 429
    thresholds = [threshold for budget_id, _, threshold, _, _ in sent if budget_id == budget.pk]
    assert thresholds == [50, 80, 100]
    flushed(gateway)
    spent = sum(r.cost_usd for r in AuditRecord.objects.filter(agent="coder"))
    assert sent[-1][3] == int(spent * 1_000_000_000)  # the settled spend, nothing reserved
    assert sent[-1][4] == 0


def test_an_admin_sets_limits_and_a_budget_on_the_agent_page(gateway, sim, admin_client):
    agent, key = agent_key()
    page = f"/admin/agents/agent/{agent.pk}/change/"
    form = admin_client.get(page).context["adminform"].form
    data = {name: form.initial.get(name) or "" for name in form.fields}
    data.update(
        name="coder", kind="codex", owner="ana@example.com", rpm_limit="2", tpm_limit="",
        allowed_models="[]", allowed_tiers="[]", is_active="on",
        **{
            "budgets-TOTAL_FORMS": "1", "budgets-INITIAL_FORMS": "0",
            "budgets-0-period": "day", "budgets-0-limit_usd": "5", "budgets-0-is_active": "on",
            "api_keys-TOTAL_FORMS": "1", "api_keys-INITIAL_FORMS": "1",
            "api_keys-0-id": str(ApiKey.objects.get(agent=agent).pk),
            "api_keys-0-agent": str(agent.pk), "api_keys-0-label": "",
            "api_keys-0-expires_at_0": "", "api_keys-0-expires_at_1": "",
        },
    )  # fmt: skip
    data.pop("project", None)
    response = admin_client.post(page, data)
    assert response.status_code == 302, response.context["errors"] if response.context else ""
    assert Budget.objects.get(agent=agent).scope == "agent"
    assert [ask(gateway, key).status_code for _ in range(3)] == [200, 200, 429]
    flushed(gateway)
    spend = admin_client.get("/admin/agents/spendrollup/")
    assert spend.status_code == 200 and b"spend-by-agent" in spend.content
    assert b"coder" in spend.content and b"sim-fast" in spend.content
    time.sleep(0)


def test_a_budget_alert_is_recorded_signed_to_its_webhook_and_shown_in_the_admin(
    db, admin_client, monkeypatch
):
    import hashlib
    import hmac
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from django.conf import settings

    from agents.models import BudgetAlert
    from agents.services import budget_alert_deliver, budget_alert_record
    from gateway_project.webhooks import webhook_secret

    received: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append((dict(self.headers.items()), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # The receiver is internal: the operator's allow-list names it (docs/adr/0015).
    monkeypatch.setitem(settings.GATEWAY, "OUTBOUND_ALLOWED_HOSTS", ("127.0.0.1",))
    agent = Agent.objects.create(name="coder")
    budget = Budget.objects.create(
        scope="agent",
        agent=agent,
        limit_usd=Decimal("2"),
        alert_webhook_url=f"http://127.0.0.1:{server.server_address[1]}/alerts",
    )
    today = timezone.now().strftime("%Y%m%d")
    alert = budget_alert_record(
        budget_id=budget.pk, period_id=today, threshold=80, used_nano=1_600_000_000
    )
    assert alert is not None and alert.spent_usd == Decimal("1.6")
    again = budget_alert_record(
        budget_id=budget.pk, period_id=today, threshold=80, used_nano=1_700_000_000
    )
    assert again == alert and BudgetAlert.objects.count() == 1  # once per period and threshold
    assert budget_alert_deliver(alert_id=alert.pk, final_attempt=False)
    server.shutdown()
    ((headers, body),) = received
    expected = hmac.new(webhook_secret(), body, hashlib.sha256).hexdigest()
    assert headers["X-Gateway-Signature"] == f"sha256={expected}"
    payload = json.loads(body)
    assert payload["threshold_percent"] == 80 and payload["budget"]["target"] == "agent coder"
    page = admin_client.get("/admin/")
    assert "Budget alert: the daily budget of agent coder reached 80 %" in page.content.decode()
    assert "($1.60 of $2.00 spent since" in page.content.decode()
    admin_client.post(
        "/admin/agents/budgetalert/",
        {"action": "acknowledge", "_selected_action": [alert.pk]},
    )
    assert BudgetAlert.objects.get().acknowledged_at is not None
    assert b"Budget alert:" not in admin_client.get("/admin/").content


def test_alert_amounts_are_not_rounded_away():
    """A $0.005 budget reads as $0.005, not $0.01; dollars and more read in cents."""
    from agents.templatetags.budget_alerts import usd

    assert usd(Decimal("0.005")) == "$0.005"
    assert usd(Decimal("0.00486680")) == "$0.004867"
    assert usd(Decimal("0.5")) == "$0.50"
    assert usd(Decimal("10")) == "$10.00"
    assert usd(Decimal("1234.5")) == "$1,234.50"
    assert usd(Decimal("0")) == "$0.00"
