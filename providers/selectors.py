"""Reads about providers for the admin: what the running gateway currently knows of each one."""

from __future__ import annotations

import orjson

from gateway_project.shared_state import shared_state


def provider_runtime_status(*, provider_id: int) -> str:
    """A short line for the admin: key rejected, cooling down, or the last health check."""
    from routing.router import provider_cool_key

    from .health import health_key

    state = shared_state()
    cooling = state.get(provider_cool_key(provider_id))
    if cooling:
        return cooling
    health = state.get(health_key(provider_id))
    if not health:
        return "not checked yet"
    check = orjson.loads(health)
    return f"{check.get('status', 'unknown')} ({check.get('latency_ms', '?')} ms)"
