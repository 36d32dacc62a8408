"""Builders for the review tests: audit records as the gateway writes them, queued for review."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.utils import timezone

from reviews.models import ReviewItem
from reviews.services import review_items_create, reviewers_group_ensure
from routing.models import AuditRecord

VALIDATION = [
    {"name": "non_empty", "score": 10, "weight": 1.0, "reason": "has text"},
    {"name": "json_schema", "score": 1.5, "weight": 2.0, "reason": "missing key 'total'"},
]
ATTEMPTS = [
    {"provider": "sim-ollama", "model": "sim-fast", "tier": "fast", "outcome": "error",
     "error_class": "transient", "status_code": 503, "latency_ms": 12, "detail": "busy"},
    {"provider": "sim-openai", "model": "sim-medium", "tier": "medium", "outcome": "ok",
     "status_code": 200, "latency_ms": 40, "confidence": 2.9},
]  # fmt: skip


def audit_row(**fields: Any) -> dict[str, Any]:
    """An audit row dict as the audit writer gets it (``review_reason`` included)."""
    now = timezone.now()
    row: dict[str, Any] = {
        "request_id": "call-" + uuid.uuid4().hex,
        "endpoint": "completion",
        "caller": "agent-a",
        "agent": "agent-a",
        "task_type": "invoice",
        "model": "sim-medium",
        "tier": "medium",
        "status": "pending_review",
        "http_status": 200,
        "confidence": 2.9,
        "validation": VALIDATION,
        "attempts": ATTEMPTS,
        "prompt": "user: Total of invoice 42?",
        "output": '{"sum": 12}',
        "metadata": {},
        "created_at": now,
        "finished_at": now,
        "review_reason": "low_confidence",
    }
    row.update(fields)
    return row


def queued_item(*, age: timedelta | None = None, **fields: Any) -> ReviewItem:
    """An audit record and its review item, created as the audit writer does."""
    row = audit_row(**fields)
    AuditRecord.objects.create(**{k: v for k, v in row.items() if k != "review_reason"})
    review_items_create(rows=[row])
    item = ReviewItem.objects.get(audit_record__request_id=row["request_id"])
    if age is not None:
        item.created_at = timezone.now() - age
        item.save(update_fields=["created_at"])
    return item


def reviewer(username: str = "rita") -> User:
    """A staff user in the reviewers group (what ``create_reviewer`` makes)."""
    user = User.objects.create_user(username=username, password="pw-" + username, is_staff=True)
    user.groups.add(reviewers_group_ensure())
    return user


def worker_database_url() -> str:
    """A DATABASE_URL naming the test database this session created (for worker processes)."""
    from django.db import connection

    name = connection.settings_dict["NAME"]
    if connection.vendor == "sqlite":
        return f"sqlite:///{name}"
    user = connection.settings_dict.get("USER") or "postgres"
    host = connection.settings_dict.get("HOST") or "127.0.0.1"
    port = connection.settings_dict.get("PORT") or 5432
    return f"postgres://{user}@{host}:{port}/{name}"
