"""The audit write path: records are queued in memory and written in batches off the request path.

A request only appends a dict to a list; a background task of the process writes the list every
``AUDIT_FLUSH_INTERVAL_S`` seconds (sooner when ``AUDIT_BATCH_SIZE`` are waiting) with one
multi-row insert (routing/audit_write.py, which also isolates rows the database refuses). While the
database is unavailable the batch is kept and tried again; the queue is bounded by
``AUDIT_MAX_PENDING``, past which completion requests are refused (``backlogged``). Graceful
shutdown flushes what is left. See docs/adr/0007-audit-write-path.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections

from . import metrics
from .audit_write import DatabaseUnavailable, WriteReport, batch_write, sha256

__all__ = ["AuditWriter", "DatabaseUnavailable", "audit_writer", "sha256"]

logger = logging.getLogger(__name__)

# /health/ready fails once the writer has failed for this many flush intervals in a row.
_NOT_READY_AFTER_INTERVALS = 8
# /health is degraded while more than this share of AUDIT_MAX_PENDING waits.
_WARN_SHARE = 0.2


@dataclass(frozen=True, slots=True)
class AuditHealth:
    """This process's audit writer as /health shows it (no row contents, no error messages)."""

    status: str  # ok, backlog (above the warning level), failing (the database), full
    pending: int
    max_pending: int
    failing_since: datetime | None
    last_error: str  # the class of the last error, "" when none
    last_error_at: datetime | None
    # Why /health/ready should fail, "" when it should not.
    not_ready: str


class AuditWriter:
    """Per-process queue of audit rows and the task that writes them."""

    def __init__(self) -> None:
        self._pending: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._flush_lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: ThreadPoolExecutor | None = None
        # Since when (wall clock, monotonic) every write has failed for want of a database.
        self._failing_since: tuple[datetime, float] | None = None
        self._last_error = ""
        self._last_error_at: datetime | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def backlogged(self) -> bool:
        """The queue is full: refuse requests that would add to it (an in-memory length check)."""
        return len(self._pending) >= settings.GATEWAY["AUDIT_MAX_PENDING"]

    @property
    def retry_delay_s(self) -> float:
        """How long the writer waits before trying again after the database failed."""
        return float(min(5.0, settings.GATEWAY["AUDIT_FLUSH_INTERVAL_S"] * 4))

    @property
    def retry_after_s(self) -> int:
        """The ``Retry-After`` of a request refused while the queue is full."""
        return max(1, math.ceil(self.retry_delay_s))

    def health(self) -> AuditHealth:
        """The writer's state, from memory only."""
        gw = settings.GATEWAY
        pending, max_pending = len(self._pending), gw["AUDIT_MAX_PENDING"]
        failing_for = time.monotonic() - self._failing_since[1] if self._failing_since else 0.0
        if pending >= max_pending:
            status = "full"
        elif self._failing_since is not None:
            status = "failing"
        elif pending > max_pending * _WARN_SHARE:
            status = "backlog"
        else:
            status = "ok"
        not_ready = ""
        if pending >= max_pending:
            not_ready = f"audit queue full ({pending} records waiting)"
        elif failing_for > _NOT_READY_AFTER_INTERVALS * gw["AUDIT_FLUSH_INTERVAL_S"]:
            not_ready = f"audit writes failing for {failing_for:.0f} s ({self._last_error})"
        return AuditHealth(
            status=status,
            pending=pending,
            max_pending=max_pending,
            failing_since=self._failing_since[0] if self._failing_since else None,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
            not_ready=not_ready,
        )

    def _executor(self) -> ThreadPoolExecutor:
        """The writer's own thread, so the audit log holds one database connection per process
        (not one in each thread of the loop's default pool)."""
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-writer")
        return self._thread

    def close_connection(self) -> None:
        """Close the writer thread's database connection; the next write opens a new one."""
        if self._thread is not None:
            self._thread.submit(connections.close_all).result()

    def pending_row(self, request_id: str) -> dict[str, Any] | None:
        """A queued, not yet written record (a caller polling right after its answer)."""
        for row in reversed(self._pending):
            if row.get("request_id") == request_id:
                return row
        return None

    def submit(self, row: dict[str, Any]) -> None:
        """Queue one record (never blocks, never touches the database, never drops a record: the
        bound is enforced on the requests that would add to it, see ``backlogged``)."""
        gw = settings.GATEWAY
        if gw["AUDIT_STORE"] == "hash":
            row["prompt_sha256"] = sha256(row.get("prompt", ""))
            row["output_sha256"] = sha256(row.get("output", ""))
            row["prompt"] = ""
            row["output"] = ""
        self._pending.append(row)
        metrics.AUDIT_PENDING.set(len(self._pending))  # a microsecond or two, even multiprocess
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
            except DatabaseUnavailable as exc:
                # The driver's message ("connection refused", "database is locked") helps an
                # operator and quotes no row: the rows never reached the database.
                message = str(exc.cause).strip().partition("\n")[0][:200]
                logger.error(
                    "audit: the database is unavailable (%s: %s); %s records wait, retrying in %s s",
                    type(exc.cause).__name__,
                    message,
                    len(self._pending),
                    self.retry_delay_s,
                )
                await asyncio.sleep(self.retry_delay_s)
            except Exception:
                logger.exception("audit: writing %s records failed; will retry", len(self._pending))
                await asyncio.sleep(self.retry_delay_s)

    async def flush(self) -> int:
        """Write everything queued so far; returns how many records were written.

        Raises ``DatabaseUnavailable`` when the database cannot be used; the rows not written
        stay queued.
        """
        if self._flush_lock is None:
            self._flush_lock = asyncio.Lock()
        async with self._flush_lock:
            written = 0
            try:
                while self._pending:
                    batch = self._pending[: settings.GATEWAY["AUDIT_BATCH_SIZE"]]
                    try:
                        report = await sync_to_async(
                            batch_write, thread_sensitive=False, executor=self._executor()
                        )(batch)
                    except DatabaseUnavailable as exc:
                        self._failed(exc)
                        raise
                    # Only drop what was written: rows queued meanwhile stay for the next batch.
                    del self._pending[: len(batch)]
                    written += self._written(report)
            finally:
                metrics.AUDIT_PENDING.set(len(self._pending))
            return written

    def flush_sync(self) -> int:
        """Write everything queued, from synchronous code (shutdown hooks, tests)."""
        written = 0
        try:
            while self._pending:
                batch = self._pending[: settings.GATEWAY["AUDIT_BATCH_SIZE"]]
                try:
                    report = batch_write(batch)
                except DatabaseUnavailable as exc:
                    self._failed(exc)
                    raise
                del self._pending[: len(batch)]
                written += self._written(report)
        finally:
            metrics.AUDIT_PENDING.set(len(self._pending))
        return written

    def _written(self, report: WriteReport) -> int:
        self._failing_since = None
        if report.error:
            self._last_error, self._last_error_at = report.error, datetime.now(UTC)
        metrics.AUDIT_PENDING_WRITES.inc(report.recorded)
        return report.recorded

    def _failed(self, exc: DatabaseUnavailable) -> None:
        """The database failed: the settled rows leave the queue, the others wait."""
        del self._pending[: exc.settled]
        now = datetime.now(UTC)
        if self._failing_since is None:
            self._failing_since = (now, time.monotonic())
        self._last_error, self._last_error_at = type(exc.cause).__name__, now
        metrics.AUDIT_WRITE_FAILURES.labels("unavailable").inc()
        if len(self._pending) > settings.GATEWAY["AUDIT_MAX_PENDING"] * _WARN_SHARE:
            logger.error("audit: %s records waiting to be written", len(self._pending))

    async def stop(self) -> None:
        """Flush and stop the background task (graceful shutdown)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
            self._task = None
        try:
            for _ in range(3):
                try:
                    await self.flush()
                    return
                except Exception:
                    logger.exception("audit: flush at shutdown failed; retrying")
                    await asyncio.sleep(0.5)
            logger.error("audit: %s records could not be written at shutdown", len(self._pending))
        finally:
            if self._thread is not None:
                await asyncio.get_running_loop().run_in_executor(
                    self._thread, connections.close_all
                )
                self._thread.shutdown(wait=False)
                self._thread = None


audit_writer = AuditWriter()
