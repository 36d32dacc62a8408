"""How queued audit rows reach the database, and what becomes of rows it refuses.

A batch is made storable (``storable_row``) and written in one transaction: the records, their
spend rollups and their review items. When the database refuses the batch for its data, each row
is written again on its own, with its rollups and review item in its own transaction; a row still
refused is written in a reduced form (``reduced_row``); a reduced row still refused is parked in
the dead-letter table. Nothing is tried forever. A database that cannot be reached is not a bad
row: ``DatabaseUnavailable`` tells the writer to keep the batch and try again later
(``is_data_error`` draws the line). See docs/adr/0007-audit-write-path.md.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any

import orjson
from django.db import close_old_connections, connection, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from agents.models import SpendRollup
from agents.spend import rollups_add
from gateway_project.shared_state import shared_state
from gateway_project.state_keys import AUDIT_DEAD_LETTERS_KEY

from . import metrics
from .hooks import audit_rows_for_review
from .models import AuditDeadLetter, AuditRecord
from .storable import json_text, storable_json, storable_text

logger = logging.getLogger("routing.audit")

# The reduced form keeps this many attempts and validator results, and strings this long in them
# and in the metadata (a callback URL is at most 2000 characters).
_REDUCED_MAX_ITEMS = 50
_REDUCED_MAX_TEXT = 2000
# SQLSTATE classes that blame the rows: data exception, integrity constraint violation, program
# limit exceeded (a value too large for an index, say). Every other class blames the database.
_DATA_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})


def sha256(text: str) -> str:
    """Hex SHA-256 of ``text`` ("" for no text); lone surrogates are hashed as they are."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest() if text else ""


class DatabaseUnavailable(Exception):
    """The database could not be reached or used; the first ``settled`` rows of the batch were
    written (or parked) all the same, the others are still to be written."""

    def __init__(self, cause: BaseException, *, settled: int = 0) -> None:
        super().__init__(f"database unavailable: {type(cause).__name__}")
        self.cause = cause
        self.settled = settled


def is_data_error(exc: BaseException) -> bool:
    """Whether ``exc`` blames the rows written (write them alone, reduce, park them) rather than the
    database (keep them and try later).

    A server error carries a SQLSTATE whose class says which. Without one: ``OperationalError``
    and ``InterfaceError`` (refused or lost connections, a locked SQLite file) and OS errors
    blame the database, as does any other database error; ``DataError``, ``IntegrityError`` and
    ``ProgrammingError`` raised before the server saw the query (a NUL psycopg refuses to send,
    a value no adapter takes) blame the rows, as does every error of Python code handling them
    (text that cannot be encoded, JSON orjson refuses, a value of the wrong type). Exception
    classes are told apart by name, the DB-API's, so Django's, psycopg's and sqlite3's alike.
    """
    driver = exc.__cause__ if exc.__cause__ is not None else exc
    sqlstate = getattr(driver, "sqlstate", None) or getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        return sqlstate[:2] in _DATA_SQLSTATE_CLASSES
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"OperationalError", "InterfaceError"} or isinstance(exc, OSError | MemoryError):
        return False
    if names & {"DataError", "IntegrityError", "ProgrammingError"}:
        return True
    return "DatabaseError" not in names


def error_text(exc: BaseException) -> str:
    """The error as stored with a reduced record or a dead letter (class, SQLSTATE, first line)."""
    driver = exc.__cause__ if exc.__cause__ is not None else exc
    sqlstate = getattr(driver, "sqlstate", None)
    head = type(exc).__name__ + (f" [{sqlstate}]" if sqlstate else "")
    message = str(exc).strip().splitlines()
    return storable_text(f"{head}: {message[0][:300]}" if message else head)


def _error_label(exc: BaseException) -> str:
    """What a log line says of an error: its class and SQLSTATE, never the values it may quote."""
    driver = exc.__cause__ if exc.__cause__ is not None else exc
    sqlstate = getattr(driver, "sqlstate", None)
    return type(exc).__name__ + (f" [{sqlstate}]" if sqlstate else "")


# --- making rows storable -----------------------------------------------------------------------


@cache
def _text_limits() -> dict[str, int]:
    """Longest text each row key may hold: its audit column's, and ``project``'s rollup column's.
    (Computed on first use: model metadata is complete once the apps are loaded.)"""
    limits = {
        f.name: f.max_length
        for f in AuditRecord._meta.concrete_fields
        if isinstance(f, models.CharField) and f.max_length
    }
    project = SpendRollup._meta.get_field("project")
    limits["project"] = project.max_length or 100
    return limits


def storable_row(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with its text and JSON values made storable (routing/storable.py), text cut to its
    column's length and NaN or infinite numbers made null; ``row`` itself when nothing needed a
    change."""
    limits = _text_limits()
    fixed: dict[str, Any] | None = None
    for name, value in row.items():
        if isinstance(value, str):
            # The common case inline (no call): ASCII without NUL needs no change.
            clean = value.isascii() and "\x00" not in value
            new: Any = value if clean else storable_text(value)
            limit = limits.get(name)
            if limit is not None and len(new) > limit:
                new = new[:limit]
        elif isinstance(value, dict | list | tuple):
            new = storable_json(value)
        elif isinstance(value, float) and not math.isfinite(value):
            new = None  # NaN is no cost or confidence; the reduced form drops it where required
        else:
            continue
        if new is not value:
            if fixed is None:
                fixed = dict(row)
            fixed[name] = new
    return row if fixed is None else fixed


# --- one transaction of rows --------------------------------------------------------------------


class _BatchInsert:
    """One ``INSERT … ON CONFLICT DO NOTHING`` for many audit rows, via ``executemany``.

    ``bulk_create`` builds a model instance and compiles SQL per row: at a thousand requests a
    second that was a fifth of the gateway's CPU. Values that need the backend's adaptation
    (datetimes, decimals, JSON) still go through the field's own ``get_db_prep_save``.
    """

    def __init__(self) -> None:
        self.fields = [f for f in AuditRecord._meta.concrete_fields if not f.primary_key]
        self.defaults = {f.name: f.get_default() for f in self.fields}
        plain = (models.CharField, models.TextField, models.IntegerField, models.BooleanField)
        self.needs_prep = [
            not isinstance(f, plain) or isinstance(f, models.JSONField) for f in self.fields
        ]
        self._sql: dict[str, str] = {}

    def sql(self, connection: BaseDatabaseWrapper) -> str:
        if connection.vendor not in self._sql:
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
            elif isinstance(field, models.DecimalField):
                # SQLite would store a number its column cannot hold, and fail every later read
                # of the record; refuse it here as PostgreSQL does, so both reduce the row.
                fits, number = _decimal_value(field, value)
                if not fits:
                    raise ValueError(f"{field.name} does not fit its column")
                values.append(field.get_db_prep_save(number, connection))
            else:
                values.append(field.get_db_prep_save(value, connection))
        return values


def _orjson_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _json_adapter(connection: BaseDatabaseWrapper) -> Callable[[Any], Any]:
    """JSON columns encoded by orjson (several times faster than the json module Django uses)."""
    if connection.vendor == "postgresql":
        from psycopg.types.json import Jsonb  # PostgreSQL only: SQLite installs need no psycopg

        return lambda value: Jsonb(value, dumps=_orjson_text)
    return _orjson_text


_insert: _BatchInsert | None = None


def _rows_write(rows: list[dict[str, Any]]) -> None:
    """Insert audit rows with their spend rollups and review items, in one transaction."""
    global _insert
    if _insert is None:
        _insert = _BatchInsert()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.executemany(
                _insert.sql(connection), [_insert.params(row, connection) for row in rows]
            )
        # Spend per day, agent, model and task type, kept with the records they come from.
        rollups_add(rows)
        # Answers for a person to look at get their review item in the same transaction (the
        # review queue listens: routing/hooks.py).
        to_review = [row for row in rows if row.get("review_reason")]
        if to_review:
            audit_rows_for_review(to_review)


# --- batches, rows, reduced rows, dead letters ---------------------------------------------------


@dataclass
class WriteReport:
    """What became of a batch: rows written as they were, in reduced form, parked, or lost (the
    dead-letter table refused them too; logged), and the class of the first error seen."""

    written: int = 0
    reduced: int = 0
    parked: int = 0
    lost: int = 0
    error: str = ""

    @property
    def recorded(self) -> int:
        """Rows that have an audit record now."""
        return self.written + self.reduced


def batch_write(batch: list[dict[str, Any]]) -> WriteReport:
    """Write a batch; rows the database refuses are written alone, reduced or parked.

    Raises ``DatabaseUnavailable`` (with how many rows are settled) when the database cannot be
    used; the caller keeps the unsettled rows.
    """
    close_old_connections()
    try:
        rows = [storable_row(row) for row in batch]
        try:
            _rows_write(rows)
            return WriteReport(written=len(rows))
        except Exception as exc:
            if not is_data_error(exc):
                raise DatabaseUnavailable(exc) from exc
            first_error: BaseException = exc
        report = WriteReport(error=_error_label(first_error))
        if len(rows) > 1:
            metrics.AUDIT_WRITE_FAILURES.labels("batch").inc()
            logger.warning(
                "audit: a batch of %s records was refused (%s); writing them one by one",
                len(rows),
                report.error,
            )
        for index, row in enumerate(rows):
            try:
                outcome = _row_settle(row, refused=first_error if len(rows) == 1 else None)
            except DatabaseUnavailable as exc:
                exc.settled = index
                raise
            setattr(report, outcome, getattr(report, outcome) + 1)
        return report
    finally:
        close_old_connections()


def _row_settle(row: dict[str, Any], *, refused: BaseException | None = None) -> str:
    """Write one row as it is, else reduced, else park it; returns the ``WriteReport`` field it
    counts in. ``refused``: the row was already refused on its own with this error."""
    if refused is None:
        refused = _refusal(lambda: _rows_write([row]))
        if refused is None:
            return "written"
    metrics.AUDIT_WRITE_FAILURES.labels("row").inc()
    first = refused
    refused = _refusal(lambda: _rows_write([reduced_row(row, first)]))
    if refused is None:
        logger.error(
            "audit: record %s was refused (%s); written in reduced form",
            _request_id(row),
            _error_label(first),
        )
        return "reduced"
    metrics.AUDIT_WRITE_FAILURES.labels("reduced").inc()
    last = refused
    refused = _refusal(lambda: dead_letter_park(row, _both_errors(first, last)))
    if refused is None:
        logger.error(
            "audit: record %s was refused even in reduced form (%s); parked as a dead letter",
            _request_id(row),
            _error_label(last),
        )
        return "parked"
    metrics.AUDIT_WRITE_FAILURES.labels("dead_letter").inc()
    logger.error(
        "audit: record %s is lost: the dead-letter table refused it too (%s)",
        _request_id(row),
        _error_label(refused),
    )
    return "lost"


def _both_errors(first: BaseException, reduced: BaseException) -> str:
    """A dead letter's error: why the row was refused, and why its reduced form was."""
    return f"{error_text(first)} | reduced form: {error_text(reduced)}"


def _refusal(write: Callable[[], object]) -> BaseException | None:
    """Run one write: None when it went through, its error when that blames the rows; raises
    ``DatabaseUnavailable`` when the error blames the database."""
    try:
        write()
    except Exception as exc:  # sorted here: the database's failures are raised
        if not is_data_error(exc):
            raise DatabaseUnavailable(exc) from exc
        return exc
    return None


def _request_id(row: dict[str, Any]) -> str:
    value = row.get("request_id")
    return storable_text(value[:64]) if isinstance(value, str) else "(no request id)"


def reduced_row(row: dict[str, Any], error: BaseException) -> dict[str, Any]:
    """The row in a form every column takes: prompt and output replaced by their SHA-256, each
    other value kept only when its column can hold it (else the column's default, its name listed
    under ``metadata.audit_reduced.dropped``), JSON reduced to flat values, the error noted.

    Raises ``ValueError`` for a row without a request id or a creation time: no record can stand
    for it, so it is parked.
    """
    request_id, created_at = row.get("request_id"), row.get("created_at")
    if not isinstance(request_id, str) or not request_id:
        raise ValueError("the row has no request id")
    if not isinstance(created_at, datetime):
        raise ValueError("the row has no creation time")
    reduced: dict[str, Any] = {}
    dropped: list[str] = []
    for field in AuditRecord._meta.concrete_fields:
        name = field.name
        if field.primary_key or name in ("prompt", "output", "metadata"):
            continue
        if name not in row:
            if field.get_default() is None and not field.null:  # a required value is missing
                dropped.append(name)
                reduced[name] = _fallback(field, created_at)
            continue
        if isinstance(field, models.JSONField):
            reduced[name], complete = _flat_items(row[name])
            if not complete:
                dropped.append(name)
            continue
        ok, value = _column_value(field, row[name])
        if ok:
            reduced[name] = value
        else:
            dropped.append(name)
            reduced[name] = _fallback(field, created_at)
    for name in ("prompt", "output"):
        text = row.get(name, "")
        if isinstance(text, str):
            reduced[name] = ""
            if text:
                reduced[f"{name}_sha256"] = sha256(text)
        else:
            dropped.append(name)
    # Not audit columns, but the rollups and the review queue read them.
    for name, limit in (("project", _text_limits()["project"]), ("review_reason", 32)):
        value = row.get(name)
        if isinstance(value, str):
            reduced[name] = storable_text(value)[:limit]
    metadata, complete = _flat(row.get("metadata"))
    if not complete:
        dropped.append("metadata")
    metadata["audit_reduced"] = {"error": error_text(error), "dropped": dropped}
    reduced["metadata"] = metadata
    return reduced


def _column_value(field: models.Field[Any, Any], value: Any) -> tuple[bool, Any]:
    """(True, the value as its column stores it) or (False, None) when the column cannot."""
    if isinstance(field, models.CharField | models.TextField):
        if not isinstance(value, str):
            return False, None
        text = storable_text(value)
        return True, text[: field.max_length] if field.max_length else text
    if isinstance(field, models.BooleanField):
        return isinstance(value, bool), value
    if isinstance(field, models.IntegerField):
        low, high = connection.ops.integer_field_range(field.get_internal_type())
        ok = isinstance(value, int) and not isinstance(value, bool)
        ok = ok and (low is None or value >= low) and (high is None or value <= high)
        return ok, value
    if isinstance(field, models.FloatField):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)
        return ok, float(value) if ok else None
    if isinstance(field, models.DecimalField):
        return _decimal_value(field, value)
    if isinstance(field, models.DateTimeField):
        return isinstance(value, datetime), value
    return True, value


def _decimal_value(field: models.DecimalField[Any, Any], value: Any) -> tuple[bool, Any]:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return False, None
    number = Decimal(str(value))
    digits, places = field.max_digits or 0, field.decimal_places or 0
    if not number.is_finite() or abs(number) >= Decimal(10) ** (digits - places):
        return False, None
    return True, round(number, places)


def _fallback(field: models.Field[Any, Any], created_at: datetime) -> Any:
    """What a dropped value becomes: the column's default, else a neutral value."""
    if field.has_default() or field.null:
        return field.get_default()
    if isinstance(field, models.DateTimeField):
        return created_at
    if isinstance(field, models.IntegerField | models.DecimalField | models.FloatField):
        return 0
    if isinstance(field, models.BooleanField):
        return False
    return ""


def _flat_value(value: Any) -> bool:
    """Whether a JSON value is plain enough for the reduced form (no nesting, nothing huge)."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and len(value) <= _REDUCED_MAX_TEXT


def _flat(value: Any) -> tuple[dict[str, Any], bool]:
    """A mapping's plain entries, and whether that is all of it. A string too long is dropped,
    not cut: a cut callback URL would be a wrong one."""
    if not isinstance(value, dict):
        return {}, value is None
    flat = {
        storable_text(key): storable_text(item) if isinstance(item, str) else item
        for key, item in value.items()
        if isinstance(key, str) and len(key) <= _REDUCED_MAX_TEXT and _flat_value(item)
    }
    return flat, len(flat) == len(value)


def _flat_items(value: Any) -> tuple[list[dict[str, Any]], bool]:
    """A list of mappings (attempts, validator results) reduced to their plain entries, and
    whether that is all of it."""
    if not isinstance(value, list | tuple):
        return [], False
    items = [_flat(item) for item in value[:_REDUCED_MAX_ITEMS] if isinstance(item, dict)]
    complete = len(items) == len(value) and all(whole for _, whole in items)
    return [flat for flat, _ in items], complete


def dead_letter_park(row: dict[str, Any], error: str) -> None:
    """Keep a row the database refused even in reduced form, for an admin to write again."""
    AuditDeadLetter.objects.create(
        request_id=_request_id(row),
        row=json_text(row),
        error=error,
        created_at=timezone.now(),
    )
    shared_state().delete(AUDIT_DEAD_LETTERS_KEY)


def dead_letters_count() -> int:
    """How many dead letters wait (counted up to 10 000: the table should be empty)."""
    return AuditDeadLetter.objects.all()[:10_000].count()


# --- dead letters, written again ----------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetterRetry:
    """What writing dead letters again did: how many are records now, how many are still refused."""

    written: int
    refused: int


def _row_from_dead_letter(text: str) -> dict[str, Any]:
    row = orjson.loads(text)
    if not isinstance(row, dict):
        raise ValueError("the dead letter's row is not a JSON object")
    for name in ("created_at", "finished_at"):
        value = row.get(name)
        if isinstance(value, str):
            row[name] = parse_datetime(value) or value
    return row


class _StillRefused(Exception):
    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def audit_dead_letters_retry(*, ids: Iterable[int]) -> DeadLetterRetry:
    """Write the given dead letters again (as they are, else reduced); each one written is removed
    in the same transaction, each one still refused keeps its row with the new error noted.

    Raises ``DatabaseUnavailable`` when the database cannot be used.
    """
    written = refused = 0
    for letter in AuditDeadLetter.objects.filter(pk__in=list(ids)).order_by("pk"):
        try:
            with transaction.atomic():
                _dead_letter_write(letter)
            written += 1
        except _StillRefused as exc:
            error = exc.error
        except DatabaseUnavailable:
            raise
        except Exception as exc:  # the row itself cannot be read back
            if not is_data_error(exc):
                raise DatabaseUnavailable(exc) from exc
            error = error_text(exc)
        else:
            continue
        letter.error = error
        letter.retries += 1
        letter.last_retry_at = timezone.now()
        letter.save(update_fields=["error", "retries", "last_retry_at"])
        refused += 1
    shared_state().delete(AUDIT_DEAD_LETTERS_KEY)
    return DeadLetterRetry(written=written, refused=refused)


def _dead_letter_write(letter: AuditDeadLetter) -> None:
    """Write a dead letter's row (as it is, else reduced) and remove the dead letter; raises
    ``_StillRefused`` when both are refused. Call in a transaction."""
    row = storable_row(_row_from_dead_letter(letter.row))
    first = _refusal(lambda: _rows_write([row]))
    if first is not None:
        reduced = _refusal(lambda: _rows_write([reduced_row(row, first)]))
        if reduced is not None:
            raise _StillRefused(_both_errors(first, reduced))
    letter.delete()
