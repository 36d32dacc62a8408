"""Builders for the audit writer's tests: rows as requests queue them, and a database that goes away."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from conftest import free_port
from django.db import connection
from django.utils import timezone

from routing.audit import AuditWriter


def audit_row(**fields: Any) -> dict[str, Any]:
    """An audit row as ``audit_completed`` queues it (``project`` and ``review_reason`` included)."""
    now = timezone.now()
    row: dict[str, Any] = {
        "request_id": "call-" + uuid.uuid4().hex,
        "endpoint": "completion",
        "caller": "agent-a",
        "agent": "agent-a",
        "api_key_prefix": "gwk-abc",
        "project": "p1",
        "task_type": "analysis",
        "requested_model": "",
        "stream": False,
        "status": "approved",
        "http_status": 200,
        "error": "",
        "attempts": [{"provider": "sim-openai", "model": "sim-medium", "outcome": "ok"}],
        "provider": "sim-openai",
        "model": "sim-medium",
        "tier": "medium",
        "tokens_in": 10,
        "tokens_out": 20,
        "cost_usd": 0.00005,
        "latency_ms": 12,
        "confidence": 8.5,
        "validation": [{"name": "non_empty", "score": 10, "weight": 1.0, "reason": "has text"}],
        "prompt": "user: Explain backpressure",
        "output": "Backpressure slows a producer down.",
        "metadata": {"language": "en"},
        "created_at": now,
        "finished_at": now,
        "review_reason": "sampled",
    }
    row.update(fields)
    return row


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@contextmanager
def database_down(*writers: AuditWriter) -> Iterator[None]:
    """The database goes away for the duration: new connections are refused (PostgreSQL: nothing
    listens on the port; SQLite: the file cannot be opened), and the connections of this thread
    and of the given writers' threads are closed, so their next query has to connect.

    Every thread's connection shares one settings dict; other threads keep the connections they
    hold (the gateway's request path is not the subject here).
    """
    settings_dict = connection.settings_dict
    saved = dict(settings_dict)
    if connection.vendor == "postgresql":
        settings_dict["PORT"] = free_port()
    else:
        settings_dict["NAME"] = "/nonexistent-directory/gateway.sqlite3"
    sync_context = not _in_event_loop()
    try:
        if sync_context:
            connection.close()
        for writer in writers:
            writer.close_connection()
        yield
    finally:
        settings_dict.update(saved)
        if sync_context:
            connection.close()  # it may have tried to connect meanwhile: start afresh
