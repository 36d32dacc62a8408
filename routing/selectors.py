"""Reads of completions for their callers."""

from __future__ import annotations

from typing import Any

from .audit import audit_writer
from .hooks import completion_review
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


def review_queued(*, request_id: str, reason: str) -> dict[str, Any] | None:
    """What a response says about the review its answer was queued for (None: not queued).
    ``id`` is what ``POST /v1/reviews/{id}/decision`` takes; the item itself is written with the
    audit record, a moment after the response."""
    if not reason:
        return None
    return {"id": request_id, "status": "pending", "queue_reason": reason}


def completion_status(*, request_id: str, agent: str) -> dict[str, Any] | None:
    """An agent's completion with its review verdict, or None when it is not this agent's.

    ``status`` is the current state: the gate's until a reviewer decides, then the decision
    (approved, rejected, corrected; ``gate_status`` keeps the gate's). ``final_output`` is what
    to use now: the correction when there is one, nothing after a rejection. A record still
    waiting in this process's audit queue is answered from there.
    """
    record = AuditRecord.objects.filter(request_id=request_id, agent=agent).first()
    if record is None:
        pending = audit_writer.pending_row(request_id)
        if pending is None or pending.get("agent") != agent:
            return None
        return {
            **_public(pending),
            "gate_status": pending["status"],
            "review": review_queued(
                request_id=request_id, reason=str(pending.get("review_reason") or "")
            ),
            "final_output": pending.get("output", ""),
        }
    data = _public({f.name: getattr(record, f.name) for f in AuditRecord._meta.concrete_fields})
    data["gate_status"] = record.status
    verdict = completion_review(request_id)
    review = verdict.get("review") if verdict else None
    data["review"] = review
    data["final_output"] = record.output
    if review is not None and review["status"] != "pending":
        data["status"] = review["status"]
        if review["status"] == "rejected":
            data["final_output"] = None
        elif review.get("corrected_output"):
            data["final_output"] = review["corrected_output"]
    return data
