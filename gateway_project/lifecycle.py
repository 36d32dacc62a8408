"""The life of a gateway process: what starts when it starts and what is flushed when it stops.

On startup each process loads the validators' models, tunes the garbage collector and begins its
background work: the audit writer and the provider health checks of the providers routing uses.
On shutdown it stops them, flushes the audit queue (so every answered request has its record:
docs/adr/0007-audit-write-path.md) and closes the upstream HTTP session.

This sits at the top of the house with the ASGI entry point (docs/adr/0017-layers.md): it is the
one place that knows every app's background work.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

from providers.clients import close_http_client
from providers.health import health_loop
from routing.audit import audit_writer
from routing.config import providers_to_probe
from scoring.validators import warm_up

logger = logging.getLogger("gateway_project.lifespan")

Receive = Any
Send = Any


async def lifespan(receive: Receive, send: Send) -> None:
    """The ASGI lifespan protocol: startup, then shutdown."""
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
            background.append(
                asyncio.create_task(health_loop(providers_to_probe), name="provider-health")
            )
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            for task in background:
                task.cancel()
            await audit_writer.stop()
            await close_http_client()
            logger.info("gateway process stopped; audit queue flushed")
            await send({"type": "lifespan.shutdown.complete"})
            return
