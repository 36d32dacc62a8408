"""One long-lived HTTP session per event loop, shared by every adapter of this process."""

from __future__ import annotations

import asyncio
import weakref

import aiohttp

from .adapters import adapter_for, new_session
from .base import ProviderAdapter

_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
    weakref.WeakKeyDictionary()
)


def http_session() -> aiohttp.ClientSession:
    """The shared session of the running loop (created on first use).

    Plain aiohttp, not httpx: httpx's request/response layer cost more event-loop time per upstream
    call than the rest of the gateway (ADR 0005). Its settings (a 4096-connection pool, no proxies
    from the environment, decompression...) are ``new_session``'s.
    """
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        session = _sessions[loop] = new_session()
    return session


def adapter_of(provider_kind: str) -> ProviderAdapter:
    """The adapter of a provider kind, on the running loop's shared session."""
    return adapter_for(provider_kind, http_session())


async def close_http_client() -> None:
    """Close the running loop's session and its connections (at shutdown)."""
    loop = asyncio.get_running_loop()
    session = _sessions.pop(loop, None)
    if session is not None:
        await session.close()
