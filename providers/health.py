"""Background health checks of providers, so ``/health`` never calls an upstream itself.

Each gateway process runs :func:`health_loop`; with Redis, one process per interval does the
probing (a claim key) and all of them read the results from the shared state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from django.conf import settings
from django.utils import timezone

from gateway_project.shared_state import shared_state

if TYPE_CHECKING:
    from routing.config import Deployment

logger = logging.getLogger(__name__)


def health_key(provider_id: int) -> str:
    return f"health:p:{provider_id}"


async def probe_providers() -> dict[str, dict[str, Any]]:
    """Probe every provider that serves an enabled deployment; store and return the results."""
    from routing.clients import adapter_for_deployment
    from routing.config import current_snapshot
    from routing.router import provider_down_key

    snapshot = await current_snapshot()
    interval = settings.GATEWAY["HEALTH_CHECK_INTERVAL_S"]
    first_per_provider: dict[int, Deployment] = {}
    for deployment in snapshot.deployments:
        if deployment.has_credentials:
            first_per_provider.setdefault(deployment.provider_id, deployment)

    async def probe_one(deployment: Deployment) -> tuple[int, dict[str, Any]]:
        started = time.monotonic()
        target = deployment.target
        error = ""
        try:
            async with asyncio.timeout(min(5.0, target.total_timeout)):
                healthy = await adapter_for_deployment(deployment).probe(target)
        except Exception as exc:  # noqa: BLE001 - any failure means "down"
            healthy, error = False, type(exc).__name__
        return deployment.provider_id, {
            "name": deployment.provider_name,
            "kind": deployment.provider_kind,
            "status": "up" if healthy else "down",
            "latency_ms": int((time.monotonic() - started) * 1000),
            "checked_at": timezone.now().isoformat(),
            **({"error": error} if error else {}),
        }

    results = await asyncio.gather(*(probe_one(d) for d in first_per_provider.values()))
    state = shared_state()
    report = {}
    for provider_id, status in results:
        await state.aset(health_key(provider_id), orjson.dumps(status).decode(), interval * 3)
        if status["status"] == "down":
            await state.aset(provider_down_key(provider_id), "1", interval + 5)
        else:
            await state.adelete(provider_down_key(provider_id))
        report[status["name"]] = status
    return report


async def health_loop() -> None:
    """Probe on an interval for as long as the process runs (an interval of 0 turns it off)."""
    interval = settings.GATEWAY["HEALTH_CHECK_INTERVAL_S"]
    if interval <= 0:
        return
    while True:
        try:
            if await shared_state().aadd("health:claim", "1", interval * 0.9):
                await probe_providers()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("provider health check failed")
        await asyncio.sleep(interval)


async def provider_health(provider_ids: list[int]) -> dict[int, dict[str, Any] | None]:
    values = await shared_state().aget_many([health_key(p) for p in provider_ids])
    return {p: (orjson.loads(v) if v else None) for p, v in zip(provider_ids, values, strict=True)}
