"""Spend rollups: requests, tokens and cost per day, agent, key, project, model and task type.

The audit writer adds each batch of records to the rollups in the same transaction
(``rollups_add``), with one upsert per bucket. Budgets start their counters from these rows and the
admin reports from them; nothing on the request path reads the audit table.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Q, Sum

from .models import SpendRollup
from .selectors import BudgetRef

_COUNTS = ("requests", "failed", "cached", "tokens_in", "tokens_out", "cost_usd")
_BUCKET = ("day", "agent", "api_key_prefix", "project", "model", "task_type")


def _bucket(row: dict[str, Any]) -> tuple[Any, ...]:
    created = row["created_at"]
    day = created.astimezone(UTC).date() if isinstance(created, datetime) else created
    return (
        day,
        row.get("agent") or row.get("caller") or "",
        row.get("api_key_prefix", ""),
        row.get("project", ""),
        row.get("model", ""),
        row.get("task_type", ""),
    )


def rollups_add(rows: Iterable[dict[str, Any]]) -> None:
    """Add audit rows (as the audit writer queues them) to their rollups; call in its transaction."""
    totals: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        counts = totals.setdefault(_bucket(row), [0, 0, 0, 0, 0, Decimal(0)])
        metadata = row.get("metadata") or {}
        cache = metadata.get("cache") if isinstance(metadata, dict) else None
        counts[0] += 1
        counts[1] += row.get("status") == "failed"
        counts[2] += bool(isinstance(cache, dict) and cache.get("hit"))
        counts[3] += int(row.get("tokens_in") or 0)
        counts[4] += int(row.get("tokens_out") or 0)
        counts[5] += Decimal(str(row.get("cost_usd") or 0))
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
