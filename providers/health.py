"""Background health checks of providers, so ``/health`` never calls an upstream itself.

Each gateway process runs :func:`health_loop`; with Redis, one process per interval does the
probing (a claim key) and all of them read the results from the shared state. What to probe is
the caller's to say (routing knows which providers it routes to: ``routing.config``'s
``providers_to_probe``, passed in by the process lifecycle), so this module needs nothing above it.

Checks inform routing without locking it (docs/adr/0002-cost-first-tiers.md): the shared state
counts each provider's failed checks in a row, and routing skips the provider only from
``HEALTH_DOWN_AFTER_FAILED_CHECKS`` of them on. A passed check or a successful real call clears
the count, and a request whose every candidate is down by health checks alone tries them anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import orjson
from django.conf import settings
from django.utils import timezone

from gateway_project.shared_state import shared_state
from gateway_project.state_keys import (
    HEALTH_CHECK_CLAIM_KEY,
    provider_failed_checks_key,
    provider_health_key,
)

from .base import Target
from .clients import adapter_of

logger = logging.getLogger(__name__)


class ProbeTarget(Protocol):
    """A provider to probe, and how to reach it (a deployment of it that has credentials)."""

    @property
    def provider_id(self) -> int: ...
    @property
    def provider_name(self) -> str: ...
    @property
    def provider_kind(self) -> str: ...
    @property
    def target(self) -> Target: ...


ProbeTargets = Callable[[], Awaitable[Sequence[ProbeTarget]]]


def failed_checks_count(value: str | None) -> int:
    """The count stored under ``provider_failed_checks_key`` (0 when absent or unreadable)."""
    try:
        return int(value or 0)
    except ValueError:
        return 0


def down_by_health_checks(failed_checks: int) -> bool:
    """Whether that many failed checks in a row mark a provider down for routing."""
    return failed_checks >= max(1, settings.GATEWAY["HEALTH_DOWN_AFTER_FAILED_CHECKS"])


def _failed_checks_ttl() -> float:
    """Long enough to outlive the gap to the next check (a slow probe included); if checks stop,
    a stale count still expires."""
    return 2 * settings.GATEWAY["HEALTH_CHECK_INTERVAL_S"] + 10


async def probe_providers(targets: ProbeTargets) -> dict[str, dict[str, Any]]:
    """Probe each provider ``targets`` names (one target per provider); store and return the
    results."""
    interval = settings.GATEWAY["HEALTH_CHECK_INTERVAL_S"]

    async def probe_one(probed: ProbeTarget) -> tuple[int, dict[str, Any]]:
        started = time.monotonic()
        target = probed.target
        error = ""
        try:
            async with asyncio.timeout(min(5.0, target.total_timeout)):
                healthy = await adapter_of(probed.provider_kind).probe(target)
        except Exception as exc:  # noqa: BLE001 - any failure means "down"
            healthy, error = False, type(exc).__name__
        return probed.provider_id, {
            "name": probed.provider_name,
            "kind": probed.provider_kind,
            "status": "up" if healthy else "down",
            "latency_ms": int((time.monotonic() - started) * 1000),
            "checked_at": timezone.now().isoformat(),
            **({"error": error} if error else {}),
        }

    results = await asyncio.gather(*(probe_one(t) for t in await targets()))
    if not results:
        return {}
    state = shared_state()
    previous = await state.aget_many([provider_failed_checks_key(p) for p, _ in results])
    report = {}
    for (provider_id, status), before in zip(results, previous, strict=True):
        if status["status"] == "down":
            failed = failed_checks_count(before) + 1
            status["failed_checks"] = failed
            await state.aset(
                provider_failed_checks_key(provider_id), str(failed), _failed_checks_ttl()
            )
            if down_by_health_checks(failed) and not down_by_health_checks(failed - 1):
                logger.warning(
                    "provider %s failed %s health checks in a row: routing skips it while "
                    "other models can serve (%s)",
                    status["name"],
                    failed,
                    status.get("error") or "no 2xx answer",
                )
        elif before:
            await state.adelete(provider_failed_checks_key(provider_id))
        await state.aset(
            provider_health_key(provider_id), orjson.dumps(status).decode(), interval * 3
        )
        report[status["name"]] = status
    return report


async def health_loop(targets: ProbeTargets) -> None:
    """Probe ``targets`` on an interval for as long as the process runs (an interval of 0 turns
    it off)."""
    interval = settings.GATEWAY["HEALTH_CHECK_INTERVAL_S"]
    if interval <= 0:
        return
    while True:
        try:
            if await shared_state().aadd(HEALTH_CHECK_CLAIM_KEY, "1", interval * 0.9):
                await probe_providers(targets)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("provider health check failed")
        await asyncio.sleep(interval)


async def provider_health(provider_ids: list[int]) -> dict[int, dict[str, Any] | None]:
    values = await shared_state().aget_many([provider_health_key(p) for p in provider_ids])
    return {p: (orjson.loads(v) if v else None) for p, v in zip(provider_ids, values, strict=True)}
