"""Verdict callbacks: signed POSTs to the agent's URL, retried, delivered by a real Celery worker,
never to an internal address (checked again at connection time: docs/adr/0015)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from factories import new_api_key, sim_setup
from review_helpers import queued_item, reviewer, worker_database_url

from gateway_project.celery import app as celery_app
from gateway_project.webhooks import webhook_secret
from reviews import tasks
from reviews.callbacks import CallbackRetryable, review_verdict_deliver
from reviews.models import ReviewItem
from reviews.services import review_item_decide

ROOT = Path(__file__).resolve().parents[2]
# The callback receivers' host, in GATEWAY_OUTBOUND_ALLOWED_HOSTS of this process and the worker.
RECEIVER_HOST = "127.0.0.1"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class CallbackServer:
    """An agent's callback endpoint on loopback: answers with ``statuses`` in turn, then 200."""

    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    url: str = ""

    def wait_for(self, count: int, timeout: float = 45.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.received) >= count, f"{len(self.received)} callbacks, wanted {count}"
        return self.received


@pytest.fixture
def callback_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[CallbackServer]:
    """The receiver listens on 127.0.0.1, which the gateway calls only because the operator's
    allow-list names it (as the worker's environment does)."""
    monkeypatch.setitem(settings.GATEWAY, "OUTBOUND_ALLOWED_HOSTS", (RECEIVER_HOST,))
    server_state = CallbackServer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            server_state.received.append(Received(dict(self.headers.items()), body))
            status = server_state.statuses.pop(0) if server_state.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_state.url = f"http://127.0.0.1:{httpd.server_address[1]}/verdicts"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server_state
    httpd.shutdown()
    httpd.server_close()


def assert_signed(received: Received) -> dict[str, object]:
    """The signature header is the HMAC-SHA256 of the exact body; returns the body's JSON."""
    headers = {k.lower(): v for k, v in received.headers.items()}
    expected = hmac.new(webhook_secret(), received.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-gateway-signature"], f"sha256={expected}")
    assert abs(int(headers["x-gateway-timestamp"]) - time.time()) < 120
    assert headers["content-type"] == "application/json"
    data: dict[str, object] = json.loads(received.body)
    return data


def decided_item(url: str, decision: str = "reject", **kwargs: str) -> ReviewItem:
    item = queued_item(metadata={"callback_url": url})
    kwargs.setdefault("reason", "the total is wrong")
    return review_item_decide(item_id=item.pk, actor=reviewer(), decision=decision, **kwargs)  # type: ignore[arg-type]  # a str, not the Decision literal


# --- the delivery service, called directly ----------------------------------------------------


@pytest.mark.django_db
def test_delivery_posts_the_signed_verdict(callback_server):
    """A 2xx answer: the verdict JSON arrives signed and the callback is marked delivered."""
    item = decided_item(callback_server.url, "correct", corrected_output="12", reason="unit")
    assert review_verdict_deliver(item_id=item.pk, final_attempt=False) == "delivered"
    data = assert_signed(callback_server.wait_for(1)[0])
    assert data == {
        "id": item.request_id,
        "status": "corrected",
        "verdict": "correct",
        "corrected_output": "12",
        "reason": "unit",
        "decided_at": item.decided_at.isoformat() if item.decided_at else None,
    }
    item.refresh_from_db()
    assert (item.callback_state, item.callback_attempts) == ("delivered", 1)


@pytest.mark.django_db
def test_non_2xx_is_retried_then_failed_on_the_last_attempt(callback_server):
    """A 500 raises CallbackRetryable (state stays pending); on the last attempt it is failed."""
    callback_server.statuses = [500, 503]
    item = decided_item(callback_server.url)
    with pytest.raises(CallbackRetryable):
        review_verdict_deliver(item_id=item.pk, final_attempt=False)
    item.refresh_from_db()
    assert (item.callback_state, item.callback_attempts, item.callback_error) == (
        "pending", 1, "HTTP 500"
    )  # fmt: skip
    assert review_verdict_deliver(item_id=item.pk, final_attempt=True) == "failed"
    item.refresh_from_db()
    assert (item.callback_state, item.callback_attempts, item.callback_error) == (
        "failed", 2, "HTTP 503"
    )  # fmt: skip


@pytest.mark.django_db
def test_unreachable_callback_is_retryable(monkeypatch):
    """A refused connection counts as a failed attempt to retry, not a crash."""
    monkeypatch.setitem(settings.GATEWAY, "OUTBOUND_ALLOWED_HOSTS", (RECEIVER_HOST,))
    item = decided_item("http://127.0.0.1:9/nobody-listens")
    with pytest.raises(CallbackRetryable):
        review_verdict_deliver(item_id=item.pk, final_attempt=False)
    item.refresh_from_db()
    assert item.callback_state == "pending" and item.callback_attempts == 1


@pytest.mark.django_db
def test_refused_url_fails_without_a_request(callback_server):
    """A callback URL with credentials is never called: the callback fails at once."""
    bad = callback_server.url.replace("http://", "http://user:pw@")
    item = decided_item(bad)
    assert review_verdict_deliver(item_id=item.pk, final_attempt=False) == "failed"
    item.refresh_from_db()
    assert item.callback_error.startswith("refused:") and item.callback_attempts == 0
    assert callback_server.received == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("spelling", "reason"),
    [
        ("localhost", "resolves to a loopback address"),
        ("[::ffff:127.0.0.1]", "is a loopback address (127.0.0.1, inside ::ffff:7f00:1)"),
        ("2130706433", "is a loopback address (127.0.0.1)"),
    ],
)
def test_internal_urls_stored_earlier_are_refused_at_delivery(
    callback_server, monkeypatch, spelling, reason
):
    """An internal URL that is not allow-listed (stored as if an earlier check had passed it) is
    refused at delivery: no request, callback failed at once, nothing to retry."""
    monkeypatch.setitem(settings.GATEWAY, "OUTBOUND_ALLOWED_HOSTS", ("hooks.internal",))
    item = decided_item(callback_server.url.replace(RECEIVER_HOST, spelling))
    assert review_verdict_deliver(item_id=item.pk, final_attempt=False) == "failed"
    item.refresh_from_db()
    assert (item.callback_error, item.callback_attempts) == (f"refused: {reason}", 0)
    assert callback_server.received == []


def test_a_name_that_rebinds_to_loopback_is_refused_at_delivery(
    gateway, simulator, callback_server, monkeypatch
):
    """DNS rebinding: the callback host answers a public address when the request is made (it is
    accepted over HTTP) and loopback at delivery: the delivery is refused, the loopback receiver
    gets nothing, and the callback is failed for good."""
    monkeypatch.setitem(settings.GATEWAY, "OUTBOUND_ALLOWED_HOSTS", ())
    monkeypatch.setattr(tasks.deliver_verdict, "delay", lambda item_id: None)
    answers = {"hooks.example": [ipaddress.ip_address("93.184.215.14")]}
    monkeypatch.setattr("gateway_project.outbound.system_resolve", lambda host, port: answers[host])
    sim_setup(simulator.url)
    for model in ("sim-fast", "sim-medium", "sim-large"):
        simulator.configure(model, quality="bad")
    url = callback_server.url.replace(RECEIVER_HOST, "hooks.example")
    response = httpx.post(
        f"{gateway.url}/v1/completion",
        json={"input": "Summarise the tides report", "callback_url": url},
        headers={"Authorization": f"Bearer {new_api_key('rebinder')}"},
        timeout=20,
    )
    assert response.status_code == 200 and response.json()["status"] == "pending_review"
    gateway.flush_audit()
    item = ReviewItem.objects.get(audit_record__request_id=response.json()["id"])
    assert item.callback_url == url
    item = review_item_decide(item_id=item.pk, actor=reviewer(), decision="approve")

    answers["hooks.example"] = [ipaddress.ip_address(RECEIVER_HOST)]
    assert review_verdict_deliver(item_id=item.pk, final_attempt=False) == "failed"
    item.refresh_from_db()
    assert item.callback_error == "refused: resolves to a loopback address"
    assert item.callback_attempts == 0
    assert callback_server.received == []


# --- end to end: the decision enqueues the task, a real worker delivers it ----------------------


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    queue: str


@pytest.fixture(scope="module")
def celery_worker(django_db_setup, django_db_blocker) -> Iterator[Worker]:
    """A Celery worker process on the test database and the test's broker, on its own queue
    (so tasks left by other runs or tests are not its business)."""
    queue = f"reviews-test-{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "DATABASE_URL": worker_database_url(),
        "GATEWAY_DATA_DIR": str(settings.DATA_DIR),
        "GATEWAY_OUTBOUND_ALLOWED_HOSTS": RECEIVER_HOST,
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
    yield Worker(process, queue)
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def worker_queue(celery_worker: Worker) -> Iterator[str]:
    """Tasks published by this test go to the test worker's queue."""
    assert celery_worker.process.poll() is None, "the Celery worker exited"
    default_queue = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = celery_worker.queue
    yield celery_worker.queue
    celery_app.conf.task_default_queue = default_queue


def wait_for_state(item: ReviewItem, state: str, timeout: float = 30.0) -> ReviewItem:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item.refresh_from_db()
        if item.callback_state == state:
            return item
        time.sleep(0.1)
    raise AssertionError(f"callback_state is {item.callback_state!r}, not {state!r}")


@pytest.mark.django_db(transaction=True)
def test_worker_delivers_the_verdict_after_a_decision(worker_queue, callback_server):
    """Deciding an item enqueues the task on commit; the worker POSTs the signed verdict."""
    item = decided_item(callback_server.url)
    assert item.callback_state == "pending"
    data = assert_signed(callback_server.wait_for(1)[0])
    assert (data["id"], data["status"], data["verdict"], data["reason"]) == (
        item.request_id, "rejected", "reject", "the total is wrong"
    )  # fmt: skip
    item = wait_for_state(item, "delivered")
    assert item.callback_attempts == 1


@pytest.mark.django_db(transaction=True)
def test_worker_retries_after_a_server_error(worker_queue, callback_server):
    """A 500 from the agent is retried with backoff; the second attempt is delivered."""
    callback_server.statuses = [500]
    item = decided_item(callback_server.url, "approve")
    first, second = callback_server.wait_for(2)
    assert first.body == second.body
    assert_signed(second)
    item = wait_for_state(item, "delivered")
    assert item.callback_attempts == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("spelling", "reason"),
    [
        ("localhost", "resolves to a loopback address"),
        ("[::ffff:127.0.0.1]", "is a loopback address (127.0.0.1, inside ::ffff:7f00:1)"),
    ],
)
def test_worker_refuses_an_internal_url_and_does_not_retry(
    worker_queue, callback_server, spelling, reason
):
    """A decided item whose stored callback URL leads to the receiver through a host the worker's
    allow-list does not name: the worker refuses it, the receiver gets nothing, the callback
    is failed with the reason and never retried."""
    item = decided_item(callback_server.url.replace(RECEIVER_HOST, spelling))
    item = wait_for_state(item, "failed")
    assert (item.callback_error, item.callback_attempts) == (f"refused: {reason}", 0)
    time.sleep(1.5)  # a retry would come after about a second (retry_backoff)
    item.refresh_from_db()
    assert (item.callback_state, item.callback_attempts) == ("failed", 0)
    assert callback_server.received == []
