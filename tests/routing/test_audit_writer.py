"""The batched audit writer: nothing lost, written off the request path."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from routing import audit
from routing.audit import AuditWriter
from routing.models import AuditRecord

pytestmark = pytest.mark.django_db(transaction=True)


def row(n: int) -> dict[str, Any]:
    now = timezone.now()
    return {
        "request_id": f"call-{n}", "endpoint": "completion", "caller": "t", "status": "approved",
        "http_status": 200, "created_at": now, "finished_at": now, "prompt": "p", "output": "o",
    }  # fmt: skip


async def test_records_are_written_in_batches():
    """Queued records reach the database in batches of the configured size."""
    writer = AuditWriter()
    for n in range(1200):
        writer.submit(row(n))
    assert await writer.flush() == 1200
    assert await AuditRecord.objects.acount() == 1200
    assert writer.pending == 0


async def test_failed_write_keeps_the_batch(monkeypatch):
    """When the database refuses a batch, the records stay queued and are written later."""
    writer = AuditWriter()
    writer.submit(row(1))
    real_write = audit._write
    monkeypatch.setattr(
        audit, "_write", lambda batch: (_ for _ in ()).throw(RuntimeError("db down"))
    )
    with pytest.raises(RuntimeError):
        await writer.flush()
    assert writer.pending == 1
    monkeypatch.setattr(audit, "_write", real_write)
    await writer.flush()
    assert await AuditRecord.objects.filter(request_id="call-1").aexists()


async def test_stop_flushes_everything():
    """Graceful shutdown writes what is still queued."""
    writer = AuditWriter()
    for n in range(10):
        writer.submit(row(n))
    await writer.stop()
    assert await AuditRecord.objects.acount() == 10


async def test_hash_mode_stores_no_prompt(settings):
    """With AUDIT_STORE=hash only SHA-256 digests of prompt and output are kept."""
    settings.GATEWAY = {**settings.GATEWAY, "AUDIT_STORE": "hash"}
    writer = AuditWriter()
    writer.submit(row(1))
    await writer.flush()
    record = await AuditRecord.objects.aget(request_id="call-1")
    assert record.prompt == "" and record.output == ""
    assert record.prompt_sha256 == audit.sha256("p")
