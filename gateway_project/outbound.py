"""Which URLs the gateway may call when someone other than the operator chose them.

Agents choose their ``callback_url`` and admins choose budget webhooks, but the gateway makes the
call from inside the deployment's network. So such a URL must lead to public addresses only: no
loopback, private, link-local, unique-local, multicast, unspecified, shared (CGNAT), documentation,
benchmarking or reserved address, however the host is written (decimal ``2130706433``, octal
``0177.0.0.1``, short ``127.1``, IPv4 inside IPv6, percent-encoded, uppercase, IDNA), and every
address its name resolves to. ``GATEWAY_OUTBOUND_ALLOWED_HOSTS`` names internal hosts an operator
does want called. The check runs when the URL is accepted and again right before connecting, where
``gateway_project.webhooks`` connects to the very address vetted here.
See docs/adr/0015-outbound-requests.md.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import idna
from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> every address the host resolves to; tests inject their own.
Resolver = Callable[[str, int], Sequence[IPAddress]]

DEFAULT_PORTS = {"http": 80, "https": 443}
RESOLVE_TIMEOUT_S = 2.0


class OutboundError(Exception):
    """The gateway will not call a URL; ``reason`` says why, worded to follow the URL's name
    ("callback_url: resolves to a loopback address")."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OutboundRefused(OutboundError):
    """The URL is refused for what it is or where it leads: calling it later will not help.

    ``internal``: refused for leading to an internal address, which naming the host in
    ``GATEWAY_OUTBOUND_ALLOWED_HOSTS`` would allow.
    """

    def __init__(self, reason: str, *, internal: bool = False) -> None:
        super().__init__(reason)
        self.internal = internal


class HostUnresolved(OutboundError):
    """The host has no address now (an unknown name, a resolver too slow): that may change."""


# --- the address policy ----------------------------------------------------------------------

_V4, _V6 = ipaddress.IPv4Network, ipaddress.IPv6Network

# From the IANA special-purpose address registries; the first match names the reason.
_NON_PUBLIC_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/8"), "an unspecified address"),
    (_V4("10.0.0.0/8"), "a private address"),
    (_V4("100.64.0.0/10"), "a shared (carrier-grade NAT) address"),
    (_V4("127.0.0.0/8"), "a loopback address"),
    (_V4("169.254.0.0/16"), "a link-local address"),
    (_V4("172.16.0.0/12"), "a private address"),
    (_V4("192.0.0.0/24"), "a reserved address"),
    (_V4("192.0.2.0/24"), "a documentation address"),
    (_V4("192.88.99.0/24"), "a reserved address"),
    (_V4("192.168.0.0/16"), "a private address"),
    (_V4("198.18.0.0/15"), "a benchmarking address"),
    (_V4("198.51.100.0/24"), "a documentation address"),
    (_V4("203.0.113.0/24"), "a documentation address"),
    (_V4("224.0.0.0/4"), "a multicast address"),
    (_V4("255.255.255.255/32"), "a broadcast address"),
    (_V4("240.0.0.0/4"), "a reserved address"),
)
_NON_PUBLIC_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "an unspecified address"),
    (_V6("::1/128"), "a loopback address"),
    (_V6("64:ff9b:1::/48"), "a reserved address"),  # local-use NAT64
    (_V6("100::/64"), "a reserved address"),  # discard-only
    (_V6("2001:2::/48"), "a benchmarking address"),
    (_V6("2001:db8::/32"), "a documentation address"),
    (_V6("2001::/23"), "a reserved address"),  # IETF protocol assignments: Teredo, ORCHID...
    (_V6("3fff::/20"), "a documentation address"),
    (_V6("5f00::/16"), "a reserved address"),  # SRv6 segment identifiers
    (_V6("fc00::/7"), "a unique-local address"),
    (_V6("fe80::/10"), "a link-local address"),
    (_V6("fec0::/10"), "a site-local address"),
    (_V6("ff00::/8"), "a multicast address"),
)
_IPV4_COMPATIBLE = _V6("::/96")
_IPV4_TRANSLATED = _V6("::ffff:0:0:0/96")
_NAT64 = _V6("64:ff9b::/96")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and reaches (IPv4-mapped, IPv4-compatible,
    IPv4-translated, NAT64 64:ff9b::/96, 6to4), or None."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _IPV4_TRANSLATED or address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _IPV4_COMPATIBLE and int(address) > 1:  # :: and ::1 are themselves
        return ipaddress.IPv4Address(int(address))
    return None


def address_problem(address: IPAddress) -> str | None:
    """What kind of non-public address ``address`` is ("a loopback address"...), or None when the
    gateway may connect to it. IPv6 addresses that carry an IPv4 address are judged by it."""
    if isinstance(address, ipaddress.IPv6Address):
        address = ipaddress.IPv6Address(int(address))  # without a zone id
        embedded = embedded_ipv4(address)
        if embedded is not None:
            return address_problem(embedded)
        networks: Iterable[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]]
        networks = _NON_PUBLIC_V6
    else:
        networks = _NON_PUBLIC_V4
    for network, problem in networks:
        if address in network:
            return problem
    if address.is_reserved or not address.is_global:
        return "a reserved address"
    return None


# --- reading the URL -------------------------------------------------------------------------

# WHATWG URL parsers and the C library both read a host whose last label is a number as an IPv4
# address in any of its forms (127.1, 2130706433, 0177.0.0.1, 0x7f.1): so does this module.
_NUMBER = re.compile(r"0x[0-9a-f]*|[0-9]+")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_FORBIDDEN_IN_URL = re.compile(r"[\x00-\x20\x7f\\]")


@dataclass(frozen=True)
class OutboundTarget:
    """A URL the gateway may call, reduced to what its connection uses."""

    scheme: str
    # Lowercase ASCII (IDNA A-labels), no trailing dot; an IP literal in its standard form.
    host: str
    port: int
    # The path and query, as sent on the request line.
    request_target: str
    # The host's address when the host is an IP literal, however it was written.
    address: IPAddress | None
    # Named in GATEWAY_OUTBOUND_ALLOWED_HOSTS: it may resolve to internal addresses.
    allowed_internal: bool

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def _canonical_host(raw: str) -> tuple[str, IPAddress | None]:
    """The host as a client would connect to it, and its address when it is an IP literal.

    Raises ``OutboundRefused`` for a host no careful client would accept.
    """
    try:
        host = unquote(raw, errors="strict")  # a percent-encoded host names the decoded one
    except UnicodeDecodeError:
        raise OutboundRefused("has an invalid host name") from None
    if _FORBIDDEN_IN_URL.search(host):
        raise OutboundRefused("has an invalid host name")
    if ":" in host:  # urlsplit took the port off: only an IPv6 literal keeps a colon
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            raise OutboundRefused("has an invalid IPv6 address") from None
        plain = ipaddress.IPv6Address(int(address))
        problem = address_problem(plain)
        if address.scope_id and problem is None:
            # A zone names one of this machine's interfaces: meaningless for a public address.
            raise OutboundRefused("has an IPv6 zone id")
        return str(plain), plain
    if not host.isascii():
        # UTS 46 maps what IDNA clients map (full-width letters and digits, ideographic dots).
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            raise OutboundRefused("has an invalid host name") from None
    host = host.lower().rstrip(".")
    if not host:
        raise OutboundRefused("has no host")
    labels = host.split(".")
    if _NUMBER.fullmatch(labels[-1]):
        try:
            address4 = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            raise OutboundRefused("has an invalid IPv4 address") from None
        return str(address4), address4
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise OutboundRefused("has an invalid host name")
    return host, None


@functools.lru_cache(maxsize=8)
def _allowed_hosts(entries: tuple[str, ...]) -> frozenset[str]:
    hosts = set()
    for entry in entries:
        try:
            hosts.add(_canonical_host(entry.strip().removeprefix("[").removesuffix("]"))[0])
        except OutboundRefused:
            continue  # an entry that is no host allows nothing
    return frozenset(hosts)


def host_is_allowed_internal(host: str) -> bool:
    """Whether the operator named this (canonical) host in ``GATEWAY_OUTBOUND_ALLOWED_HOSTS``."""
    return host in _allowed_hosts(tuple(settings.GATEWAY["OUTBOUND_ALLOWED_HOSTS"]))


def _is_loopback_name(host: str) -> bool:
    # RFC 6761: localhost and its subdomains are the local machine, whatever a resolver says.
    return host == "localhost" or host.endswith(".localhost")


def outbound_target(url: str) -> OutboundTarget:
    """Read ``url`` as the gateway would call it, refusing what needs no DNS to refuse.

    Only absolute http(s) URLs without credentials, whose host is a valid name or an IP literal;
    a literal address or a name for this machine must be allowed (``address_problem``) unless the
    operator named the host. Raises ``OutboundRefused``.
    """
    if _FORBIDDEN_IN_URL.search(url):
        raise OutboundRefused("must not contain spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise OutboundRefused("is not a valid URL") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise OutboundRefused("must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise OutboundRefused("must not carry credentials")
    if not parts.hostname:
        raise OutboundRefused("has no host")
    host, address = _canonical_host(parts.hostname)
    allowed = host_is_allowed_internal(host)
    if not allowed and address is not None:
        problem = address_problem(address)
        if problem:
            embedded = (
                embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
            )
            shown = f"{embedded}, inside {address}" if embedded else str(address)
            raise OutboundRefused(f"is {problem} ({shown})", internal=True)
    if not allowed and _is_loopback_name(host):
        raise OutboundRefused("resolves to a loopback address", internal=True)
    return OutboundTarget(
        scheme=parts.scheme,
        host=host,
        port=port or DEFAULT_PORTS[parts.scheme],
        request_target=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
        address=address,
        allowed_internal=allowed,
    )


# --- resolving the host ----------------------------------------------------------------------


def system_resolve(host: str, port: int) -> list[IPAddress]:
    """Every address the C library's resolver gives for ``host``: what a client would try."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [
        ipaddress.ip_address(str(info[4][0]))
        for info in infos
        if info[0] in (socket.AF_INET, socket.AF_INET6)
    ]


_executor_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def _resolver_pool() -> ThreadPoolExecutor:
    # Lookups get threads of their own, so slow DNS queues here (and times out) instead of
    # holding the threads that serve database calls.
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="outbound-dns")
        return _executor


def vetted_addresses(target: OutboundTarget, found: Iterable[IPAddress]) -> tuple[IPAddress, ...]:
    """The addresses the gateway may connect to for ``target``: all of ``found``, or a refusal
    when any of them is not public (unless the host is allowed internal)."""
    addresses = tuple(dict.fromkeys(found))
    if not addresses:
        raise HostUnresolved("does not resolve")
    if not target.allowed_internal:
        for address in addresses:
            problem = address_problem(address)
            if problem:
                # Not which address: internal DNS is none of the caller's business.
                raise OutboundRefused(f"resolves to {problem}", internal=True)
    return addresses


def _lookup_failed(exc: BaseException) -> HostUnresolved:
    # Since Python 3.11 the futures' and asyncio's timeouts are both the built-in TimeoutError.
    if isinstance(exc, TimeoutError):
        return HostUnresolved(f"did not resolve within {RESOLVE_TIMEOUT_S:g} s")
    return HostUnresolved("does not resolve")


def resolve_target(
    target: OutboundTarget, *, resolver: Resolver | None = None
) -> tuple[IPAddress, ...]:
    """Resolve the target's host and vet every address (``vetted_addresses``); blocking.

    Raises ``OutboundRefused`` or ``HostUnresolved``.
    """
    if target.address is not None:
        return (target.address,)
    future = _resolver_pool().submit(resolver or system_resolve, target.host, target.port)
    try:
        found = future.result(RESOLVE_TIMEOUT_S)
    except (OSError, UnicodeError, ValueError) as exc:  # TimeoutError is an OSError
        raise _lookup_failed(exc) from None
    return vetted_addresses(target, found)


async def aresolve_target(
    target: OutboundTarget, *, resolver: Resolver | None = None
) -> tuple[IPAddress, ...]:
    """``resolve_target`` off the event loop, for the request path."""
    if target.address is not None:
        return (target.address,)
    loop = asyncio.get_running_loop()
    lookup = loop.run_in_executor(
        _resolver_pool(), resolver or system_resolve, target.host, target.port
    )
    try:
        found = await asyncio.wait_for(lookup, RESOLVE_TIMEOUT_S)
    except (OSError, UnicodeError, ValueError) as exc:  # TimeoutError is an OSError
        raise _lookup_failed(exc) from None
    return vetted_addresses(target, found)


def outbound_url_error(url: str, *, resolve: bool = True) -> OutboundError | None:
    """Why the gateway would not call ``url`` (its ``reason`` reads "resolves to a loopback
    address"...), or None.

    ``resolve=False`` skips DNS: for validation that must not block (a request schema), followed
    by ``aresolve_target`` where waiting is possible.
    """
    try:
        target = outbound_target(url)
        if resolve:
            resolve_target(target)
    except OutboundError as exc:
        return exc
    return None
