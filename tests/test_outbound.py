"""The outbound address policy: which URLs the gateway may call, in every spelling of a host."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence

import pytest
from django.conf import settings

from gateway_project import outbound
from gateway_project.outbound import (
    HostUnresolved,
    IPAddress,
    OutboundRefused,
    address_problem,
    aresolve_target,
    outbound_target,
    outbound_url_error,
    resolve_target,
)

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"


@pytest.fixture
def allow(monkeypatch):
    """Set GATEWAY_OUTBOUND_ALLOWED_HOSTS for one test."""

    def set_hosts(*hosts: str) -> None:
        monkeypatch.setitem(settings.GATEWAY, "OUTBOUND_ALLOWED_HOSTS", hosts)

    set_hosts()
    return set_hosts


def fake_dns(table: dict[str, Sequence[str]]) -> outbound.Resolver:
    def resolve(host: str, port: int) -> list[IPAddress]:
        if host not in table:
            raise OSError(-2, "Name or service not known")
        return [ipaddress.ip_address(a) for a in table[host]]

    return resolve


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.255.1.2", "a loopback address"),
        ("0.0.0.0", "an unspecified address"),
        ("0.1.2.3", "an unspecified address"),
        ("10.0.0.5", "a private address"),
        ("172.16.3.4", "a private address"),
        ("172.31.255.255", "a private address"),
        ("192.168.1.1", "a private address"),
        ("100.64.0.1", "a shared (carrier-grade NAT) address"),
        ("169.254.169.254", "a link-local address"),
        ("192.0.0.8", "a reserved address"),
        ("192.0.2.10", "a documentation address"),
        ("198.51.100.7", "a documentation address"),
        ("203.0.113.9", "a documentation address"),
        ("198.18.0.1", "a benchmarking address"),
        ("224.0.0.1", "a multicast address"),
        ("239.255.255.250", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("255.255.255.255", "a broadcast address"),
        ("::", "an unspecified address"),
        ("::1", "a loopback address"),
        ("fe80::1", "a link-local address"),
        ("fd00::1", "a unique-local address"),
        ("fc12:3456::1", "a unique-local address"),
        ("fec0::1", "a site-local address"),
        ("ff02::1", "a multicast address"),
        ("2001:db8::1", "a documentation address"),
        ("3fff::1", "a documentation address"),
        ("2001:2::1", "a benchmarking address"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "a reserved address"),  # Teredo
        ("100::1", "a reserved address"),
        ("64:ff9b:1::1", "a reserved address"),
        ("4000::1", "a reserved address"),
        # IPv6 addresses that carry an IPv4 address are judged by it.
        ("::ffff:127.0.0.1", "a loopback address"),
        ("::ffff:169.254.169.254", "a link-local address"),
        ("::127.0.0.1", "a loopback address"),  # IPv4-compatible
        ("::ffff:0:10.0.0.1", "a private address"),  # IPv4-translated
        ("64:ff9b::7f00:1", "a loopback address"),  # NAT64
        ("64:ff9b::a9fe:a9fe", "a link-local address"),
        ("2002:7f00:1::", "a loopback address"),  # 6to4
        ("2002:c0a8:101::1", "a private address"),
    ],
)
def test_non_public_addresses_are_named(address, problem):
    """Every special-purpose range is refused with the name of what it is."""
    assert address_problem(ipaddress.ip_address(address)) == problem


@pytest.mark.parametrize(
    "address", [PUBLIC_V4, "8.8.8.8", "1.1.1.1", PUBLIC_V6, "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_public_addresses_are_allowed(address):
    """Global unicast addresses (also IPv4 ones carried in IPv6) are fine to call."""
    assert address_problem(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/cb", "is a loopback address (127.0.0.1)"),
        ("http://127.1/cb", "is a loopback address (127.0.0.1)"),
        ("http://2130706433/cb", "is a loopback address (127.0.0.1)"),
        ("http://0177.0.0.1/cb", "is a loopback address (127.0.0.1)"),
        ("http://0x7f.1/cb", "is a loopback address (127.0.0.1)"),
        ("http://0x7f000001/cb", "is a loopback address (127.0.0.1)"),
        ("http://0/cb", "is an unspecified address (0.0.0.0)"),
        ("http://0.0.0.0:8000/cb", "is an unspecified address (0.0.0.0)"),
        ("http://127.0.0.1./cb", "is a loopback address (127.0.0.1)"),
        ("http://%31%32%37.0.0.1/cb", "is a loopback address (127.0.0.1)"),
        ("http://１２７。０。０。１/cb", "is a loopback address (127.0.0.1)"),  # noqa: RUF001 - full-width on purpose
        ("http://0251.0376.0251.0376/", "is a link-local address (169.254.169.254)"),
        ("http://169.254.169.254/latest/meta-data/", "is a link-local address (169.254.169.254)"),
        ("http://[::1]:8000/cb", "is a loopback address (::1)"),
        ("http://[0:0:0:0:0:0:0:1]/cb", "is a loopback address (::1)"),
        ("http://[::]/cb", "is an unspecified address (::)"),
        ("http://[::ffff:127.0.0.1]/cb", "is a loopback address (127.0.0.1, inside ::ffff:7f00:1)"),
        ("http://[::FFFF:7F00:1]/cb", "is a loopback address (127.0.0.1, inside ::ffff:7f00:1)"),
        ("http://[64:ff9b::7f00:1]/", "is a loopback address (127.0.0.1, inside 64:ff9b::7f00:1)"),
        ("http://[2002:7f00:1::]/", "is a loopback address (127.0.0.1, inside 2002:7f00:1::)"),
        ("http://[fe80::1%25eth0]/cb", "is a link-local address (fe80::1)"),
        ("http://10.0.0.5/hook", "is a private address (10.0.0.5)"),
        ("http://localhost:8000/cb", "resolves to a loopback address"),
        ("http://LOCALHOST./cb", "resolves to a loopback address"),
        ("http://app.localhost/cb", "resolves to a loopback address"),
        ("http://ｌｏｃａｌｈｏｓｔ/cb", "resolves to a loopback address"),  # noqa: RUF001 - full-width on purpose
        ("http://%6c%6f%63%61%6c%68%6f%73%74/cb", "resolves to a loopback address"),
        ("ftp://agent.example/cb", "must be an http:// or https:// URL"),
        ("file:///etc/passwd", "must be an http:// or https:// URL"),
        ("gopher://agent.example:70/", "must be an http:// or https:// URL"),
        ("/relative/path", "must be an http:// or https:// URL"),
        ("http://user:secret@agent.example/cb", "must not carry credentials"),
        ("https://token@agent.example/cb", "must not carry credentials"),
        (
            "http://agent.example\\@127.0.0.1/",
            "must not contain spaces, control characters or backslashes",
        ),
        ("http://agent .example/", "must not contain spaces, control characters or backslashes"),
        ("http:///no-host", "has no host"),
        ("http://127.0.0.1:99999/bad-port", "is not a valid URL"),
        ("http://1.2.3.4.5/", "has an invalid IPv4 address"),
        ("http://256.1.1.1/", "has an invalid IPv4 address"),
        ("http://agent.example%20/", "has an invalid host name"),
        ("http://agent!.example/", "has an invalid host name"),
        ("http://[2606:2800:21f:cb07:6820:80da:af6b:8b2c%25eth0]/", "has an IPv6 zone id"),
    ],
)
def test_refused_without_dns(allow, url, reason):
    """Refused by reading the URL alone: scheme, credentials, syntax, and every spelling of an
    internal literal address or of localhost (decimal, octal, hex, short, trailing dot,
    percent-encoded, full-width, IPv4 inside IPv6, zone ids)."""
    with pytest.raises(OutboundRefused) as refused:
        outbound_target(url)
    assert refused.value.reason == reason


def test_public_literals_need_no_lookup(allow):
    """A public literal address is its own resolution: no DNS is asked."""

    def no_dns(host: str, port: int) -> list[IPAddress]:
        raise AssertionError("no lookup expected")

    target = outbound_target(f"https://{PUBLIC_V4}:8443/hooks?agent=a#frag")
    assert (target.host, target.port, target.request_target) == (
        PUBLIC_V4, 8443, "/hooks?agent=a"
    )  # fmt: skip
    assert resolve_target(target, resolver=no_dns) == (ipaddress.ip_address(PUBLIC_V4),)
    assert target.host_header == f"{PUBLIC_V4}:8443"
    v6 = outbound_target(f"http://[{PUBLIC_V6.upper()}]/")
    assert (v6.host, v6.host_header) == (PUBLIC_V6, f"[{PUBLIC_V6}]")


def test_names_are_canonical(allow):
    """Names are read as a client sends them: lowercase, IDNA A-labels, no trailing dot."""
    target = outbound_target("HTTPS://Bücher.Example./p")
    assert (target.scheme, target.host, target.port) == ("https", "xn--bcher-kva.example", 443)
    assert target.host_header == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    ("answers", "reason"),
    [
        (["127.0.0.1"], "resolves to a loopback address"),
        (["10.1.2.3"], "resolves to a private address"),
        (["169.254.169.254"], "resolves to a link-local address"),
        (["::ffff:127.0.0.1"], "resolves to a loopback address"),
        ([PUBLIC_V4, "127.0.0.1"], "resolves to a loopback address"),
        ([PUBLIC_V6, "fd00::5"], "resolves to a unique-local address"),
    ],
)
def test_every_resolved_address_is_judged(allow, answers, reason):
    """A name is refused when any of its addresses is internal; the reason does not say which
    address (internal DNS is none of the caller's business)."""
    target = outbound_target("https://hooks.example/verdicts")
    with pytest.raises(OutboundRefused) as refused:
        resolve_target(target, resolver=fake_dns({"hooks.example": answers}))
    assert refused.value.reason == reason and refused.value.internal
    assert answers[-1] not in reason


def test_a_public_name_resolves_to_its_addresses(allow):
    """A name whose addresses are all public gives them, in the resolver's order, once each."""
    target = outbound_target("https://hooks.example/verdicts")
    dns = fake_dns({"hooks.example": [PUBLIC_V6, PUBLIC_V4, PUBLIC_V6]})
    assert resolve_target(target, resolver=dns) == (
        ipaddress.ip_address(PUBLIC_V6), ipaddress.ip_address(PUBLIC_V4)
    )  # fmt: skip


def test_unknown_and_slow_names_do_not_resolve(allow, monkeypatch):
    """No address, or no answer within the timeout, is HostUnresolved (not a refusal)."""
    target = outbound_target("https://nowhere.example/")
    with pytest.raises(HostUnresolved, match="does not resolve"):
        resolve_target(target, resolver=fake_dns({}))
    with pytest.raises(HostUnresolved, match="does not resolve"):
        resolve_target(target, resolver=fake_dns({"nowhere.example": []}))

    def slow(host: str, port: int) -> list[IPAddress]:
        import time

        time.sleep(0.5)
        return [ipaddress.ip_address(PUBLIC_V4)]

    monkeypatch.setattr(outbound, "RESOLVE_TIMEOUT_S", 0.1)
    with pytest.raises(HostUnresolved, match=r"did not resolve within 0.1 s"):
        resolve_target(target, resolver=slow)
    with pytest.raises(HostUnresolved, match=r"did not resolve within 0.1 s"):
        asyncio.run(aresolve_target(target, resolver=slow))


def test_the_async_lookup_judges_like_the_blocking_one(allow):
    """The request path's lookup runs off the loop and refuses the same addresses."""
    target = outbound_target("https://hooks.example/")
    with pytest.raises(OutboundRefused, match="resolves to a loopback address"):
        asyncio.run(aresolve_target(target, resolver=fake_dns({"hooks.example": ["127.0.0.1"]})))
    found = asyncio.run(aresolve_target(target, resolver=fake_dns({"hooks.example": [PUBLIC_V4]})))
    assert found == (ipaddress.ip_address(PUBLIC_V4),)


def test_the_system_resolver_is_used_by_default(allow):
    """Without an injected resolver the C library resolves (here: localhost, from /etc/hosts),
    and an allowed host may resolve to loopback."""
    allow("localhost")
    target = outbound_target("http://localhost:9/")
    assert target.allowed_internal
    assert ipaddress.ip_address("127.0.0.1") in resolve_target(target) or (
        ipaddress.ip_address("::1") in resolve_target(target)
    )


@pytest.mark.parametrize(
    ("entry", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000/cb"),
        ("127.0.0.1", "http://2130706433:8000/cb"),  # the same address, spelled otherwise
        ("127.0.0.1", "http://127.1/cb"),
        ("::1", "http://[::1]/cb"),
        ("[::ffff:127.0.0.1]", "http://[::ffff:7f00:1]/cb"),
        ("localhost", "http://LocalHost./cb"),
        ("169.254.169.254", "http://169.254.169.254/latest/meta-data/"),
        ("Hooks.Internal.", "http://hooks.internal:9000/alerts"),
    ],
)
def test_allowed_hosts_may_be_internal(allow, entry, url):
    """A host named in GATEWAY_OUTBOUND_ALLOWED_HOSTS (in any spelling) may be internal."""
    allow("  ", "not a host!", entry)
    target = outbound_target(url)
    assert target.allowed_internal
    dns = fake_dns({"hooks.internal": ["10.0.0.7"], "localhost": ["127.0.0.1"]})
    assert resolve_target(target, resolver=dns)


def test_the_allow_list_names_hosts_not_addresses(allow):
    """Allowing one host does not allow another that resolves to the same internal address, nor
    other spellings that are other addresses."""
    allow("hooks.internal", "127.0.0.1")
    dns = fake_dns({"evil.example": ["10.0.0.7"], "hooks.internal": ["10.0.0.7"]})
    with pytest.raises(OutboundRefused, match="resolves to a private address"):
        resolve_target(outbound_target("http://evil.example/"), resolver=dns)
    with pytest.raises(OutboundRefused, match="is a loopback address"):
        outbound_target("http://[::ffff:127.0.0.1]/")
    with pytest.raises(OutboundRefused, match="resolves to a loopback address"):
        outbound_target("http://localhost/")


def test_outbound_url_error_says_why_or_nothing(allow, monkeypatch):
    """The one-call check used by forms: the error with its reason, or None."""
    monkeypatch.setattr(outbound, "system_resolve", fake_dns({"hooks.example": [PUBLIC_V4]}))
    assert outbound_url_error("https://hooks.example/alerts") is None
    error = outbound_url_error("http://2130706433/")
    assert error is not None and error.reason == "is a loopback address (127.0.0.1)"
    unknown = outbound_url_error("https://nowhere.example/")
    assert isinstance(unknown, HostUnresolved)
    assert outbound_url_error("https://nowhere.example/", resolve=False) is None
