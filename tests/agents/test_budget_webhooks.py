"""Budget alert webhooks lead to public addresses only: the admin's budget form refuses an internal
URL, and delivery checks again at connection time, also for GATEWAY_BUDGET_ALERT_WEBHOOK_URL."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.conf import settings
from django.utils import timezone

from agents.models import Agent, Budget, BudgetAlert
from agents.services import budget_alert_deliver, budget_alert_record
from gateway_project.outbound import IPAddress

PUBLIC = "93.184.215.14"


@pytest.fixture(autouse=True)
def no_allowed_hosts(monkeypatch):
    """No host allowed internal; a fake DNS in which hooks.example is public."""
    monkeypatch.setitem(settings.GATEWAY, "OUTBOUND_ALLOWED_HOSTS", ())
    answers: dict[str, list[IPAddress]] = {
        "hooks.example": [ipaddress.ip_address(PUBLIC)],
        "localhost": [ipaddress.ip_address("127.0.0.1")],
    }

    def resolve(host: str, port: int) -> list[IPAddress]:
        if host not in answers:
            raise OSError(-2, "Name or service not known")
        return answers[host]

    monkeypatch.setattr("gateway_project.outbound.system_resolve", resolve)


@pytest.fixture
def receiver() -> Iterator[tuple[int, list[bytes]]]:
    """A webhook receiver on 127.0.0.1 that records what it is sent."""
    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server.server_address[1], received
    server.shutdown()
    server.server_close()


def budget_form_data(admin_client, agent: Agent, webhook: str) -> dict[str, str]:
    form = admin_client.get("/admin/agents/budget/add/").context["adminform"].form
    data = {name: form.initial.get(name) or "" for name in form.fields}
    data.update(
        scope="agent", agent=str(agent.pk), period="month", limit_usd="5",
        alert_webhook_url=webhook, is_active="on",
    )  # fmt: skip
    return {k: v for k, v in data.items() if v is not None}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("webhook", "error"),
    [
        (
            "http://10.0.0.5/alerts",
            "The gateway does not call this URL: it is a private address (10.0.0.5). "
            "Internal hosts must be named in GATEWAY_OUTBOUND_ALLOWED_HOSTS.",
        ),
        (
            "http://localhost:8000/alerts",
            "The gateway does not call this URL: it resolves to a loopback address. "
            "Internal hosts must be named in GATEWAY_OUTBOUND_ALLOWED_HOSTS.",
        ),
        (
            "http://169.254.169.254/latest/meta-data/",
            "The gateway does not call this URL: it is a link-local address (169.254.169.254). "
            "Internal hosts must be named in GATEWAY_OUTBOUND_ALLOWED_HOSTS.",
        ),
        (
            "https://nowhere.example/alerts",
            "The gateway does not call this URL: it does not resolve.",
        ),
    ],
)
def test_the_budget_form_refuses_an_internal_webhook(admin_client, webhook, error):
    """An internal (or unresolvable) webhook URL is a form error on the field; nothing is saved."""
    agent = Agent.objects.create(name="coder")
    response = admin_client.post(
        "/admin/agents/budget/add/", budget_form_data(admin_client, agent, webhook)
    )
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert form.errors["alert_webhook_url"] == [error]
    assert not Budget.objects.filter(agent=agent).exists()


@pytest.mark.django_db
def test_the_agent_pages_budget_inline_refuses_an_internal_webhook(admin_client):
    """The budget inline on the agent page validates the same way."""
    agent = Agent.objects.create(name="coder", kind="codex")
    page = f"/admin/agents/agent/{agent.pk}/change/"
    form = admin_client.get(page).context["adminform"].form
    data = {name: form.initial.get(name) or "" for name in form.fields}
    data.update(
        name="coder", kind="codex", allowed_models="[]", allowed_tiers="[]", is_active="on",
        **{
            "budgets-TOTAL_FORMS": "1", "budgets-INITIAL_FORMS": "0",
            "budgets-0-period": "day", "budgets-0-limit_usd": "5", "budgets-0-is_active": "on",
            "budgets-0-alert_webhook_url": "http://192.168.1.10/alerts",
            "api_keys-TOTAL_FORMS": "0", "api_keys-INITIAL_FORMS": "0",
        },
    )  # fmt: skip
    data.pop("project", None)
    response = admin_client.post(page, data)
    assert response.status_code == 200
    assert "it is a private address (192.168.1.10)" in response.content.decode()
    assert not Budget.objects.filter(agent=agent).exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("allowed", "webhook"),
    [
        ((), "https://hooks.example/alerts"),
        (("10.0.0.5",), "http://10.0.0.5/alerts"),
        (("hooks.internal", "localhost"), "http://localhost:8000/alerts"),
    ],
)
def test_public_and_allowed_webhooks_are_saved(admin_client, monkeypatch, allowed, webhook):
    """A public URL, or an internal host the operator allowed, is saved."""
    monkeypatch.setitem(settings.GATEWAY, "OUTBOUND_ALLOWED_HOSTS", allowed)
    agent = Agent.objects.create(name="coder")
    response = admin_client.post(
        "/admin/agents/budget/add/", budget_form_data(admin_client, agent, webhook)
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Budget.objects.get(agent=agent).alert_webhook_url == webhook


def record_alert(budget: Budget) -> BudgetAlert:
    alert = budget_alert_record(
        budget_id=budget.pk,
        period_id=timezone.now().strftime("%Y%m%d"),
        threshold=80,
        used_nano=1_600_000_000,
    )
    assert alert is not None
    return alert


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "is a loopback address (127.0.0.1)"),
        ("localhost", "resolves to a loopback address"),
        ("[::ffff:127.0.0.1]", "is a loopback address (127.0.0.1, inside ::ffff:7f00:1)"),
    ],
)
def test_an_internal_webhook_stored_earlier_is_refused_at_delivery(receiver, host, reason):
    """A budget whose webhook skipped the form (written straight to the database) is refused
    when the alert is delivered: no request, no retry, the reason recorded."""
    port, received = receiver
    budget = Budget.objects.create(
        scope="agent",
        agent=Agent.objects.create(name="coder"),
        limit_usd=Decimal("2"),
        alert_webhook_url=f"http://{host}:{port}/alerts",
    )
    alert = record_alert(budget)
    assert budget_alert_deliver(alert_id=alert.pk, final_attempt=False) is False
    alert.refresh_from_db()
    assert (alert.delivery_error, alert.delivered_at) == (f"refused: {reason}", None)
    assert received == []


@pytest.mark.django_db
def test_the_gateway_wide_webhook_setting_is_checked_at_delivery(receiver, monkeypatch):
    """GATEWAY_BUDGET_ALERT_WEBHOOK_URL is checked like a budget's own webhook."""
    port, received = receiver
    monkeypatch.setitem(
        settings.GATEWAY, "BUDGET_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{port}/alerts"
    )
    budget = Budget.objects.create(
        scope="agent", agent=Agent.objects.create(name="coder"), limit_usd=Decimal("2")
    )
    alert = record_alert(budget)
    assert budget_alert_deliver(alert_id=alert.pk, final_attempt=False) is False
    alert.refresh_from_db()
    assert alert.delivery_error == "refused: is a loopback address (127.0.0.1)"
    assert received == []

    # Named by the operator, the same receiver gets the alert.
    monkeypatch.setitem(settings.GATEWAY, "OUTBOUND_ALLOWED_HOSTS", ("127.0.0.1",))
    assert budget_alert_deliver(alert_id=alert.pk, final_attempt=False) is True
    assert len(received) == 1
