"""The audit write path: records are queued in memory and written in batches off the request path.

A request only appends a dict to a list; a background task of the process writes the list every
``AUDIT_FLUSH_INTERVAL_S`` seconds (sooner when ``AUDIT_BATCH_SIZE`` are waiting) with one
``bulk_create``. A failed write keeps the batch and tries again; graceful shutdown flushes what is
left. What a crash can lose is described in docs/adr/0007-audit-write-path.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

from . import metrics

logger = logging.getLogger(__name__)

# Beyond this many waiting records (the database is down for long) new ones are still kept but an
# error is logged each flush, so an operator notices before memory becomes a problem.
_WARN_BACKLOG = 100_000


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest() if text else ""


def _write(batch: list[dict[str, Any]]) -> None:
    from .models import AuditRecord

    close_old_connections()
    try:
        AuditRecord.objects.bulk_create(
            [AuditRecord(**row) for row in batch], ignore_conflicts=True
        )
    finally:
        close_old_connections()


class AuditWriter:
    """Per-process queue of audit rows and the task that writes them."""

    def __init__(self) -> None:
        self._pending: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._flush_lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def submit(self, row: dict[str, Any]) -> None:
        """Queue one record (never blocks, never touches the database)."""
        gw = settings.GATEWAY
        if gw["AUDIT_STORE"] == "hash":
            row["prompt_sha256"] = sha256(row.get("prompt", ""))
            row["output_sha256"] = sha256(row.get("output", ""))
            row["prompt"] = ""
            row["output"] = ""
        self._pending.append(row)
        self._ensure_running()
        if len(self._pending) >= gw["AUDIT_BATCH_SIZE"] and self._wake is not None:
            self._wake.set()

    def _ensure_running(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # called from sync code; the next async submit or flush() will write it
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._wake = asyncio.Event()
            self._flush_lock = asyncio.Lock()
            self._task = loop.create_task(self._run(), name="audit-writer")

    async def _run(self) -> None:
        interval = settings.GATEWAY["AUDIT_FLUSH_INTERVAL_S"]
        assert self._wake is not None
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                logger.exception("audit: writing %s records failed; will retry", len(self._pending))
                await asyncio.sleep(min(5.0, interval * 4))

    async def flush(self) -> int:
        """Write everything queued so far; returns how many records were written."""
        if self._flush_lock is None:
            self._flush_lock = asyncio.Lock()
        async with self._flush_lock:
            written = 0
            while self._pending:
                batch = self._pending[: settings.GATEWAY["AUDIT_BATCH_SIZE"]]
                try:
                    await sync_to_async(_write, thread_sensitive=False)(batch)
                except Exception:
                    if len(self._pending) > _WARN_BACKLOG:
                        logger.error("audit: %s records waiting to be written", len(self._pending))
                    raise
                # Only drop what was written: rows queued meanwhile stay for the next batch.
                del self._pending[: len(batch)]
                written += len(batch)
                metrics.AUDIT_PENDING_WRITES.inc(len(batch))
            return written

    def flush_sync(self) -> int:
        """Write everything queued, from synchronous code (shutdown hooks, tests)."""
        written = 0
        while self._pending:
            batch = self._pending[: settings.GATEWAY["AUDIT_BATCH_SIZE"]]
            _write(batch)
            del self._pending[: len(batch)]
            written += len(batch)
        return written

    async def stop(self) -> None:
        """Flush and stop the background task (graceful shutdown)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
            self._task = None
        for _ in range(3):
            try:
                await self.flush()
                return
            except Exception:
                logger.exception("audit: flush at shutdown failed; retrying")
                await asyncio.sleep(0.5)
        logger.error("audit: %s records could not be written at shutdown", len(self._pending))


audit_writer = AuditWriter()
