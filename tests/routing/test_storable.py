"""Values made storable before the audit writer sends them (routing/storable.py), and hostile rows
through the whole write path (property-based: no row is ever lost nor blocks the others)."""

from __future__ import annotations

import math
import uuid
from typing import Any

import orjson
import pytest
from audit_helpers import audit_row
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.models import SpendRollup
from routing.audit_write import batch_write, storable_row
from routing.models import AuditDeadLetter, AuditRecord
from routing.storable import MAX_JSON_DEPTH, TOO_DEEP, json_text, storable_json, storable_text

NUL, FFFD = "\x00", "\ufffd"

hostile_pieces = st.one_of(
    st.sampled_from([NUL, "\ud800", "\udbff", "\udc00", "\udfff", "\\u0000", "é", "😀"]),
    st.characters(codec=None, exclude_categories=()),  # every code point, surrogates included
)
hostile_text = st.lists(hostile_pieces, max_size=30).map("".join)
hostile_ints = st.one_of(
    st.integers(-(2**31), 2**31),
    st.integers(-(2**200), 2**200),
    st.just(2**64),
    st.just(-(2**63) - 1),
)
hostile_scalars = st.one_of(
    st.none(), st.booleans(), hostile_ints, st.floats(allow_nan=True), hostile_text
)
hostile_json = st.recursive(
    hostile_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(hostile_text, st.integers()), children, max_size=4),
    ),
    max_leaves=20,
)


def nested(depth: int, bottom: Any = "x") -> Any:
    value = bottom
    for _ in range(depth):
        value = [value]
    return value


def assert_storable(value: Any) -> None:
    """Encodable by orjson, and no string or key holds a NUL or a surrogate."""

    def walk(node: Any) -> None:
        if isinstance(node, str):
            assert NUL not in node
            node.encode()
        elif isinstance(node, dict):
            for key, item in node.items():
                assert isinstance(key, str)
                walk(key)
                walk(item)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(orjson.loads(orjson.dumps(value)))


def test_clean_values_are_passed_through_untouched():
    """Clean text and JSON come back as the very same objects: no copy, no walk."""
    text, data = "héllo 😀", {"a": [1, 2.5, None, "b"], "c": {"d": True}}
    assert storable_text(text) is text
    assert storable_json(data) is data
    row = audit_row()
    assert storable_row(row) is row


def test_replacements_are_the_documented_ones():
    """NUL and lone surrogates become U+FFFD, pairs their character; deep nesting, big integers
    and odd keys or types become text."""
    assert storable_text(f"a{NUL}b\ud800c\ud83d\ude00") == f"a{FFFD}b{FFFD}c😀"
    assert storable_json({f"k{NUL}": [f"v{NUL}"], 7: 2**65, "d": b"x"}) == {
        f"k{FFFD}": [f"v{FFFD}"],
        "7": str(2**65),
        "d": "b'x'",
    }
    deep = storable_json(nested(300))  # orjson stops at 254 levels
    assert deep == nested(MAX_JSON_DEPTH, TOO_DEEP)
    assert storable_json(2**100_000) == "[integer of 100001 bits]"
    # A literal backslash before "u0000" is not a NUL, and is kept as it is.
    assert orjson.loads(json_text({"a": "\\u0000"})) == {"a": "\\u0000"}


@settings(database=None)  # nothing saved in the working tree
@given(hostile_text)
def test_any_text_becomes_storable(text):
    """Whatever the text, the result has no NUL and encodes as UTF-8; clean text is unchanged."""
    result = storable_text(text)
    assert NUL not in result
    result.encode()
    if NUL not in text and not any("\ud800" <= c <= "\udfff" for c in text):
        assert result == text


@settings(database=None)
@given(st.one_of(hostile_json, st.integers(0, 400).map(nested)))
def test_any_json_becomes_storable(value):
    """Whatever the structure, the result is JSON orjson encodes and jsonb accepts."""
    assert_storable(storable_json(value))


@pytest.mark.django_db(transaction=True)
def test_postgresql_accepts_what_storable_json_returns():
    """jsonb takes the result of values it would refuse as they were."""
    if connection.vendor != "postgresql":
        pytest.skip("jsonb is PostgreSQL's")
    values = [{f"k{NUL}": f"\ud800{NUL}"}, [2**70, {1: "x"}], nested(300)]
    with connection.cursor() as cursor:
        for value in values:
            cursor.execute("SELECT %s::jsonb", [json_text(value)])


# --- hostile rows through the whole write path ---------------------------------------------------

# What reaches the writer: any text and JSON (callers, upstream models), numbers of any size (an
# upstream's usage, a price), NaN; the types are the pipeline's own.
hostile_row = st.fixed_dictionaries(
    {},
    optional={
        "caller": st.one_of(hostile_text, st.text(min_size=101, max_size=300)),
        "task_type": hostile_text,
        "model": hostile_text,
        "prompt": hostile_text,
        "output": hostile_text,
        "error": hostile_text,
        "tokens_in": hostile_ints,
        "tokens_out": hostile_ints,
        "latency_ms": hostile_ints,
        "http_status": hostile_ints,
        "cost_usd": st.floats(allow_nan=True, allow_infinity=True),
        "confidence": st.floats(allow_nan=True, allow_infinity=True),
        "metadata": st.one_of(hostile_json, st.dictionaries(hostile_text, hostile_json)),
        "attempts": st.one_of(hostile_json, st.lists(st.dictionaries(hostile_text, hostile_json))),
        "validation": hostile_json,
        "project": hostile_text,
        "review_reason": st.sampled_from(["", "sampled", "low_confidence", NUL]),
        "created_at": st.just(None),
    },
)


@pytest.mark.django_db(transaction=True)
@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(hostile_row, min_size=1, max_size=6))
def test_hostile_rows_never_block_a_batch_nor_get_lost(overrides):
    """Every row of a batch of hostile rows ends as a record (whole or reduced) or a dead letter;
    no error escapes; the spend rollups count exactly the records."""
    rows = [audit_row(request_id=f"call-{uuid.uuid4().hex}", **fields) for fields in overrides]
    ids = [row["request_id"] for row in rows]
    requests_before = sum(SpendRollup.objects.values_list("requests", flat=True))
    report = batch_write(rows)
    assert report.lost == 0 and report.written + report.reduced + report.parked == len(rows)
    records = AuditRecord.objects.filter(request_id__in=ids).count()
    letters = AuditDeadLetter.objects.filter(request_id__in=ids).count()
    assert (records, letters) == (report.recorded, report.parked)
    assert sum(SpendRollup.objects.values_list("requests", flat=True)) == requests_before + records
    for record in AuditRecord.objects.filter(request_id__in=ids):
        assert record.cost_usd.is_finite() and (
            record.confidence is None or math.isfinite(record.confidence)
        )
