"""One long-lived HTTP client per event loop, shared by every adapter of this process."""

from __future__ import annotations

import asyncio
import weakref

import httpx
from httpx_aiohttp import AiohttpTransport

from providers.adapters import adapter_for
from providers.base import ProviderAdapter

from .config import Deployment

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)

# Enough connections for a thousand concurrent slow upstream calls per process.
_LIMITS = httpx.Limits(max_connections=4096, max_keepalive_connections=512, keepalive_expiry=30)


def http_client() -> httpx.AsyncClient:
    """The shared client of the running loop (created on first use)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        # httpx's own connection pool rescans every connection per request and collapses under
        # concurrency (ADR 0005); the aiohttp transport keeps httpx's API at a fraction of the cost.
        # Upstreams are configured by admins, never by callers: no proxies from the environment.
        client = httpx.AsyncClient(
            transport=AiohttpTransport(limits=_LIMITS, trust_env=False),
            trust_env=False,
            follow_redirects=False,
        )
        _clients[loop] = client
    return client


def adapter_for_deployment(deployment: Deployment) -> ProviderAdapter:
    return adapter_for(deployment.provider_kind, http_client())


async def close_http_client() -> None:
    loop = asyncio.get_running_loop()
    client = _clients.pop(loop, None)
    if client is not None:
        await client.aclose()
