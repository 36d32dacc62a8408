"""Odd and hostile inputs never produce a 500: each gets a 4xx with a JSON error body."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from factories import new_api_key, queued_review_item, sim_setup

from gateway_project.api_errors import ERROR_TYPES

ODD_BODIES: list[bytes] = [
    b"\xff\xfe\x00garbage",
    b'{"model": "fast", "messages": "hello"}',
    b'{"model": "fast", "messages": [null]}',
    b'{"model": "fast", "messages": [{"role": "tool", "content": "x"}]}',
    b'{"model": "fast", "messages": [{"role": [], "content": "x"}]}',
    b'{"model": "fast", "messages": [{"role": {"a": 1}, "content": "x"}]}',
    b'{"model": "fast", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
    b'{"model": "fast", "messages": [{"role": "user", "content": 42}]}',
    b'{"model": 7, "messages": [{"role": "user", "content": "x"}]}',
    b'{"model": "fast", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1e308}',
    b'{"model": "fast", "messages": [{"role": "user", "content": "x"}], "max_tokens": "10"}',
    b'{"model": "fast", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
    b'{"model": "fast", "messages": [{"role": "user", "content": "x"}], "n": 3}',
    b'{"model": "fast", "messages": [{"role": "user", "content": "x"}], "tools": [{}]}',
    b'{"model": "fast", "messages": [{"role": "user", "content": "x"}], "stop": [1, 2]}',
    b'{"model": "fast", "messages": [{"role": "user", "content": "x"}], "metadata": []}',
    b'{"model": "fast", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "xml"}}',
    b'{"model": "' + b"m" * 5000 + b'", "messages": [{"role": "user", "content": "x"}]}',
    b"[" * 10000 + b"]" * 10000,
    b'"just a string"',
    b"null",
]


@pytest.fixture
def key(gateway, simulator):
    sim_setup(simulator.url)
    return new_api_key()


@pytest.mark.parametrize("body", ODD_BODIES, ids=range(len(ODD_BODIES)))
def test_odd_chat_bodies_get_a_4xx_json_error(gateway, key, body):
    """Every odd body is refused with a 4xx and an OpenAI-style error, never a 500."""
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert response.json()["error"]["message"]


@pytest.mark.parametrize("body", ODD_BODIES, ids=range(len(ODD_BODIES)))
def test_odd_completion_bodies_never_fail_the_gateway(gateway, key, body):
    """The native endpoint answers the same bodies cleanly: a 4xx with an error, or (where the
    odd part is a field it does not use) an answer."""
    response = httpx.post(
        f"{gateway.url}/v1/completion",
        content=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert response.status_code < 500, (response.status_code, response.text[:300])
    data = response.json()
    assert data["error"]["message"] if response.status_code >= 400 else data["output"]


def test_wrong_method_and_unknown_path(gateway, key):
    """A GET on a POST endpoint is a 405 and an unknown API path a 404, both in JSON."""
    auth = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{gateway.url}/v1/chat/completions", headers=auth).status_code == 405
    missing = httpx.get(f"{gateway.url}/v1/nothing-here", headers=auth)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


# --- issue 15: hostile bodies on every JSON endpoint ------------------------------------------

SURROGATE_BODIES = {
    "escaped": b'{"input": "a\\ud800b", "model": "fast", "messages": [{"role": "user", "content": "a\\ud800b"}], "decision": "reject", "reason": "a\\ud800b"}',
    "raw_bytes": b'{"input": "a\xed\xa0\x80b", "model": "fast", "messages": [{"role": "user", "content": "a\xed\xa0\x80b"}], "decision": "reject", "reason": "a\xed\xa0\x80b"}',
}  # fmt: skip


@pytest.fixture
def reviewer_key(gateway) -> str:
    from reviews.services import reviewer_api_key_create

    return reviewer_api_key_create(username="rita")[1]


def send(gateway, path: str, key: str, body: bytes | dict[str, Any]) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(
        f"{gateway.url}{path}",
        content=content,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=20,
    )


def assert_refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code and error["type"] == ERROR_TYPES[status], error
    return error


def audit_count() -> int:
    from routing.models import AuditRecord

    return AuditRecord.objects.count()


NUL_CASES = [
    ("/v1/completion", {"input": "a\x00b"}, "input"),
    ("/v1/completion", {"input": "hi", "caller": "x\x00"}, "caller"),
    ("/v1/completion", {"input": "hi", "metadata": {"note": "\x00"}}, "metadata.note"),
    ("/v1/completion", {"input": "hi", "metadata": {"a\x00b": 1}}, "metadata.a\\u0000b"),
    ("/v1/completion", {"input": "hi", "metadata": {"x": [{"y": ["ok", "\x00"]}]}}, "metadata.x.0.y.1"),
    ("/v1/completion", {"messages": [{"role": "user", "content": "ok"}, {"role": "user", "content": "\x00"}]}, "messages.1.content"),
    ("/v1/chat/completions", {"model": "fast", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi\x00"}]}, "messages.1.content"),
    ("/v1/chat/completions", {"model": "fast", "messages": [{"role": "user", "content": [{"type": "text", "text": "\x00"}]}]}, "messages.0.content.0.text"),
    ("/v1/chat/completions", {"model": "fast", "messages": [{"role": "user", "content": "hi"}], "user": "\x00"}, "user"),
    ("/v1/chat/completions", {"model": "fast", "stream": True, "messages": [{"role": "user", "content": "hi"}], "metadata": {"note": "\x00"}}, "metadata.note"),
    ("/v1/classify", {"input": "\x00"}, "input"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "field"), NUL_CASES, ids=range(len(NUL_CASES)))
def test_nul_in_any_string_is_refused_naming_the_field(gateway, key, path, body, field):
    """A NUL anywhere in a body (field, message, metadata key or value, at any depth) is a 400
    invalid_field naming its path; the request is not audited and the writer keeps writing."""
    error = assert_refused(send(gateway, path, key, body), 400, "invalid_field")
    assert error["param"] == field and field in error["fields"], error
    assert "NUL" in error["fields"][field]
    answered = send(gateway, "/v1/completion", key, {"input": "still writing?"})
    assert answered.status_code == 200
    gateway.flush_audit()
    assert audit_count() == 1


@pytest.mark.parametrize("field", ["reason", "corrected_output"])
def test_nul_in_a_review_decision_is_refused(gateway, reviewer_key, field):
    """The DRF decision endpoint applies the same NUL rule, naming the field; nothing is decided."""
    from reviews.models import ReviewItem

    item_id = queued_review_item()
    body = {"decision": "correct", "reason": "r", "corrected_output": "fixed", field: "x\x00"}
    response = send(gateway, f"/v1/reviews/{item_id}/decision", reviewer_key, body)
    assert assert_refused(response, 400, "invalid_field")["param"] == field
    assert ReviewItem.objects.get(pk=item_id).status == "pending"


def test_an_escaped_backslash_before_u0000_is_text_not_a_nul(gateway, key):
    """``\\\\u0000`` in JSON is a backslash and five characters: accepted, answered and audited."""
    body = b'{"input": "a literal \\\\u0000 here", "metadata": {"k": "\\\\u0000"}}'
    response = send(gateway, "/v1/completion", key, body)
    assert response.status_code == 200, response.text
    gateway.flush_audit()
    from routing.models import AuditRecord

    record = AuditRecord.objects.get(request_id=response.json()["id"])
    assert "a literal \\u0000 here" in record.prompt and record.metadata["k"] == "\\u0000"


@pytest.mark.parametrize("kind", list(SURROGATE_BODIES))
def test_lone_surrogates_are_a_clear_400_everywhere(gateway, key, reviewer_key, kind):
    """A lone UTF-16 surrogate (escaped or as raw bytes) is 400 invalid_json saying so, on every
    JSON endpoint, the DRF one included."""
    item_id = queued_review_item()
    for path, auth in [
        ("/v1/completion", key),
        ("/v1/chat/completions", key),
        ("/v1/classify", key),
        (f"/v1/reviews/{item_id}/decision", reviewer_key),
    ]:
        error = assert_refused(
            send(gateway, path, auth, SURROGATE_BODIES[kind]), 400, "invalid_json"
        )
        assert "surrogate" in error["message"] and "Unicode" in error["message"], (path, error)


DEEP_BODIES = {
    "brackets_2000": b"[" * 2000 + b"]" * 2000,
    "objects_2000": b'{"a":' * 2000 + b"1" + b"}" * 2000,
    "metadata_100": b'{"input": "hi", "model": "fast", "decision": "approve", "metadata": '
    + b"[" * 100
    + b"]" * 100
    + b"}",
}


@pytest.mark.parametrize("kind", list(DEEP_BODIES))
def test_deep_nesting_is_a_clear_400_everywhere(gateway, key, reviewer_key, kind):
    """Nesting past GATEWAY_MAX_JSON_DEPTH is 400 nesting_too_deep on every JSON endpoint; the
    DRF decision endpoint answered 2000 ``[`` with a 500 (RecursionError) before."""
    item_id = queued_review_item()
    for path, auth in [
        ("/v1/completion", key),
        ("/v1/chat/completions", key),
        ("/v1/classify", key),
        (f"/v1/reviews/{item_id}/decision", reviewer_key),
    ]:
        error = assert_refused(
            send(gateway, path, auth, DEEP_BODIES[kind]), 400, "nesting_too_deep"
        )
        assert "nested deeper than 64 levels" in error["message"]


def test_nesting_within_the_limit_is_accepted(gateway, key):
    """Metadata nested 60 levels deep is within the limit: answered and audited."""
    body = b'{"input": "hi", "metadata": {"deep": ' + b"[" * 60 + b"]" * 60 + b"}}"
    assert send(gateway, "/v1/completion", key, body).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"input": "hi", "max_tokens": 1180591620717411303424}', "max_tokens"),
        (b'{"input": "hi", "max_tokens": 18446744073709551615}', "max_tokens"),
        (b'{"input": "hi", "temperature": 1e308}', "temperature"),
        (b'{"input": "hi", "top_p": -1e308}', "top_p"),
        (b'{"input": "hi", "cache_ttl": 9223372036854775807}', "cache_ttl"),
    ],
)
def test_huge_numbers_in_numeric_fields_are_refused(gateway, key, body, field):
    """Every numeric field is bounded: a huge value is 400 invalid_field naming it."""
    error = assert_refused(send(gateway, "/v1/completion", key, body), 400, "invalid_field")
    assert error["param"] == field


def test_an_infinite_number_is_malformed_json(gateway, key):
    """1e400 overflows a double: 400 invalid_json saying numbers must be finite."""
    body = b'{"input": "hi", "metadata": {"x": 1e400}}'
    error = assert_refused(send(gateway, "/v1/completion", key, body), 400, "invalid_json")
    assert "finite" in error["message"]


def test_huge_integers_in_metadata_are_stored(gateway, key):
    """Integers past 64 bits come out of orjson as floats, so free-form metadata is always
    storable: the request is answered and its audit record written with the numbers."""
    body = b'{"input": "hi", "metadata": {"big": 1180591620717411303424, "max": 9223372036854775807, "min": -9223372036854775808}}'
    response = send(gateway, "/v1/completion", key, body)
    assert response.status_code == 200, response.text
    gateway.flush_audit()
    from routing.models import AuditRecord

    metadata = AuditRecord.objects.get(request_id=response.json()["id"]).metadata
    assert metadata["big"] == pytest.approx(2**70)
    assert (metadata["max"], metadata["min"]) == (2**63 - 1, -(2**63))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": 12345}, "input"),
        ({"input": ["a"]}, "input"),
        ({"input": ""}, "input"),
        ({}, "input"),
        ({"input": "hi", "caller": 7}, "caller"),
    ],
)
def test_classify_applies_the_same_type_rules(gateway, key, body, field):
    """/v1/classify refuses non-strings like every other endpoint (it accepted 12345 before)."""
    error = assert_refused(send(gateway, "/v1/classify", key, body), 400, "invalid_field")
    assert error["param"] == field


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([{"role": "user", "content": None}], "messages.0.content"),
        ([{"role": "user", "content": "a"}, {"role": "user"}], "messages.1.content"),
        ([{"role": "user", "content": [{"type": "image_url"}]}], "messages.0.content.0"),
        ([{"role": "tool", "content": "x"}], "messages.0.role"),
        ([{"role": ["user"], "content": "x"}], "messages.0.role"),
    ],
)
def test_native_messages_need_text_content(gateway, key, messages, field):
    """Native messages with content null (or none) are refused, naming the message's field; a
    role that is not a string is a 400 too (a list was a 500, found by the hostile run)."""
    response = send(gateway, "/v1/completion", key, {"messages": messages})
    assert assert_refused(response, 400, "invalid_field")["param"] == field


@pytest.mark.parametrize(
    "path",
    ["/v1/completion/%00", "/v1/completion/call-%00", "/v1/completion/" + "a" * 5000,
     "/v1/completion/call%20x", "/v1/completion/%F0%9F%98%80"],
)  # fmt: skip
def test_ids_that_are_not_ids_get_a_404(gateway, key, path):
    """An id with a NUL (a 500 on PostgreSQL before), too long or of the wrong shape is a 404 in
    the error shape, without a database lookup."""
    response = httpx.get(f"{gateway.url}{path}", headers={"Authorization": f"Bearer {key}"})
    assert_refused(response, 404, "not_found")
