"""A property-based hostile run: bodies generated from the request schemas of every endpoint, in
valid shapes and mutated (NULs, lone surrogates as raw bytes, deep nesting, huge numbers, wrong
types, missing, unknown and forbidden fields, huge strings), sent over real HTTP to the live
gateway. Never a 5xx; every error in the error shape with the type of its status; afterwards every
answered completion has its audit record and the audit writer's queue is empty
(docs/adr/0014-hostile-input.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from factories import new_api_key, queued_review_item, sim_setup
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway_project.api_errors import ERROR_TYPES
from reviews.services import reviewer_api_key_create
from routing.audit import audit_writer
from routing.models import AuditRecord

MAX_EXAMPLES = 400


@dataclass(frozen=True)
class Raw:
    """JSON text put into a body as it is (what a well-behaved encoder would never write)."""

    text: bytes


RAW_VALUES = [
    Raw(b"1e400"), Raw(b"-1e400"), Raw(b"1" * 30), Raw(b"-" + b"9" * 25), Raw(b"1.5e308"),
    Raw(b"18446744073709551616"), Raw(b'"a\\ud800b"'), Raw(b'"\\udc00"'), Raw(b'"a\xed\xa0\x80b"'),
    Raw(b'"\xff\xfe"'), Raw(b'"\\u0000"'), Raw(b'"x\\\\u0000"'), Raw(b"[" * 65 + b"]" * 65),
    Raw(b"[" * 2000 + b"]" * 2000), Raw(b'{"a":' * 80 + b"1" + b"}" * 80), Raw(b"NaN"),
    Raw(b"Infinity"), Raw(b'"\x00"'), Raw(b"01"), Raw(b"[1,]"),
]  # fmt: skip

# Text as agents send it (any character but NUL), and text with a NUL somewhere.
text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
words = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40)
nul_text = st.builds(lambda a, b: f"{a}\x00{b}", text, text)
huge_text = st.sampled_from([20_000, 3_000_000]).map(lambda n: "y" * n)


def json_values(strings: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False), strings,
    )  # fmt: skip
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(strings, inner, max_size=4)
        ),
        max_leaves=12,
    )


clean_json = json_values(text)
any_json = json_values(st.one_of(text, nul_text))
hostile = st.one_of(any_json, nul_text, st.sampled_from(RAW_VALUES), huge_text)


def mostly(usual: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` three times in four (``one_of`` would pick each branch alike)."""
    return st.sampled_from([usual, usual, usual, rare]).flatmap(lambda chosen: chosen)


def set_field(body: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    return {**body, name: value}


def drop_field(body: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != name}


def body_of(
    fields: dict[str, st.SearchStrategy[Any]], required: tuple[str, ...] = ()
) -> st.SearchStrategy[Any]:
    """Mostly a valid request of the schema; otherwise one mutation of one: a field set
    to anything at all, a field missing, unknown or forbidden fields, or no object at all."""
    valid = st.fixed_dictionaries(
        {name: fields[name] for name in required},
        optional={name: s for name, s in fields.items() if name not in required},
    )
    unknown = st.dictionaries(
        st.one_of(text, nul_text, st.sampled_from(["api_base", "base_url", "headers"])),
        any_json,
        min_size=1,
        max_size=2,
    )
    mutated = st.one_of(
        st.builds(set_field, valid, st.sampled_from(sorted(fields)), hostile),
        st.builds(drop_field, valid, st.sampled_from(required or sorted(fields))),
        st.builds(lambda body, more: {**more, **body}, valid, unknown),
        hostile,
    )
    return mostly(valid, mutated)


message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "developer", "user", "assistant"]),
        "content": st.one_of(
            words,
            st.lists(
                st.fixed_dictionaries({"type": st.just("text"), "text": words}),
                min_size=1,
                max_size=2,
            ),
        ),
    }
).map(lambda m: m if m["role"] != "assistant" else {**m, "role": "user"})
hostile_message = st.one_of(
    st.builds(set_field, message, st.just("role"), hostile),
    st.builds(set_field, message, st.just("content"), hostile),
    st.builds(drop_field, message, st.sampled_from(["role", "content"])),
)
messages = st.lists(mostly(message, hostile_message), min_size=1, max_size=3)
model = st.sampled_from(["auto", "fast", "medium", "sim-fast", "sim-medium", "nope"])
metadata = st.dictionaries(text, clean_json, max_size=3)
max_tokens = st.integers(1, 200)
temperature = st.floats(0, 2)

COMPLETION = {
    "caller": text, "task_type": st.sampled_from(["", "analysis", "code"]), "input": words,
    "language": st.sampled_from(["", "en", "auto"]), "messages": messages, "model": model,
    "tier": st.sampled_from(["", "fast", "medium"]), "max_tokens": max_tokens,
    "temperature": temperature, "top_p": st.floats(0, 1), "metadata": metadata,
    "callback_url": st.just(""), "cache_ttl": st.integers(0, 100),
    "cache_scope": st.sampled_from(["", "agent", "project"]),
}  # fmt: skip
CHAT = {
    "model": model, "messages": messages, "stream": st.booleans(), "max_tokens": max_tokens,
    "max_completion_tokens": max_tokens, "temperature": temperature,
    "stop": st.one_of(words, st.lists(words, max_size=4)), "n": st.just(1), "user": text,
    "metadata": metadata, "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "response_format": st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object"])}),
}  # fmt: skip
CLASSIFY = {"input": words, "caller": st.text(max_size=20).filter(lambda s: "\x00" not in s)}
DECISION = {
    "decision": st.sampled_from(["approve", "reject", "correct"]),
    "reason": words, "corrected_output": st.one_of(st.none(), words),
}  # fmt: skip


def encode(value: Any) -> bytes:
    """JSON bytes of ``value`` with each ``Raw`` written as it is."""
    raws: list[bytes] = []

    def swap(item: Any) -> Any:
        if isinstance(item, Raw):
            raws.append(item.text)
            return f"@@raw-{len(raws) - 1}-7f3a@@"
        if isinstance(item, dict):
            return {k: swap(v) for k, v in item.items()}
        if isinstance(item, list):
            return [swap(v) for v in item]
        return item

    data = orjson.dumps(swap(value))
    for index, raw in enumerate(raws):
        data = data.replace(f'"@@raw-{index}-7f3a@@"'.encode(), raw)
    return data


# Stands for the id of a completion the run has had answered (known only while it runs).
ANSWERED = "answered-id"


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: bytes = b""
    reviewer: bool = False


@dataclass
class Run:
    """What the run saw: answered requests' ids, and every status."""

    answered: set[str] = field(default_factory=set)
    statuses: dict[int, int] = field(default_factory=dict)


def calls(item_ids: list[int]) -> st.SearchStrategy[Call]:
    posted = {
        "/v1/completion": body_of(COMPLETION, required=("input",)),
        "/v1/chat/completions": body_of(CHAT, required=("model", "messages")),
        "/v1/classify": body_of(CLASSIFY, required=("input",)),
    }
    post_calls = [
        st.builds(lambda b, p=path: Call("POST", p, encode(b)), strategy)
        for path, strategy in posted.items()
    ]
    review_ids = st.one_of(
        st.sampled_from([str(i) for i in item_ids] + ["0", "999999", "9" * 30, "-1", "abc"]),
        st.one_of(text, nul_text).map(lambda s: quote(s, safe="")),
    )
    decision = st.builds(
        lambda i, b: Call("POST", f"/v1/reviews/{i}/decision", encode(b), reviewer=True),
        review_ids,
        body_of(DECISION, required=("decision",)),
    )
    detail_ids = st.one_of(
        st.just(ANSWERED),
        st.sampled_from(["call-" + "0" * 32, "x" * 64, "x" * 65, "%00", "call-%00", "a" * 3000]),
        st.one_of(text, nul_text).filter(bool).map(lambda s: quote(s, safe="")),
    )
    detail = st.builds(lambda i: Call("GET", f"/v1/completion/{i}"), detail_ids)
    plain = st.sampled_from([Call("GET", "/v1/models"), Call("GET", "/health")])
    return st.one_of(*post_calls, post_calls[1], post_calls[0], decision, detail, plain)


def send(client: httpx.Client, call: Call, key: str, reviewer_key: str, run: Run) -> None:
    path = call.path
    if ANSWERED in path:
        if not run.answered:
            return
        # An earlier answer's id: its state must be found, whether written yet or still queued.
        path = path.replace(ANSWERED, min(run.answered))
    headers = {
        "Authorization": f"Bearer {reviewer_key if call.reviewer else key}",
        "Content-Type": "application/json",
    }
    response = client.request(call.method, path, content=call.body or None, headers=headers)
    status = response.status_code
    run.statuses[status] = run.statuses.get(status, 0) + 1
    described = (
        f"{call.method} {call.path[:200]} {call.body[:300]!r} -> {status} {response.text[:300]}"
    )
    assert status < 500, described
    if path != call.path:
        assert status == 200 and response.json()["id"] == min(run.answered), described
    if status >= 400:
        error = response.json()["error"]
        assert {"message", "type", "code", "param"} <= set(error), described
        assert error["type"] == ERROR_TYPES[status], described
        return
    if call.path == "/v1/completion":
        run.answered.add(response.json()["id"])
    elif call.path == "/v1/chat/completions":
        run.answered.add(response.headers["X-Gateway-Request-Id"])
        if response.headers["content-type"].startswith("text/event-stream"):
            assert response.text.rstrip().endswith("data: [DONE]"), described


def test_hostile_bodies_never_fail_the_gateway_and_every_answer_is_audited(gateway, simulator):
    """No generated body, valid or hostile, gets a 5xx or an error of the wrong shape or type;
    every answered completion has its audit record and the audit queue drains."""
    sim_setup(simulator.url)
    key = new_api_key()
    reviewer_key = reviewer_api_key_create(username="rita")[1]
    item_ids = [queued_review_item() for _ in range(3)]
    run = Run()

    with httpx.Client(base_url=gateway.url, timeout=30) as client:

        @settings(
            max_examples=MAX_EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(call=calls(item_ids))
        def hostile_run(call: Call) -> None:
            send(client, call, key, reviewer_key, run)

        hostile_run()

    assert run.answered, f"no request was answered: {run.statuses}"
    assert set(run.statuses) - {200} <= set(ERROR_TYPES), run.statuses
    gateway.flush_audit()
    stored = set(
        AuditRecord.objects.filter(request_id__in=run.answered).values_list("request_id", flat=True)
    )
    assert stored == run.answered
    assert audit_writer.pending == 0


pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
