"""The batched audit writer: nothing lost, written off the request path, one bad row never blocks
the others (docs/adr/0007-audit-write-path.md)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from audit_helpers import audit_row, database_down
from django.db import DataError, IntegrityError, InterfaceError, OperationalError, ProgrammingError
from django.utils import timezone

from agents.models import SpendRollup
from reviews.models import ReviewItem
from routing import audit
from routing.audit import AuditWriter, DatabaseUnavailable
from routing.audit_write import is_data_error
from routing.models import AuditDeadLetter, AuditRecord

pytestmark = pytest.mark.django_db(transaction=True)

NUL = "\x00"
FFFD = "\ufffd"


def row(n: int) -> dict[str, Any]:
    now = timezone.now()
    return {
        "request_id": f"call-{n}", "endpoint": "completion", "caller": "t", "status": "approved",
        "http_status": 200, "created_at": now, "finished_at": now, "prompt": "p", "output": "o",
    }  # fmt: skip


def writer_with(*rows: dict[str, Any]) -> AuditWriter:
    """A writer holding ``rows`` (queued from sync code: no background task races the test)."""
    writer = AuditWriter()
    for queued in rows:
        writer.submit(queued)
    return writer


async def test_records_are_written_in_batches():
    """Queued records reach the database in batches of the configured size."""
    writer = AuditWriter()
    for n in range(1200):
        writer.submit(row(n))
    assert await writer.flush() == 1200
    assert await AuditRecord.objects.acount() == 1200
    assert writer.pending == 0


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


def test_hash_mode_hashes_text_with_lone_surrogates(settings):
    """Hashing a prompt that cannot be encoded as UTF-8 does not fail the request that queues it."""
    settings.GATEWAY = {**settings.GATEWAY, "AUDIT_STORE": "hash"}
    writer = writer_with(audit_row(request_id="call-s", prompt="a\ud800b", output="\udfff"))
    assert writer.flush_sync() == 1
    record = AuditRecord.objects.get(request_id="call-s")
    assert record.prompt == "" and len(record.prompt_sha256) == 64


# --- text the database cannot store -----------------------------------------------------------


def test_nul_and_lone_surrogates_are_stored_as_the_replacement_character():
    """NUL and lone surrogates in text columns, JSON values and JSON keys become U+FFFD; the
    record, its rollup and its review item are written with the rest of the batch."""
    poisoned = audit_row(
        request_id="call-nul",
        caller=f"agent{NUL}x",
        prompt=f"user: hi{NUL}",
        output=f"answer{NUL} with a lone \ud800 surrogate and a pair \ud83d\ude00",
        attempts=[{"provider": "sim", "detail": f"bad{NUL}byte"}],
        validation=[{"name": "non_empty", "reason": f"r{NUL}"}],
        metadata={"note": f"x{NUL}y", f"key{NUL}": ["deep", {"deeper": f"{NUL}"}]},
    )
    writer = writer_with(audit_row(), poisoned, audit_row())
    assert writer.flush_sync() == 3
    record = AuditRecord.objects.get(request_id="call-nul")
    assert record.caller == f"agent{FFFD}x"
    assert record.prompt == f"user: hi{FFFD}"
    assert record.output == f"answer{FFFD} with a lone {FFFD} surrogate and a pair 😀"
    assert record.attempts == [{"provider": "sim", "detail": f"bad{FFFD}byte"}]
    assert record.validation == [{"name": "non_empty", "reason": f"r{FFFD}"}]
    assert record.metadata == {"note": f"x{FFFD}y", f"key{FFFD}": ["deep", {"deeper": FFFD}]}
    assert ReviewItem.objects.filter(
        audit_record__request_id="call-nul", caller=f"agent{FFFD}x"
    ).exists()
    assert SpendRollup.objects.filter(agent="agent-a").get().requests == 3
    assert AuditRecord.objects.count() == 3 and not AuditDeadLetter.objects.exists()


def test_text_longer_than_its_column_is_cut_to_fit():
    """A caller longer than its column (the OpenAI ``user`` field allows 200 characters) is cut to
    the column's 100, not refused."""
    writer = writer_with(audit_row(request_id="call-long", caller="c" * 150, project="p" * 150))
    assert writer.flush_sync() == 1
    assert AuditRecord.objects.get(request_id="call-long").caller == "c" * 100
    assert SpendRollup.objects.get().project == "p" * 100


def test_json_that_orjson_cannot_encode_is_made_storable():
    """Integers beyond 64 bits, nesting past orjson's limit and keys that are not strings are
    replaced as documented, and the record is written as it was otherwise."""
    deep: Any = "bottom"
    for _ in range(300):
        deep = [deep]
    writer = writer_with(
        audit_row(request_id="call-json", metadata={"big": 2**70, "deep": deep, "keys": {1: "a"}})
    )
    assert writer.flush_sync() == 1
    metadata = AuditRecord.objects.get(request_id="call-json").metadata
    assert metadata["big"] == str(2**70)
    assert metadata["keys"] == {"1": "a"}
    depth, node = 0, metadata["deep"]
    while isinstance(node, list):
        depth, node = depth + 1, node[0]
    assert node == "[nested too deep]" and depth < 254


# --- rows the database refuses all the same ------------------------------------------------------


def test_a_refused_row_is_written_in_reduced_form_and_the_batch_goes_through():
    """A row refused even after sanitising (an integer no column holds) is written reduced:
    prompt and output as SHA-256, the value dropped, the error in its metadata; its rollup and
    review item are written, and so is every other row of the batch."""
    bad = audit_row(request_id="call-big", tokens_in=2**64, metadata={"callback": "x", "n": [1]})
    good = [audit_row() for _ in range(8)]
    writer = writer_with(*good[:4], bad, *good[4:])
    assert writer.flush_sync() == 9
    assert writer.pending == 0
    record = AuditRecord.objects.get(request_id="call-big")
    assert record.prompt == "" and record.prompt_sha256 == audit.sha256(bad["prompt"])
    assert record.output == "" and record.output_sha256 == audit.sha256(bad["output"])
    assert record.tokens_in == 0 and record.tokens_out == 20 and record.model == "sim-medium"
    reduced = record.metadata["audit_reduced"]
    assert reduced["dropped"] == ["tokens_in", "metadata"]
    assert reduced["error"].split(":")[0].split(" ")[0] in {"DataError", "OverflowError"}
    assert record.metadata["callback"] == "x" and "n" not in record.metadata
    assert record.attempts == bad["attempts"]
    assert ReviewItem.objects.filter(audit_record__request_id="call-big").exists()
    assert ReviewItem.objects.count() == 9
    assert SpendRollup.objects.get().requests == 9
    assert SpendRollup.objects.get().tokens_in == 8 * 10
    prompts = dict(AuditRecord.objects.values_list("request_id", "prompt"))
    assert all(prompts[r["request_id"]] == r["prompt"] for r in good)
    assert not AuditDeadLetter.objects.exists()


def test_a_row_refused_in_reduced_form_too_is_parked_as_a_dead_letter(caplog):
    """A row no reduced form fits (no creation time) goes to the dead-letter table with the error;
    the other rows are written; the log names the request and the error class, not the row."""
    bad = audit_row(request_id="call-dead", created_at="yesterday", prompt="secret prompt")
    good = [audit_row() for _ in range(3)]
    writer = writer_with(good[0], bad, *good[1:])
    with caplog.at_level(logging.ERROR, logger="routing.audit"):
        assert writer.flush_sync() == 3
    assert writer.pending == 0
    letter = AuditDeadLetter.objects.get()
    assert letter.request_id == "call-dead"
    assert letter.error.startswith("ValidationError: ")  # Django's, on the time "yesterday"
    assert letter.error.endswith(" | reduced form: ValueError: the row has no creation time")
    assert '"prompt":"secret prompt"' in letter.row
    assert not AuditRecord.objects.filter(request_id="call-dead").exists()
    assert AuditRecord.objects.count() == 3 and SpendRollup.objects.get().requests == 3
    assert "call-dead" in caplog.text and "secret prompt" not in caplog.text


def failures(kind: str) -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value("gateway_audit_write_failures_total", {"kind": kind})
    return value or 0.0


def test_failures_are_counted_by_kind():
    """The writer's failures are exported by kind: a batch refused, rows written reduced, rows
    parked."""
    before = {kind: failures(kind) for kind in ("batch", "row", "reduced", "dead_letter")}
    writer = writer_with(
        audit_row(), audit_row(tokens_out=2**64), audit_row(created_at=None), audit_row()
    )
    assert writer.flush_sync() == 3
    after = {kind: failures(kind) - before[kind] for kind in before}
    assert after == {"batch": 1, "row": 2, "reduced": 1, "dead_letter": 0}


def test_a_batch_of_one_refused_row_goes_straight_to_the_reduced_form():
    """A row that breaks a constraint (a negative "positive" integer) alone in its batch is not
    written a second time as it is: it is reduced at once."""
    before = {kind: failures(kind) for kind in ("batch", "row")}
    writer = writer_with(audit_row(request_id="call-one", latency_ms=-5))
    assert writer.flush_sync() == 1
    record = AuditRecord.objects.get(request_id="call-one")
    assert record.metadata["audit_reduced"]["dropped"] == ["latency_ms"]
    assert failures("batch") == before["batch"] and failures("row") == before["row"] + 1


# --- a database that is down is not a bad row ------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "blames_the_rows"),
    [
        (OperationalError("connection refused"), False),
        (InterfaceError("connection already closed"), False),
        (ConnectionResetError("reset by peer"), False),
        (DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"), True),
        (IntegrityError("null value in column"), True),
        (ProgrammingError("cannot adapt type 'dict'"), True),
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), True),
        (TypeError("Integer exceeds 64-bit range"), True),
        (OverflowError("Python int too large to convert to SQLite INTEGER"), True),
    ],
)
def test_errors_that_blame_the_rows_are_told_from_an_unavailable_database(error, blames_the_rows):
    """Only errors about the rows lead to row-by-row writes; the database's keep the batch."""
    assert is_data_error(error) is blames_the_rows


def test_server_errors_are_sorted_by_their_sqlstate_class():
    """A server's SQLSTATE decides: data exceptions and constraint violations blame the rows;
    a missing table, a shutdown or a deadlock blame the database."""

    class ServerError(Exception):
        def __init__(self, sqlstate: str) -> None:
            super().__init__(sqlstate)
            self.sqlstate = sqlstate

    def wrapped(sqlstate: str) -> Exception:
        error = ProgrammingError("from the server")
        error.__cause__ = ServerError(sqlstate)
        return error

    assert [is_data_error(wrapped(s)) for s in ("22P05", "22003", "23502", "54000")] == [True] * 4
    assert [is_data_error(wrapped(s)) for s in ("42P01", "57P01", "40P01", "53100")] == [False] * 4


def test_rows_are_kept_while_the_database_is_down_and_written_when_it_is_back():
    """With the database gone the batch stays queued, the writer reports itself failing, and
    nothing is reduced or parked; once the database is back every row is written."""
    rows = [audit_row() for _ in range(5)]
    rows[2]["output"] = f"with a NUL{NUL}"
    writer = writer_with(*rows)
    with database_down():
        with pytest.raises(DatabaseUnavailable) as raised:
            writer.flush_sync()
        assert type(raised.value.cause).__name__ == "OperationalError"
        with pytest.raises(DatabaseUnavailable):
            writer.flush_sync()
        assert writer.pending == 5
        health = writer.health()
        assert health.status == "failing" and health.last_error == "OperationalError"
        assert health.failing_since is not None
    assert writer.flush_sync() == 5
    assert writer.pending == 0 and writer.health().status == "ok"
    assert AuditRecord.objects.count() == 5
    assert not AuditDeadLetter.objects.exists()
    assert not AuditRecord.objects.filter(metadata__has_key="audit_reduced").exists()


async def test_the_background_writer_keeps_trying_until_the_database_is_back(settings):
    """The writer's task backs off while the database is down and writes the queue afterwards."""
    settings.GATEWAY = {**settings.GATEWAY, "AUDIT_FLUSH_INTERVAL_S": 0.02}
    writer = AuditWriter()
    with database_down(writer):
        for _ in range(3):
            writer.submit(audit_row())
        for _ in range(100):
            if writer.health().status == "failing":
                break
            await asyncio.sleep(0.02)
        assert writer.health().status == "failing" and writer.pending == 3
    for _ in range(200):
        if writer.pending == 0:
            break
        await asyncio.sleep(0.02)
    await writer.stop()
    assert writer.pending == 0 and writer.health().status == "ok"
    assert await AuditRecord.objects.acount() == 3
    assert not await AuditDeadLetter.objects.aexists()


# --- shutdown --------------------------------------------------------------------------------------


async def test_stop_isolates_a_poisoned_row():
    """At shutdown a row the database refuses cannot make the other rows be lost."""
    writer = AuditWriter()
    for n in range(5):
        writer.submit(audit_row(request_id=f"call-stop-{n}"))
    writer.submit(audit_row(request_id="call-stop-bad", http_status=10**9))
    writer.submit(audit_row(request_id="call-stop-dead", created_at=None))
    await writer.stop()
    assert writer.pending == 0
    assert await AuditRecord.objects.acount() == 6
    assert await AuditDeadLetter.objects.filter(request_id="call-stop-dead").aexists()


def test_flush_sync_isolates_a_poisoned_row():
    """The synchronous flush (shutdown hooks) isolates refused rows the same way."""
    writer = writer_with(audit_row(), audit_row(confidence="high"), audit_row())
    assert writer.flush_sync() == 3
    reduced = AuditRecord.objects.get(confidence=None)
    assert reduced.metadata["audit_reduced"]["dropped"] == ["confidence"]
