"""Reads of completions for their callers."""

from __future__ import annotations

from typing import Any

from .audit import audit_writer
from .models import AuditRecord


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["request_id"],
        "status": row["status"],
        "confidence": row.get("confidence"),
        "model": row.get("model", ""),
        "task_type": row.get("task_type", ""),
        "output": row.get("output", ""),
        "created_at": row["created_at"].isoformat(),
    }


def completion_status(*, request_id: str, agent: str) -> dict[str, Any] | None:
    """An agent's completion with its review verdict, or None when it is not this agent's.

    A record still waiting in this process's audit queue is answered from there.
    """
    from reviews.selectors import verdict_for_request

    record = AuditRecord.objects.filter(request_id=request_id, agent=agent).first()
    if record is None:
        pending = audit_writer.pending_row(request_id)
        if pending is None or pending.get("agent") != agent:
            return None
        return {**_public(pending), "review": None, "final_output": pending.get("output", "")}
    data = _public({f.name: getattr(record, f.name) for f in AuditRecord._meta.concrete_fields})
    verdict = verdict_for_request(request_id=request_id)
    review = verdict.get("review") if verdict else None
    data["review"] = review
    # What the agent should use now: a reviewer's correction wins over the model's output.
    corrected = review.get("corrected_output") if review else None
    data["final_output"] = corrected or record.output
    return data
