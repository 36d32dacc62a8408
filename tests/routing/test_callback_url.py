"""A callback URL that leads to an internal address is refused when the request is made, over
real HTTP: 400 ``invalid_field`` naming ``callback_url`` and saying why (docs/adr/0015)."""

from __future__ import annotations

import ipaddress

import httpx
import pytest
from django.conf import settings
from factories import new_api_key, sim_setup

PUBLIC = "93.184.215.14"

INTERNAL_URLS = [
    # The spellings of the issue...
    ("http://127.0.0.1:8000/cb", "is a loopback address (127.0.0.1)"),
    ("http://localhost:8000/cb", "resolves to a loopback address"),
    ("http://0.0.0.0:8000/cb", "is an unspecified address (0.0.0.0)"),
    ("http://127.1:8000/cb", "is a loopback address (127.0.0.1)"),
    ("http://2130706433:8000/cb", "is a loopback address (127.0.0.1)"),
    (
        "http://[::ffff:127.0.0.1]:8000/cb",
        "is a loopback address (127.0.0.1, inside ::ffff:7f00:1)",
    ),
    ("http://[::1]:8000/cb", "is a loopback address (::1)"),
    ("http://169.254.169.254/latest/meta-data/", "is a link-local address (169.254.169.254)"),
    # ...octal, hex, other spellings and the private ranges.
    ("http://0177.0.0.1/cb", "is a loopback address (127.0.0.1)"),
    ("http://0x7f.0.0.1/cb", "is a loopback address (127.0.0.1)"),
    ("http://0x7f000001/cb", "is a loopback address (127.0.0.1)"),
    ("http://017700000001/cb", "is a loopback address (127.0.0.1)"),
    ("http://LOCALHOST./cb", "resolves to a loopback address"),
    ("http://agent.localhost/cb", "resolves to a loopback address"),
    ("http://%31%32%37.0.0.1/cb", "is a loopback address (127.0.0.1)"),
    ("http://10.0.0.5/cb", "is a private address (10.0.0.5)"),
    ("http://172.16.0.10/cb", "is a private address (172.16.0.10)"),
    ("http://192.168.1.1/cb", "is a private address (192.168.1.1)"),
    ("http://100.64.0.1/cb", "is a shared (carrier-grade NAT) address (100.64.0.1)"),
    ("http://[fd12:3456::1]/cb", "is a unique-local address (fd12:3456::1)"),
    ("http://[fe80::1%25eth0]/cb", "is a link-local address (fe80::1)"),
    (
        "http://[64:ff9b::a9fe:a9fe]/cb",
        "is a link-local address (169.254.169.254, inside 64:ff9b::a9fe:a9fe)",
    ),
    ("http://224.0.0.1/cb", "is a multicast address (224.0.0.1)"),
]


@pytest.fixture
def key(gateway, simulator, monkeypatch):
    sim_setup(simulator.url)
    monkeypatch.setitem(settings.GATEWAY, "OUTBOUND_ALLOWED_HOSTS", ())
    return new_api_key("callbacker")


def complete(gateway, key: str, **fields: object) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/completion",
        json={"input": "Explain queues", **fields},
        headers={"Authorization": f"Bearer {key}"},
        timeout=20,
    )


def assert_callback_refused(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error", "invalid_field", "callback_url"
    )  # fmt: skip
    assert error["fields"] == {"callback_url": reason}
    assert error["message"] == f"Invalid request: callback_url: {reason}"


@pytest.mark.parametrize(("url", "reason"), INTERNAL_URLS, ids=[u for u, _ in INTERNAL_URLS])
def test_internal_callback_urls_are_refused_at_request_time(gateway, simulator, key, url, reason):
    """Every spelling of an internal address is refused before any upstream call."""
    assert_callback_refused(complete(gateway, key, callback_url=url), reason)
    assert simulator.stats()["calls"] == {}


@pytest.mark.parametrize(
    ("allowed", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000/cb"),
        ("localhost", "http://localhost:8000/cb"),
        ("0.0.0.0", "http://0.0.0.0:8000/cb"),
        ("127.0.0.1", "http://127.1:8000/cb"),
        ("127.0.0.1", "http://2130706433:8000/cb"),
        ("::ffff:127.0.0.1", "http://[::ffff:127.0.0.1]:8000/cb"),
        ("::1", "http://[::1]:8000/cb"),
        ("169.254.169.254", "http://169.254.169.254/latest/meta-data/"),
        ("10.0.0.5", "http://10.0.0.5/cb"),
    ],
)
def test_hosts_in_the_allow_list_may_be_internal(gateway, key, monkeypatch, allowed, url):
    """GATEWAY_OUTBOUND_ALLOWED_HOSTS lets an operator's internal hosts be called."""
    monkeypatch.setitem(settings.GATEWAY, "OUTBOUND_ALLOWED_HOSTS", ("hooks.internal", allowed))
    response = complete(gateway, key, callback_url=url)
    assert response.status_code == 200, response.text


def fake_dns(table: dict[str, list[str]]):
    def resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        if host not in table:
            raise OSError(-2, "Name or service not known")
        return [ipaddress.ip_address(a) for a in table[host]]

    return resolve


def test_names_are_judged_by_every_address_they_resolve_to(gateway, key, monkeypatch):
    """A name is resolved when the request is made: internal answers, no answer, and a public
    answer each get what they deserve."""
    monkeypatch.setattr(
        "gateway_project.outbound.system_resolve",
        fake_dns(
            {
                "rebind.example": ["127.0.0.1"],
                "metadata.example": [PUBLIC, "169.254.169.254"],
                "intranet.example": ["10.1.2.3"],
                "hooks.example": [PUBLIC],
            }
        ),
    )
    assert_callback_refused(
        complete(gateway, key, callback_url="https://rebind.example/cb"),
        "resolves to a loopback address",
    )
    assert_callback_refused(
        complete(gateway, key, callback_url="https://metadata.example/cb"),
        "resolves to a link-local address",
    )
    assert_callback_refused(
        complete(gateway, key, callback_url="https://INTRANET.example./cb"),
        "resolves to a private address",
    )
    assert_callback_refused(
        complete(gateway, key, callback_url="https://nowhere.example/cb"), "does not resolve"
    )
    assert complete(gateway, key, callback_url="https://hooks.example/cb").status_code == 200


def test_requests_without_a_callback_resolve_nothing(gateway, key, monkeypatch):
    """Only requests that carry a callback URL pay for a lookup."""

    def no_dns(host: str, port: int) -> list[ipaddress.IPv4Address]:
        raise AssertionError("no lookup expected")

    monkeypatch.setattr("gateway_project.outbound.system_resolve", no_dns)
    assert complete(gateway, key).status_code == 200
    assert complete(gateway, key, callback_url=f"https://{PUBLIC}/cb").status_code == 200


def test_bad_callback_urls_get_a_clear_400(gateway, key):
    """Other schemes, credentials and malformed URLs: a 400 naming callback_url."""
    for url, reason in [
        ("ftp://agent.example/cb", "must be an http:// or https:// URL"),
        ("http://user:pw@agent.example/cb", "must not carry credentials"),
        (
            "http://agent.example\\@127.0.0.1/",
            "must not contain spaces, control characters or backslashes",
        ),
        ("http://1.2.3.4.5/cb", "has an invalid IPv4 address"),
    ]:
        assert_callback_refused(complete(gateway, key, callback_url=url), reason)


@pytest.mark.parametrize("endpoint", ["/v1/completion", "/v1/chat/completions"])
def test_metadata_cannot_smuggle_a_callback_url(gateway, key, endpoint):
    """The review queue takes the callback URL from the request's metadata: a metadata
    ``callback_url`` would skip the check, so it is refused on both endpoints."""
    body: dict[str, object] = {"metadata": {"callback_url": "http://127.0.0.1:6379/"}}
    if endpoint == "/v1/completion":
        body["input"] = "Explain queues"
    else:
        body.update(model="fast", messages=[{"role": "user", "content": "Explain queues"}])
    response = httpx.post(
        f"{gateway.url}{endpoint}", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_field", "metadata")
    assert "callback_url" in error["fields"]["metadata"]
