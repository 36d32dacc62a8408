"""Signed webhook delivery: vetted at connection time, pinned to the vetted address, no redirects."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from django.conf import settings

from gateway_project.outbound import IPAddress
from gateway_project.webhooks import webhook_post, webhook_secret

PUBLIC = "93.184.215.14"


class Dns:
    """A resolver whose answers change between lookups, as a rebinding attacker's does."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.lookups: list[str] = []

    def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.lookups.append(host)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return [ipaddress.ip_address(a) for a in answer]


class Recorder:
    """An httpx transport that records what would have been sent, and answers 204."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return httpx.Response(204)


@pytest.fixture(autouse=True)
def no_allowed_hosts(monkeypatch):
    monkeypatch.setitem(settings.GATEWAY, "OUTBOUND_ALLOWED_HOSTS", ())


@pytest.fixture
def receiver() -> Iterator[tuple[int, list[tuple[str, dict[str, str], bytes]], list[int]]]:
    """A webhook receiver on 127.0.0.1: records (path, headers, body); answers ``statuses``."""
    received: list[tuple[str, dict[str, str], bytes]] = []
    statuses: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append((self.path, dict(self.headers.items()), body))
            self.send_response(statuses.pop(0) if statuses else 200)
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server.server_address[1], received, statuses
    server.shutdown()
    server.server_close()


def test_a_rebinding_name_is_refused_at_delivery():
    """Public when the URL was accepted, loopback now: refused, and nothing is sent."""
    dns = Dns([PUBLIC], ["127.0.0.1"])
    from gateway_project.outbound import outbound_target, resolve_target

    accepted = resolve_target(outbound_target("https://hooks.example/v"), resolver=dns)
    assert accepted == (ipaddress.ip_address(PUBLIC),)
    recorder = Recorder()
    delivery = webhook_post(
        url="https://hooks.example/v", payload={"a": 1}, user_agent="test",
        resolver=dns, transport=recorder.transport,
    )  # fmt: skip
    assert (delivery.outcome, delivery.error) == (
        "refused",
        "refused: resolves to a loopback address",
    )
    assert recorder.requests == []


def test_delivery_connects_to_the_vetted_address_with_the_hosts_name():
    """The request goes to the address vetted (one lookup); the name travels in Host and in TLS
    (SNI and the certificate check), so a second DNS answer cannot change the target."""
    dns = Dns([PUBLIC], ["127.0.0.1"])
    recorder = Recorder()
    delivery = webhook_post(
        url="https://Hooks.Example:8443/verdicts?agent=a%20b", payload={"a": 1},
        user_agent="llm-gateway-test", resolver=dns, transport=recorder.transport,
    )  # fmt: skip
    assert delivery.delivered and dns.lookups == ["hooks.example"]
    (request,) = recorder.requests
    assert str(request.url) == f"https://{PUBLIC}:8443/verdicts?agent=a%20b"
    assert request.headers["host"] == "hooks.example:8443"
    assert request.extensions["sni_hostname"] == "hooks.example"
    expected = hmac.new(webhook_secret(), request.content, hashlib.sha256).hexdigest()
    assert request.headers["x-gateway-signature"] == f"sha256={expected}"
    assert request.headers["user-agent"] == "llm-gateway-test"
    assert json.loads(request.content) == {"a": 1}


def test_an_allowed_internal_name_is_pinned_to_its_vetted_address(monkeypatch, receiver):
    """A name the system resolver does not know reaches the receiver only through the address
    the injected resolver vetted: the connection never resolves the name again."""
    port, received, _ = receiver
    monkeypatch.setitem(settings.GATEWAY, "OUTBOUND_ALLOWED_HOSTS", ("hooks.internal",))
    dns = Dns(["127.0.0.1"])
    delivery = webhook_post(
        url=f"http://hooks.internal:{port}/alerts?x=1", payload={"b": 2}, user_agent="t",
        resolver=dns,
    )  # fmt: skip
    assert delivery.delivered, delivery.error
    ((path, headers, body),) = received
    assert (path, headers["Host"], json.loads(body)) == (
        "/alerts?x=1",
        f"hooks.internal:{port}",
        {"b": 2},
    )


def test_the_next_vetted_address_is_tried_when_one_refuses_the_connection(monkeypatch, receiver):
    """Nothing was sent to an address that refused the connection, so the next one is tried."""
    port, received, _ = receiver
    monkeypatch.setitem(settings.GATEWAY, "OUTBOUND_ALLOWED_HOSTS", ("hooks.internal",))
    dns = Dns(["127.0.0.2", "127.0.0.1"])  # nothing listens on 127.0.0.2
    delivery = webhook_post(
        url=f"http://hooks.internal:{port}/", payload={}, user_agent="t", resolver=dns
    )
    assert delivery.delivered, delivery.error
    assert len(received) == 1


def test_redirects_are_not_followed(monkeypatch, receiver):
    """A 3xx is a failed delivery; its Location is never requested."""
    port, received, statuses = receiver
    statuses.append(307)
    monkeypatch.setitem(settings.GATEWAY, "OUTBOUND_ALLOWED_HOSTS", ("127.0.0.1",))
    delivery = webhook_post(url=f"http://127.0.0.1:{port}/", payload={}, user_agent="t")
    assert (delivery.outcome, delivery.error) == ("failed", "HTTP 307")
    assert len(received) == 1


def test_a_name_without_address_is_a_failure_to_retry():
    """No address now is not a refusal: DNS may answer later."""
    delivery = webhook_post(
        url="https://nowhere.example/", payload={}, user_agent="t", resolver=Dns([])
    )
    assert (delivery.outcome, delivery.error) == ("failed", "the host does not resolve")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/",
        "http://[::ffff:127.0.0.1]:9/",
        "http://localhost:9/",
        "ftp://x.example/",
    ],
)
def test_refused_urls_are_never_requested(url):
    """Internal literals, loopback names and other schemes: refused, no request."""
    recorder = Recorder()
    delivery = webhook_post(url=url, payload={}, user_agent="t", transport=recorder.transport)
    assert delivery.outcome == "refused" and delivery.error.startswith("refused: ")
    assert recorder.requests == []
