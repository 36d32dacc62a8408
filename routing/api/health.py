"""``/health`` (cheap enough to probe every few seconds) and ``/health/ready``."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse

from gateway_project.shared_state import shared_state
from gateway_project.state_keys import (
    AUDIT_DEAD_LETTERS_KEY,
    deployment_cooldown_key,
    provider_cooldown_key,
    provider_failed_checks_key,
)
from providers.health import down_by_health_checks, failed_checks_count, provider_health

from ..audit import audit_writer
from ..audit_write import dead_letters_count
from ..config import current_snapshot
from .common import json_response
from .views import api_endpoint


@api_endpoint("GET")
async def health(request: HttpRequest) -> HttpResponse:
    """Status, the local Ollama, the audit queue and the models, from cached state only."""
    snapshot = await current_snapshot()
    provider_ids = sorted({d.provider_id for d in snapshot.deployments})
    checks = await provider_health(provider_ids)
    cooling = await shared_state().aget_many(
        [deployment_cooldown_key(d.id) for d in snapshot.deployments]
        + [provider_cooldown_key(p) for p in provider_ids]
        + [provider_failed_checks_key(p) for p in provider_ids]
    )
    n, m = len(snapshot.deployments), len(provider_ids)
    provider_cool = dict(zip(provider_ids, cooling[n : n + m], strict=True))
    failed_checks = {
        p: failed_checks_count(v) for p, v in zip(provider_ids, cooling[n + m :], strict=True)
    }

    providers: list[dict[str, Any]] = []
    for pid in provider_ids:
        deployment = next(d for d in snapshot.deployments if d.provider_id == pid)
        check = checks.get(pid) or {}
        providers.append(
            {
                "name": deployment.provider_name,
                "kind": deployment.provider_kind,
                "local": deployment.is_local,
                "status": check.get("status", "unknown"),
                "checked_at": check.get("checked_at"),
                "latency_ms": check.get("latency_ms"),
                "cooling_down": bool(provider_cool[pid]),
                "failed_checks": failed_checks[pid],
            }
        )
    models = []
    for i, d in enumerate(snapshot.deployments):
        down = down_by_health_checks(failed_checks[d.provider_id])
        if cooling[i] or provider_cool[d.provider_id] or down:
            state = "unavailable"
        elif not d.has_credentials:
            state = "no_credentials"
        else:
            state = "available"
        models.append(
            {"name": d.public_name, "provider": d.provider_name, "tier": d.tier, "status": state}
        )

    local = [p for p in providers if p["local"]]
    if not local:
        ollama: dict[str, Any] = {"status": "not_configured"}
    else:
        up = [p for p in local if p["status"] == "up"]
        ollama = {
            "status": "up"
            if up
            else ("down" if all(p["status"] == "down" for p in local) else "unknown"),
            "providers": local,
            "models": sorted({d.public_name for d in snapshot.deployments if d.is_local}),
        }
    available = any(m["status"] == "available" for m in models)
    audit = await _audit_section()
    return json_response(
        {
            "status": "ok" if available and audit["status"] == "ok" else "degraded",
            "ollama": ollama,
            "queue": {"audit_pending": audit_writer.pending},
            "audit": audit,
            "providers": providers,
            "models": models,
        },
        headers={"Cache-Control": "no-store"},
    )


# The dead letters' count is kept in the shared state and counted again only when it is missing:
# after a dead letter was parked or written again (both drop it) or once a minute.
_DEAD_LETTERS_TTL_S = 60.0
_dead_letters_known: int | None = None


async def _audit_section() -> dict[str, Any]:
    """This process's audit writer (docs/adr/0007) and the dead letters of every process."""
    global _dead_letters_known
    writer = audit_writer.health()
    cached = await shared_state().aget(AUDIT_DEAD_LETTERS_KEY)
    if cached is not None:
        _dead_letters_known = int(cached)
    elif writer.failing_since is None:  # no count while the database fails: not even a try
        try:
            _dead_letters_known = await sync_to_async(dead_letters_count)()
            await shared_state().aset(
                AUDIT_DEAD_LETTERS_KEY, str(_dead_letters_known), ttl=_DEAD_LETTERS_TTL_S
            )
        except Exception:  # noqa: BLE001 - /health answers whatever the database does
            pass
    return {
        "status": writer.status,
        "pending": writer.pending,
        "max_pending": writer.max_pending,
        "failing_since": writer.failing_since.isoformat() if writer.failing_since else None,
        "last_error": writer.last_error or None,
        "last_error_at": writer.last_error_at.isoformat() if writer.last_error_at else None,
        "dead_letters": _dead_letters_known,
    }


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


@api_endpoint("GET")
async def ready(request: HttpRequest) -> HttpResponse:
    """Ready when the database and the cache answer and the audit writer keeps up."""
    checks: dict[str, str] = {}
    try:
        await sync_to_async(_check_database)()
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        await sync_to_async(cache.set)("health:ready", "1", 5)
        checks["cache"] = "ok" if await sync_to_async(cache.get)("health:ready") == "1" else "error"
    except Exception as exc:  # noqa: BLE001
        checks["cache"] = f"error: {type(exc).__name__}"
    not_ready = audit_writer.health().not_ready
    checks["audit"] = f"error: {not_ready}" if not_ready else "ok"
    ok = all(v == "ok" for v in checks.values())
    return json_response(
        {"status": "ready" if ok else "not_ready", "checks": checks}, status=200 if ok else 503
    )
