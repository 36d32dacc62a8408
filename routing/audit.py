"""The audit write path: records are queued in memory and written in batches off the request path.

A request only appends a dict to a list; a background task of the process writes the list every
``AUDIT_FLUSH_INTERVAL_S`` seconds (sooner when ``AUDIT_BATCH_SIZE`` are waiting) with one
multi-row insert. A failed write keeps the batch and tries again; graceful shutdown flushes what is
left. What a crash can lose is described in docs/adr/0007-audit-write-path.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, connection, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from . import metrics

logger = logging.getLogger(__name__)

# Beyond this many waiting records (the database is down for long) new ones are still kept but an
# error is logged each flush, so an operator notices before memory becomes a problem.
_WARN_BACKLOG = 100_000


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest() if text else ""


class _BatchInsert:
    """One ``INSERT … ON CONFLICT DO NOTHING`` for many audit rows, via ``executemany``.

    ``bulk_create`` builds a model instance and compiles SQL per row: at a thousand requests a
    second that was a fifth of the gateway's CPU. Values that need the backend's adaptation
    (datetimes, decimals, JSON) still go through the field's own ``get_db_prep_save``.
    """

    def __init__(self) -> None:
        from .models import AuditRecord

        self.fields = [f for f in AuditRecord._meta.concrete_fields if not f.primary_key]
        self.defaults = {f.name: f.get_default() for f in self.fields}
        plain = (models.CharField, models.TextField, models.IntegerField, models.BooleanField)
        self.needs_prep = [
            not isinstance(f, plain) or isinstance(f, models.JSONField) for f in self.fields
        ]
        self._sql: dict[str, str] = {}

    def sql(self, connection: BaseDatabaseWrapper) -> str:
        if connection.vendor not in self._sql:
            from .models import AuditRecord

            quote = connection.ops.quote_name
            columns = ", ".join(quote(f.column) for f in self.fields)
            placeholders = ", ".join(["%s"] * len(self.fields))
            self._sql[connection.vendor] = (
                f"INSERT INTO {quote(AuditRecord._meta.db_table)} ({columns}) "
                f"VALUES ({placeholders}) ON CONFLICT ({quote('request_id')}) DO NOTHING"
            )
        return self._sql[connection.vendor]

    def params(self, row: dict[str, Any], connection: BaseDatabaseWrapper) -> list[Any]:
        values = []
        json_value = _json_adapter(connection)
        for field, prep in zip(self.fields, self.needs_prep, strict=True):
            value = row.get(field.name, self.defaults[field.name])
            if not prep:
                values.append(value)
            elif isinstance(field, models.JSONField):
                values.append(json_value(value))
            else:
                values.append(field.get_db_prep_save(value, connection))
        return values


def _orjson_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _json_adapter(connection: BaseDatabaseWrapper) -> Callable[[Any], Any]:
    """JSON columns encoded by orjson (several times faster than the json module Django uses)."""
    if connection.vendor == "postgresql":
        from psycopg.types.json import Jsonb

        return lambda value: Jsonb(value, dumps=_orjson_text)
    return _orjson_text


_insert: _BatchInsert | None = None


def _write(batch: list[dict[str, Any]]) -> None:
    global _insert
    if _insert is None:
        _insert = _BatchInsert()
    close_old_connections()
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.executemany(
                    _insert.sql(connection), [_insert.params(row, connection) for row in batch]
                )
            # Spend per day, agent, model and task type, kept with the records they come from.
            from agents.spend import rollups_add

            rollups_add(batch)
            # Answers for a person to look at get their review item in the same transaction.
            to_review = [row for row in batch if row.get("review_reason")]
            if to_review:
                from reviews.services import review_items_create

                review_items_create(rows=to_review)
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

    def pending_row(self, request_id: str) -> dict[str, Any] | None:
        """A queued, not yet written record (a caller polling right after its answer)."""
        for row in reversed(self._pending):
            if row.get("request_id") == request_id:
                return row
        return None

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
