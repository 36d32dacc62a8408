"""Spend rollups: requests, tokens and cost per day, agent, key, project, model and task type.

The audit writer adds each batch of records to the rollups in the same transaction
(``rollups_add``), with one upsert per bucket. Budgets start their counters from these rows and the
admin reports from them; nothing on the request path reads the audit table.

A request counts once, on the model that answered it; its tokens and cost are charged call by call
to the model that served each (``row_charges``): an escalation's medium and large calls to medium
and large, a second opinion to its model, a classification to the classifier.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Q, Sum

from .models import SpendRollup
from .selectors import BudgetRef

_COUNTS = ("requests", "failed", "cached", "tokens_in", "tokens_out", "cost_usd")
_BUCKET = ("day", "agent", "api_key_prefix", "project", "model", "task_type")


@dataclass(frozen=True, slots=True)
class Charge:
    """What one model (a public name) used for one request."""

    model: str
    tokens_in: int
    tokens_out: int
    cost_usd: Decimal


def _count(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def _usd(value: Any) -> Decimal:
    try:
        return max(Decimal(0), Decimal(str(value or 0)))
    except ArithmeticError:
        return Decimal(0)


def row_charges(row: dict[str, Any]) -> list[Charge]:
    """An audit row's tokens and cost, per model that served them: each attempt that carries its
    own (``tokens_in``, ``tokens_out``, ``cost_usd``) to its model; whatever the attempts do not
    account for (a record written before attempts carried their usage) to the row's model."""
    charges: dict[str, list[Any]] = {}
    for attempt in row.get("attempts") or ():
        if not isinstance(attempt, dict) or "cost_usd" not in attempt:
            continue
        totals = charges.setdefault(str(attempt.get("model") or ""), [0, 0, Decimal(0)])
        totals[0] += _count(attempt.get("tokens_in"))
        totals[1] += _count(attempt.get("tokens_out"))
        totals[2] += _usd(attempt.get("cost_usd"))
    rest = [
        _count(row.get("tokens_in")) - sum(t[0] for t in charges.values()),
        _count(row.get("tokens_out")) - sum(t[1] for t in charges.values()),
        _usd(row.get("cost_usd")) - sum((t[2] for t in charges.values()), Decimal(0)),
    ]
    if any(part > 0 for part in rest):
        totals = charges.setdefault(str(row.get("model") or ""), [0, 0, Decimal(0)])
        for index, part in enumerate(rest):
            totals[index] += max(part, 0)
    return [Charge(model, *totals) for model, totals in charges.items()]


def _bucket(row: dict[str, Any], model: str) -> tuple[Any, ...]:
    created = row["created_at"]
    day = created.astimezone(UTC).date() if isinstance(created, datetime) else created
    return (
        day,
        row.get("agent") or row.get("caller") or "",
        row.get("api_key_prefix", ""),
        row.get("project", ""),
        model,
        row.get("task_type", ""),
    )


def rollups_add(rows: Iterable[dict[str, Any]]) -> None:
    """Add audit rows (as the audit writer queues them) to their rollups; call in its transaction.
    The request counts on its row's model; tokens and cost on each model that served a call."""
    totals: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        counts = totals.setdefault(_bucket(row, row.get("model", "")), [0, 0, 0, 0, 0, Decimal(0)])
        metadata = row.get("metadata") or {}
        cache = metadata.get("cache") if isinstance(metadata, dict) else None
        counts[0] += 1
        counts[1] += row.get("status") == "failed"
        counts[2] += bool(isinstance(cache, dict) and cache.get("hit"))
        for charge in row_charges(row):
            counts = totals.setdefault(_bucket(row, charge.model), [0, 0, 0, 0, 0, Decimal(0)])
            counts[3] += charge.tokens_in
            counts[4] += charge.tokens_out
            counts[5] += charge.cost_usd
    if not totals:
        return
    quote = connection.ops.quote_name
    table = quote(SpendRollup._meta.db_table)
    columns = ", ".join(quote(c) for c in (*_BUCKET, *_COUNTS))
    placeholders = ", ".join(["%s"] * (len(_BUCKET) + len(_COUNTS)))
    updates = ", ".join(f"{quote(c)} = {table}.{quote(c)} + excluded.{quote(c)}" for c in _COUNTS)
    conflict = ", ".join(quote(c) for c in _BUCKET)
    sql = (
        f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) "
        f"ON CONFLICT ({conflict}) DO UPDATE SET {updates}"
    )
    cost_field = SpendRollup._meta.get_field("cost_usd")
    params = [
        [*bucket, *counts[:5], cost_field.get_db_prep_save(counts[5], connection)]
        for bucket, counts in sorted(totals.items(), key=lambda item: str(item[0]))
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def spent_nano(ref: BudgetRef, start: datetime, end: datetime) -> int:
    """What the rollups say was spent under a budget in ``[start, end)``, in nano-USD."""
    scope = Q(day__gte=start.date(), day__lt=end.date())
    if ref.scope == "project":
        scope &= Q(project=ref.target)
    elif ref.scope == "agent":
        scope &= Q(agent=ref.target)
    elif ref.scope == "key":
        scope &= Q(api_key_prefix=ref.target)
    total = SpendRollup.objects.filter(scope).aggregate(total=Sum("cost_usd"))["total"]
    return int(Decimal(total or 0) * 1_000_000_000)
