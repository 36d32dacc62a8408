"""Budget alerts end to end: traffic takes a budget past 50, 80 and 100 %, and a real Celery
worker records each alert and POSTs it, signed, to the budget's webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.utils import timezone
from factories import sim_setup

from agents.models import Agent, Budget, BudgetAlert
from agents.services import api_key_create
from agents.tasks import budget_alert_raise
from gateway_project.celery import app as celery_app
from gateway_project.webhooks import webhook_secret
from routing.models import AuditRecord

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def alert_worker(gateway) -> Iterator[str]:
    """A Celery worker on the test database and broker, on a queue of its own that this test
    publishes to."""
    from conftest import test_database_url

    queue = f"alerts-test-{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "GATEWAY_DATA_DIR": str(settings.DATA_DIR),
        # The tests' webhook receivers listen on loopback: the operator's allow-list names it.
        "GATEWAY_OUTBOUND_ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
    }
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    else:
        env.pop("REDIS_URL", None)
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "gateway_project", "worker",
         "--pool", "solo", "-c", "1", "-l", "warning", "-Q", queue,
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    default_queue = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = queue
    yield queue
    celery_app.conf.task_default_queue = default_queue
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    received: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append((dict(self.headers.items()), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/budget-alerts", received
    server.shutdown()
    server.server_close()


def test_alerts_at_50_80_and_100_percent_reach_the_webhook_through_the_worker(
    gateway, simulator, alert_worker, webhook, caplog
):
    """Spend passing 50 and 80 % and reaching 100 % (the limit lowered below it) gives three
    signed webhook posts and three alert records, each with the settled spend and reservations."""
    url, received = webhook
    sim_setup(simulator.url)
    simulator.configure("sim-medium", words=400)
    agent = Agent.objects.create(name="spender")
    key = api_key_create(agent_name="spender")[1]
    budget = Budget.objects.create(
        scope="agent", agent=agent, limit_usd=Decimal("0.0014"), alert_webhook_url=url
    )

    def ask(i: int) -> int:
        return httpx.post(
            f"{gateway.url}/v1/completion",
            json={"input": f"Explain queues {i}", "model": "medium", "max_tokens": 200},
            headers={"Authorization": f"Bearer {key}"},
            timeout=20,
        ).status_code

    assert [ask(i) for i in range(4)] == [200, 200, 200, 429]
    budget.limit_usd = Decimal("0.0012")
    budget.save()
    assert ask(4) == 429
    deadline = time.monotonic() + 45
    while len(received) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    payloads = []
    for headers, body in received:
        expected = hmac.new(webhook_secret(), body, hashlib.sha256).hexdigest()
        assert headers["X-Gateway-Signature"] == f"sha256={expected}"
        payloads.append(json.loads(body))
    assert sorted(p["threshold_percent"] for p in payloads) == [50, 80, 100]
    assert {p["budget"]["id"] for p in payloads} == {budget.pk}
    gateway.flush_audit()
    spent = sum(r.cost_usd for r in AuditRecord.objects.filter(agent="spender"))
    last = next(p for p in payloads if p["threshold_percent"] == 100)
    assert Decimal(last["spent_usd"]) == spent and Decimal(last["reserved_usd"]) == 0
    alerts = BudgetAlert.objects.filter(budget=budget)
    assert sorted(a.threshold for a in alerts) == [50, 80, 100]
    assert all(a.delivered_at is not None for a in alerts)
    assert all(a.spent_usd >= a.threshold * a.limit_usd / 100 for a in alerts)
    assert "BUDGET ALERT: the daily agent spender budget reached 100 %" in caplog.text


def test_the_worker_refuses_an_internal_webhook_and_does_not_retry(gateway, alert_worker, webhook):
    """A budget whose webhook reaches the loopback receiver through a host the worker's
    allow-list does not name (written straight to the database): the worker records the alert,
    refuses the POST with the reason, sends nothing and does not try again."""
    url, received = webhook
    budget = Budget.objects.create(
        scope="agent",
        agent=Agent.objects.create(name="spender"),
        limit_usd=Decimal("1"),
        alert_webhook_url=url.replace("127.0.0.1", "localhost"),
    )
    budget_alert_raise.delay(budget.pk, timezone.now().strftime("%Y%m%d"), 80, 800_000_000)
    deadline = time.monotonic() + 30
    alert = None
    while time.monotonic() < deadline:
        alert = BudgetAlert.objects.filter(budget=budget).exclude(delivery_error="").first()
        if alert is not None:
            break
        time.sleep(0.1)
    assert alert is not None, "the worker recorded no refused alert"
    assert (alert.delivery_error, alert.delivered_at) == (
        "refused: resolves to a loopback address", None
    )  # fmt: skip
    time.sleep(1.5)  # a retry would come after about a second (retry_backoff)
    assert received == []
