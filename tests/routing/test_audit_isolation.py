"""Issue 15, over real HTTP: answers a database cannot store, a database that goes away and a full
audit queue never leave an answered request without its record, its spend and its review item."""

from __future__ import annotations

import signal
import time

import httpx
import pytest
from audit_helpers import database_down
from factories import new_api_key, sim_setup

from agents.models import SpendRollup
from reviews.models import ReviewItem
from routing.audit import audit_writer
from routing.models import AuditDeadLetter, AuditRecord
from scoring.services import tunable_set

FFFD = "\ufffd"


@pytest.fixture
def client(gateway, simulator):
    sim_setup(simulator.url)
    # Every answer gets a review item, so the test sees that none is lost either.
    tunable_set(name="sample_approved", value=1)
    tunable_set(name="sample_warning", value=1)
    key = new_api_key("claude-code")
    with httpx.Client(
        base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}, timeout=20
    ) as c:
        yield c


def ask(client: httpx.Client, text: str = "Explain backpressure") -> httpx.Response:
    return client.post("/v1/completion", json={"caller": "issue-15", "input": text})


def chat(client: httpx.Client, text: str) -> httpx.Response:
    return client.post(
        "/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": text}]},
    )


def test_answers_with_nul_do_not_stop_the_audit_log(client, gateway):
    """The issue's scenario: two answers carrying NUL, then 32 ordinary requests; all 34 have
    their records (the NUL as U+FFFD), their spend rollups and their review items."""
    poisoned = [
        ask(client, "Say it [[sim reply=first%00answer]]"),
        chat(client, "Say it [[sim reply=second%00answer%00]]"),
    ]
    assert [r.status_code for r in poisoned] == [200, 200]
    assert poisoned[0].json()["output"] == "first\x00answer"
    ids = [poisoned[0].json()["id"], poisoned[1].headers["X-Gateway-Request-Id"]]
    for n in range(32):
        response = ask(client, f"Question {n}") if n % 2 else chat(client, f"Question {n}")
        assert response.status_code == 200, response.text
        ids.append(response.headers.get("X-Gateway-Request-Id") or response.json()["id"])
    gateway.flush_audit()

    records = {r.request_id: r for r in AuditRecord.objects.filter(request_id__in=ids)}
    assert len(records) == 34
    assert records[ids[0]].output == f"first{FFFD}answer"
    assert records[ids[1]].output == f"second{FFFD}answer{FFFD}"
    assert not any("audit_reduced" in r.metadata for r in records.values())
    assert ReviewItem.objects.filter(audit_record__request_id__in=ids).count() == 34
    rollups = SpendRollup.objects.filter(agent="claude-code")
    assert sum(r.requests for r in rollups) == 34
    assert sum(r.tokens_out for r in rollups) == sum(r.tokens_out for r in records.values())
    assert audit_writer.pending == 0 and not AuditDeadLetter.objects.exists()


def test_a_caller_longer_than_its_column_is_recorded(client, gateway):
    """The OpenAI ``user`` field takes 200 characters, the audit's ``caller`` column 100: the
    record keeps the first 100 instead of stopping the audit log (PostgreSQL refused the batch)."""
    response = client.post(
        "/v1/chat/completions",
        json={"model": "auto", "user": "u" * 150, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 200, response.text
    then = ask(client)
    gateway.flush_audit()
    record = AuditRecord.objects.get(request_id=response.headers["X-Gateway-Request-Id"])
    assert record.caller == "u" * 100 and "audit_reduced" not in record.metadata
    assert AuditRecord.objects.filter(request_id=then.json()["id"]).exists()


def test_a_full_audit_queue_refuses_requests_and_every_answer_is_recorded(
    client, gateway, settings
):
    """While the database is down the queue fills; at its bound requests get 503 audit_backlog
    with Retry-After, /health says so and /health/ready fails; once the database is back every
    answered request has its record and no refused one has."""
    settings.GATEWAY = {**settings.GATEWAY, "AUDIT_MAX_PENDING": 3, "API_KEY_CACHE_S": 60}
    assert ask(client).status_code == 200  # the key is cached from here on
    gateway.flush_audit()
    with database_down(audit_writer):
        responses = [ask(client, f"Question {n}") for n in range(3)]
        responses += [chat(client, "Question 3"), ask(client, "Question 4")]
        assert [r.status_code for r in responses] == [200, 200, 200, 503, 503]
        for refused in responses[3:]:
            error = refused.json()["error"]
            assert error["code"] == "audit_backlog" and error["type"] == "service_unavailable"
            assert int(refused.headers["Retry-After"]) >= 1
        health = httpx.get(f"{gateway.url}/health").json()
        assert health["status"] == "degraded"
        assert health["audit"]["status"] == "full" and health["audit"]["pending"] == 3
        ready = httpx.get(f"{gateway.url}/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["audit"] == "error: audit queue full (3 records waiting)"
    gateway.flush_audit()

    answered = {r.json()["id"] for r in responses if r.status_code == 200}
    recorded = set(AuditRecord.objects.values_list("request_id", flat=True))
    assert answered < recorded and len(recorded) == 4  # and the request before the outage
    assert ReviewItem.objects.count() == 4
    assert not AuditDeadLetter.objects.exists()
    assert httpx.get(f"{gateway.url}/health").json()["audit"]["status"] == "ok"
    assert httpx.get(f"{gateway.url}/health/ready").status_code == 200


def test_health_reports_a_failing_writer_and_metrics_export_it(client, gateway, settings):
    """With the database gone /health is degraded with the writer's failure (since when, the
    error's class, no message), /health/ready fails after a few flush intervals, and /metrics
    exports the queue length and the failures; all of it clears when the database is back."""
    settings.GATEWAY = {**settings.GATEWAY, "API_KEY_CACHE_S": 60}
    assert ask(client).status_code == 200
    gateway.flush_audit()
    audit = httpx.get(f"{gateway.url}/health").json()["audit"]
    assert audit.keys() == {"status", "pending", "max_pending", "failing_since", "last_error",
                            "last_error_at", "dead_letters"}  # fmt: skip
    assert (audit["status"], audit["pending"], audit["max_pending"]) == ("ok", 0, 50_000)
    assert audit["failing_since"] is None and audit["dead_letters"] == 0
    with database_down(audit_writer):
        answered = ask(client)
        assert answered.status_code == 200
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            ready = httpx.get(f"{gateway.url}/health/ready")
            if ready.json()["checks"]["audit"] != "ok":
                break
            time.sleep(0.05)
        assert ready.status_code == 503
        assert ready.json()["checks"]["audit"].startswith("error: audit writes failing for ")
        assert ready.json()["checks"]["audit"].endswith("(OperationalError)")
        audit = httpx.get(f"{gateway.url}/health").json()["audit"]
        assert audit["status"] == "failing" and audit["pending"] == 1
        assert audit["last_error"] == "OperationalError" and audit["failing_since"]
        metrics = httpx.get(f"{gateway.url}/metrics").text
        assert "gateway_audit_pending 1.0" in metrics
        assert 'gateway_audit_write_failures_total{kind="unavailable"}' in metrics
    gateway.flush_audit()
    audit = httpx.get(f"{gateway.url}/health").json()["audit"]
    assert audit["status"] == "ok" and audit["failing_since"] is None and audit["pending"] == 0
    assert audit["last_error"] == "OperationalError"  # kept, with when, for whoever looks later
    assert httpx.get(f"{gateway.url}/health/ready").status_code == 200
    assert AuditRecord.objects.filter(request_id=answered.json()["id"]).exists()
    assert "gateway_audit_pending 0.0" in httpx.get(f"{gateway.url}/metrics").text


def test_the_pending_gauge_adds_up_every_gateway_process(start_gateway, simulator, tmp_path):
    """In Prometheus' multiprocess mode, /metrics of any process reports the records queued in
    all of them; a process that stopped (and wrote its queue) counts for nothing."""
    sim_setup(simulator.url)
    key = new_api_key()
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "GATEWAY_AUDIT_FLUSH_INTERVAL_S": "3600",  # the records stay queued
        "GATEWAY_AUDIT_BATCH_SIZE": "100000",
    }
    process_a, url_a = start_gateway(**env)
    _, url_b = start_gateway(**env)
    for url, n in ((url_a, 2), (url_b, 3)):
        for _ in range(n):
            response = httpx.post(
                f"{url}/v1/completion", json={"input": "hi"},
                headers={"Authorization": f"Bearer {key}"}, timeout=20,
            )  # fmt: skip
            assert response.status_code == 200, response.text
    for url in (url_a, url_b):
        assert "\ngateway_audit_pending 5.0\n" in httpx.get(f"{url}/metrics").text
    process_a.send_signal(signal.SIGTERM)
    assert process_a.wait(timeout=30) in (0, -signal.SIGTERM)
    assert "\ngateway_audit_pending 3.0\n" in httpx.get(f"{url_b}/metrics").text
    assert AuditRecord.objects.count() == 2  # process A's, written at its shutdown
