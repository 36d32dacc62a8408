"""ASGI entry point: Django for HTTP, plus the lifespan Django itself does not handle.

On startup each process begins its background work (audit writer, provider health checks); on
shutdown it flushes the audit queue, so every answered request has its record
(docs/adr/0007-audit-write-path.md).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
django_application = get_asgi_application()

from .api_asgi import ApiHandler, BodyGuard, is_api_path  # noqa: E402 - needs Django set up first

api_application = ApiHandler()
# The admin and the rest of the site, behind the API's body size and read-time limits.
site_application = BodyGuard(django_application)

logger = logging.getLogger("gateway_project.lifespan")

Scope = dict[str, Any]
Receive = Any
Send = Any


async def _lifespan(receive: Receive, send: Send) -> None:
    from providers.health import health_loop
    from routing.audit import audit_writer
    from routing.clients import close_http_client
    from scoring.validators import warm_up

    background: list[asyncio.Task[None]] = []
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            # Load the language model and schema machinery now, not inside the first request.
            await asyncio.to_thread(warm_up)
            # Everything loaded so far lives as long as the process: keep the cyclic garbage
            # collector from rescanning it, and let it run less often on the request path's
            # short-lived objects (they are freed by reference counting anyway).
            gc.freeze()
            gc.set_threshold(50_000, 20, 20)
            audit_writer._ensure_running()
            background.append(asyncio.create_task(health_loop(), name="provider-health"))
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            for task in background:
                task.cancel()
            await audit_writer.stop()
            await close_http_client()
            logger.info("gateway process stopped; audit queue flushed")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    elif is_api_path(scope):
        await api_application(scope, receive, send)
    else:
        await site_application(scope, receive, send)
