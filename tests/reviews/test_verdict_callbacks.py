"""Verdict callbacks: signed POSTs to the agent's URL, retried, delivered by a real Celery worker."""

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
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.conf import settings
from review_helpers import queued_item, reviewer, worker_database_url

from gateway_project.celery import app as celery_app
from reviews.models import ReviewItem
from reviews.services import (
    CallbackRetryable,
    callback_secret,
    callback_url_problem,
    review_item_decide,
    review_verdict_deliver,
)

ROOT = Path(__file__).resolve().parents[2]


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
def callback_server() -> Iterator[CallbackServer]:
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
    expected = hmac.new(callback_secret(), received.body, hashlib.sha256).hexdigest()
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
def test_unreachable_callback_is_retryable():
    """A refused connection counts as a failed attempt to retry, not a crash."""
    item = decided_item("http://127.0.0.1:9/nobody-listens")
    with pytest.raises(CallbackRetryable):
        review_verdict_deliver(item_id=item.pk, final_attempt=False)
    item.refresh_from_db()
    assert item.callback_state == "pending" and item.callback_attempts == 1


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/verdicts",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        "http://user:secret@127.0.0.1:8000/cb",
        "https://token@agent.example/cb",
        "http:///no-host",
        "http://127.0.0.1:99999/bad-port",
        "/relative/path",
    ],
)
def test_refused_callback_urls(url):
    """Only absolute http(s) URLs without credentials are called."""
    assert callback_url_problem(url) is not None


def test_plain_http_urls_are_accepted():
    """A plain http(s) URL on loopback or elsewhere is acceptable."""
    assert callback_url_problem("http://127.0.0.1:8123/verdicts?agent=a") is None
    assert callback_url_problem("https://agent.example/hooks/verdict") is None


@pytest.mark.django_db
def test_refused_url_fails_without_a_request(callback_server):
    """A callback URL with credentials is never called: the callback fails at once."""
    bad = callback_server.url.replace("http://", "http://user:pw@")
    item = decided_item(bad)
    assert review_verdict_deliver(item_id=item.pk, final_attempt=False) == "failed"
    item.refresh_from_db()
    assert item.callback_error.startswith("refused:") and item.callback_attempts == 0
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
