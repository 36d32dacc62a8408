"""Signed webhook deliveries: verdict callbacks to agents and budget alerts to their webhooks.

One POST of a JSON body, signed with an HMAC of the body (``X-Gateway-Signature``), without
redirects or proxies from the environment. The URL is checked by ``gateway_project.outbound`` at
the moment of sending and the connection goes to the very address that was vetted (the request is
sent to the IP, with the URL's host in ``Host`` and in TLS's SNI and certificate check), so a
second DNS answer cannot move it (DNS rebinding). See docs/adr/0015-outbound-requests.md.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import orjson
from django.conf import settings

from .outbound import (
    HostUnresolved,
    IPAddress,
    OutboundRefused,
    OutboundTarget,
    Resolver,
    outbound_target,
    resolve_target,
)

SIGNATURE_HEADER = "X-Gateway-Signature"
TIMESTAMP_HEADER = "X-Gateway-Timestamp"
TIMEOUT = httpx.Timeout(10.0, connect=5.0)


def webhook_secret() -> bytes:
    """``GATEWAY_CALLBACK_SECRET``, or (unset) a key derived from ``SECRET_KEY``."""
    secret = str(getattr(settings, "GATEWAY_CALLBACK_SECRET", "") or "")
    if not secret:
        # The derivation label predates this module: agents verifying with it keep working.
        secret = hmac.new(
            settings.SECRET_KEY.encode(), b"llm-gateway/reviews/verdict-callback", hashlib.sha256
        ).hexdigest()
    return secret.encode()


def webhook_signature(body: bytes) -> str:
    """The value of ``X-Gateway-Signature`` for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(webhook_secret(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Delivery:
    """How one delivery went: ``delivered`` (a 2xx answer), ``refused`` (nothing was sent and
    nothing will be: the URL leads somewhere the gateway does not call) or ``failed`` (another
    answer, a timeout, no connection, no address: worth another try)."""

    outcome: Literal["delivered", "refused", "failed"]
    error: str = ""

    @property
    def delivered(self) -> bool:
        return self.outcome == "delivered"


def _pinned_url(target: OutboundTarget, address: IPAddress) -> str:
    # A zone id only comes with an address the operator allowed by name; the URL takes none.
    plain = type(address)(int(address))
    host = f"[{plain}]" if plain.version == 6 else str(plain)
    return f"{target.scheme}://{host}:{target.port}{target.request_target}"


def webhook_post(
    *,
    url: str,
    payload: dict[str, Any],
    user_agent: str,
    resolver: Resolver | None = None,
    transport: httpx.BaseTransport | None = None,
) -> Delivery:
    """POST ``payload`` as signed JSON to ``url``, connecting only to addresses vetted now.

    Every address the host resolves to must be allowed; they are tried in order until one
    accepts the connection (nothing has been sent to the ones that refused it).
    """
    try:
        target = outbound_target(url)
        addresses = resolve_target(target, resolver=resolver)
    except OutboundRefused as exc:
        return Delivery("refused", f"refused: {exc.reason}")
    except HostUnresolved as exc:
        return Delivery("failed", f"the host {exc.reason}")
    body = orjson.dumps(payload)
    headers = {
        "Host": target.host_header,
        "Content-Type": "application/json",
        "User-Agent": user_agent,
        SIGNATURE_HEADER: webhook_signature(body),
        TIMESTAMP_HEADER: str(int(time.time())),
    }
    # The certificate is checked against the URL's host, not the address connected to.
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    error = ""
    with httpx.Client(
        timeout=TIMEOUT, follow_redirects=False, trust_env=False, transport=transport
    ) as client:
        for address in addresses:
            try:
                response = client.post(
                    _pinned_url(target, address),
                    content=body,
                    headers=headers,
                    extensions=extensions,
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                error = f"{type(exc).__name__}: {exc}"
                continue
            except httpx.HTTPError as exc:
                return Delivery("failed", f"{type(exc).__name__}: {exc}")
            if 200 <= response.status_code < 300:
                return Delivery("delivered")
            return Delivery("failed", f"HTTP {response.status_code}")
    return Delivery("failed", error)
