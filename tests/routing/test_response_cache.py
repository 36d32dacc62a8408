"""The response cache over real HTTP: approved answers served again without an upstream call.

Every test drives the live gateway against the upstream simulator and counts the simulator's calls
to tell a cached answer from a fresh one. The rest of the suite runs with the cache off (it repeats
identical requests); the ``cache_on`` fixture turns it on here. docs/adr/0010-response-cache.md.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from factories import new_api_key, sim_setup
from test_processes import needs_redis

from agents.models import Agent
from agents.selectors import Caller
from gateway_project.shared_state import LocalValues
from reviews.models import ReviewItem
from reviews.services import review_item_decide, reviewer_api_key_create
from routing.cache import CacheDirectiveError, request_cache
from routing.config import routing_config_changed
from routing.config_io import config_export, config_import
from routing.models import AuditRecord, PromptTemplate, TaskRoute
from scoring.services import tunable_set

QUESTION = {"task_type": "analysis", "input": "Explain backpressure in queues", "language": "en"}


@pytest.fixture
def cache_on() -> Iterator[None]:
    saved = settings.GATEWAY.copy()
    settings.GATEWAY["CACHE_ENABLED"] = True
    yield
    settings.GATEWAY.update(saved)


@pytest.fixture
def setup(gateway, simulator, cache_on):
    sim_setup(simulator.url)


def client_for(gateway, agent: str) -> httpx.Client:
    key = new_api_key(agent)
    return httpx.Client(
        base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}, timeout=20
    )


@pytest.fixture
def client(gateway, setup) -> Iterator[httpx.Client]:
    with client_for(gateway, "claude-code") as c:
        yield c


def upstream_calls(simulator) -> int:
    return sum(int(n) for n in simulator.stats()["calls"].values())


def ask(
    client: httpx.Client, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    response = client.post("/v1/completion", json=body or QUESTION, headers=headers)
    assert response.status_code == 200, response.text
    return response


def chat(
    client: httpx.Client, body: dict[str, Any], headers: dict[str, str] | None = None
) -> httpx.Response:
    response = client.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response


def audit_record(gateway, request_id: str) -> AuditRecord:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        gateway.flush_audit()
        record = AuditRecord.objects.filter(request_id=request_id).first()
        if record is not None:
            return record
        time.sleep(0.05)
    raise AssertionError(f"no audit record for {request_id}")


def review_item(gateway, request_id: str) -> ReviewItem:
    audit_record(gateway, request_id)
    return ReviewItem.objects.get(audit_record__request_id=request_id)


def cache_header(response: httpx.Response) -> str:
    return response.headers["X-Gateway-Cache"]


# --- hits and misses -----------------------------------------------------------------------------


def test_a_repeated_question_is_answered_from_the_cache(client, gateway, simulator):
    """The second identical request calls no upstream, costs nothing, and says where it came from;
    its audit record is marked as a hit and it is never sampled for review."""
    tunable_set(name="sample_approved", task_type="analysis", value=1)  # review every approval
    first = ask(client)
    body = first.json()
    assert body["status"] == "approved" and body["cached"] is False
    assert "cached_from" not in body and cache_header(first) == "miss"
    calls = upstream_calls(simulator)

    second = ask(client)
    hit = second.json()
    assert upstream_calls(simulator) == calls
    assert cache_header(second) == "hit"
    assert hit["cached"] is True and hit["cached_from"] == body["id"] and hit["id"] != body["id"]
    assert hit["cost_usd"] == 0 and hit["attempts"] == [] and hit["escalations"] == 0
    for name in ("status", "confidence", "output", "model", "provider", "tier", "finish_reason"):
        assert hit[name] == body[name], name
    assert hit["tokens"] == body["tokens"] and hit["validation"] == body["validation"]

    source, record = audit_record(gateway, body["id"]), audit_record(gateway, hit["id"])
    assert source.metadata["cache"]["key"].startswith("rc:analysis:")
    assert source.metadata["cache"]["ttl_s"] == 3600
    assert source.metadata["cache"]["scope"] == "agent"
    assert record.metadata["cache"] == {"hit": True, "from": body["id"]}
    assert record.status == "approved" and float(record.cost_usd) == 0
    assert record.model == body["model"] and record.attempts == []
    # No tier was tried, no model's tokens used, nothing scored: cycles and rollups leave it out.
    assert record.confidence is None and record.tier == ""
    assert (record.tokens_in, record.tokens_out) == (0, 0)
    assert ReviewItem.objects.filter(audit_record_id=body["id"]).exists()
    assert not ReviewItem.objects.filter(audit_record_id=hit["id"]).exists()
    # The agent can poll the hit like any completion.
    polled = client.get(f"/v1/completion/{hit['id']}").json()
    assert polled["status"] == "approved" and polled["output"] == body["output"]


def test_anything_that_changes_the_answer_is_another_entry(client, simulator):
    """Temperature, top_p, max_tokens, model, tier, task type, language and the messages are part
    of the key; each variant calls upstream, and the original is still a hit afterwards."""
    ask(client)
    variants: list[dict[str, Any]] = [
        {**QUESTION, "temperature": 0.5},
        {**QUESTION, "top_p": 0.9},
        {**QUESTION, "max_tokens": 300},
        {**QUESTION, "model": "sim-medium"},
        {**QUESTION, "tier": "medium"},
        {**QUESTION, "task_type": "summary"},
        {**QUESTION, "language": "auto"},
        {**QUESTION, "input": "Explain backpressure in streams"},
        {**QUESTION, "messages": [{"role": "system", "content": "Be brief."}]},
    ]
    for variant in variants:
        calls = upstream_calls(simulator)
        response = ask(client, variant)
        assert cache_header(response) == "miss", variant
        assert upstream_calls(simulator) > calls, variant
    calls = upstream_calls(simulator)
    assert cache_header(ask(client)) == "hit"
    assert ask(client, {**QUESTION, "temperature": 0.5}).json()["cached"] is True
    assert upstream_calls(simulator) == calls


def test_a_new_prompt_template_is_a_new_entry(client, simulator):
    """The task type's prompt template goes upstream before the messages: when an admin changes
    it, earlier answers are not served for it."""
    first = ask(client).json()
    PromptTemplate.objects.create(task_type="analysis", system_prompt="Answer for engineers.")
    routing_config_changed()
    assert cache_header(ask(client)) == "miss"
    PromptTemplate.objects.filter(task_type="analysis").delete()
    routing_config_changed()
    assert ask(client).json()["cached_from"] == first["id"]


def test_the_same_temperature_written_differently_is_one_entry(client, simulator):
    """1 and 1.0 are one temperature: the key is over values, not over how JSON spelled them."""
    ask(client, {**QUESTION, "temperature": 1})
    calls = upstream_calls(simulator)
    assert ask(client, {**QUESTION, "temperature": 1.0}).json()["cached"] is True
    assert upstream_calls(simulator) == calls


def test_chat_parameters_are_part_of_the_key(client, simulator):
    """On the OpenAI API, stop sequences and the response format change the entry too."""
    base = {"model": "auto", "messages": [{"role": "user", "content": "Explain backpressure"}]}
    headers = {"X-Task-Type": "analysis"}
    assert cache_header(chat(client, base, headers=headers)) == "miss"
    assert cache_header(chat(client, base, headers=headers)) == "hit"
    for variant in (
        {**base, "stop": ["\n\n"]},
        {**base, "response_format": {"type": "text"}},
        {**base, "model": "fast"},
        {**base, "model": "sim-fast"},
    ):
        assert cache_header(chat(client, variant, headers=headers)) == "miss", variant


def test_agents_never_share_answers(gateway, setup, simulator):
    """Two agents asking the same question each get their own answer: no cross-tenant cache."""
    with client_for(gateway, "agent-a") as a, client_for(gateway, "agent-b") as b:
        first = ask(a).json()
        calls = upstream_calls(simulator)
        other = ask(b)
        assert cache_header(other) == "miss" and other.json()["cached"] is False
        assert upstream_calls(simulator) == calls + 1
        assert ask(a).json()["cached_from"] == first["id"]
        assert ask(b).json()["cached_from"] == other.json()["id"]


def test_project_scope_shares_within_one_project_only(gateway, setup, simulator):
    """With ``X-Gateway-Cache-Scope: project`` agents of one project share answers; other
    projects, agents without a project and requests in the default (agent) scope do not."""
    if "project" not in {f.name for f in dataclasses.fields(Caller)}:
        pytest.skip("agents have no project yet (Caller.project): project scope needs it")
    from agents.models import Project

    apollo, zeus = Project.objects.create(name="apollo"), Project.objects.create(name="zeus")
    clients = {name: client_for(gateway, name) for name in ("a1", "a2", "z1", "loner")}
    Agent.objects.filter(name__in=["a1", "a2"]).update(project=apollo)
    Agent.objects.filter(name="z1").update(project=zeus)
    project = {"X-Gateway-Cache-Scope": "project"}
    try:
        first = ask(clients["a1"], headers=project).json()
        assert first["cached"] is False
        calls = upstream_calls(simulator)
        shared = ask(clients["a2"], headers=project).json()
        assert shared["cached_from"] == first["id"] and upstream_calls(simulator) == calls
        # The native body says the same; the agent's own scope stays its own.
        body_scoped = ask(clients["a2"], {**QUESTION, "cache_scope": "project"}).json()
        assert body_scoped["cached_from"] == first["id"]
        assert ask(clients["a2"]).json()["cached"] is False
        assert ask(clients["z1"], headers=project).json()["cached"] is False
        # No project: project scope falls back to the agent's own, so nothing is shared.
        assert ask(clients["loner"], headers=project).json()["cached"] is False
        assert upstream_calls(simulator) == calls + 3
        source = audit_record(gateway, first["id"])
        assert source.metadata["cache"]["scope"] == "project"
    finally:
        for c in clients.values():
            c.close()


# --- both endpoints, streams -------------------------------------------------------------------


def sse_events(response: httpx.Response) -> tuple[list[dict[str, Any]], list[str]]:
    data, comments = [], []
    for block in response.text.split("\n\n"):
        if block.startswith("data: ") and block != "data: [DONE]":
            data.append(orjson.loads(block[6:]))
        elif block.startswith(": "):
            comments.append(block[2:])
    return data, comments


def test_native_and_openai_requests_share_entries_and_streams_replay_them(client, simulator):
    """The key is over the request's content, not its endpoint: a native answer serves the OpenAI
    API, whole or streamed as server-sent events in the usual chunks."""
    native = ask(client, {"task_type": "analysis", "input": "Explain backpressure"}).json()
    calls = upstream_calls(simulator)
    body = {"model": "auto", "messages": [{"role": "user", "content": "Explain backpressure"}]}

    whole = chat(client, body, headers={"X-Task-Type": "analysis"})
    assert cache_header(whole) == "hit"
    assert whole.headers["X-Gateway-Cache-From"] == native["id"]
    assert whole.headers["X-Gateway-Status"] == "approved"
    data = whole.json()
    assert data["choices"][0]["message"]["content"] == native["output"]
    assert data["model"] == native["model"]
    assert data["usage"]["completion_tokens"] == native["tokens"]["out"]

    stream = body | {"stream": True, "stream_options": {"include_usage": True}}
    streamed = chat(client, stream, headers={"X-Task-Type": "analysis"})
    assert cache_header(streamed) == "hit"
    assert streamed.headers["X-Gateway-Cache-From"] == native["id"]
    assert streamed.headers["content-type"].startswith("text/event-stream")
    chunks, comments = sse_events(streamed)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == native["output"]
    assert chunks[-2]["choices"][0]["finish_reason"] == native["finish_reason"]
    assert chunks[-1]["usage"]["completion_tokens"] == native["tokens"]["out"]
    assert "x-gateway-status=approved" in comments[-1]
    assert streamed.text.endswith("data: [DONE]\n\n")
    assert upstream_calls(simulator) == calls


def test_an_approved_stream_is_cached(client, gateway, simulator):
    """A streamed answer that ends approved is stored like a whole one."""
    body = {
        "model": "auto",
        "messages": [{"role": "user", "content": "Explain flow control"}],
        "stream": True,
    }
    streamed = chat(client, body, headers={"X-Task-Type": "analysis"})
    assert cache_header(streamed) == "miss"
    assert "x-gateway-status=approved" in streamed.text
    request_id = streamed.headers["X-Gateway-Request-Id"]
    calls = upstream_calls(simulator)
    again = ask(client, {"task_type": "analysis", "input": "Explain flow control"}).json()
    assert again["cached_from"] == request_id and upstream_calls(simulator) == calls
    assert audit_record(gateway, again["id"]).stream is False


# --- what a request asks for -------------------------------------------------------------------


def test_no_cache_refreshes_and_no_store_leaves_no_trace(client, simulator):
    """``no-cache`` skips the read and stores the fresh answer; ``no-store`` neither reads nor
    stores."""
    first = ask(client).json()
    calls = upstream_calls(simulator)
    fresh = ask(client, headers={"Cache-Control": "no-cache"})
    assert cache_header(fresh) == "bypass" and fresh.json()["cached"] is False
    assert upstream_calls(simulator) == calls + 1
    assert ask(client).json()["cached_from"] == fresh.json()["id"] != first["id"]

    untouched = ask(client, headers={"Cache-Control": "no-store"})
    assert cache_header(untouched) == "bypass" and untouched.json()["cached"] is False
    assert ask(client).json()["cached_from"] == fresh.json()["id"]

    other = {**QUESTION, "input": "Explain head-of-line blocking"}
    assert cache_header(
        ask(client, other, headers={"Cache-Control": "no-store, no-transform"})
    ) == ("bypass")
    assert cache_header(ask(client, other)) == "miss"  # the no-store answer was not kept


def test_max_age_accepts_only_young_enough_answers(client, simulator):
    """``max-age=N`` takes a cached answer only if it is at most N seconds old; a refused one is
    replaced by the fresh answer."""
    first = ask(client).json()
    time.sleep(1.2)
    assert ask(client, headers={"Cache-Control": "max-age=60"}).json()["cached_from"] == first["id"]
    calls = upstream_calls(simulator)
    stale = ask(client, headers={"Cache-Control": "max-age=1"})
    assert cache_header(stale) == "miss" and upstream_calls(simulator) == calls + 1
    young = ask(client, headers={"Cache-Control": 'MAX-AGE="1"'})
    assert young.json()["cached_from"] == stale.json()["id"]
    assert cache_header(ask(client, headers={"Cache-Control": "max-age=0"})) == "bypass"


def test_a_requested_ttl_is_kept_and_then_expires(client, gateway, simulator):
    """``X-Gateway-Cache-TTL: 1`` keeps the answer one second; the native ``cache_ttl`` field does
    the same and wins over the header."""
    first = ask(client, headers={"X-Gateway-Cache-TTL": "1"}).json()
    assert ask(client).json()["cached_from"] == first["id"]
    time.sleep(1.2)
    assert cache_header(ask(client)) == "miss"
    assert audit_record(gateway, first["id"]).metadata["cache"]["ttl_s"] == 1

    body = {**QUESTION, "input": "Explain retries", "cache_ttl": 120}
    stored = ask(client, body, headers={"X-Gateway-Cache-TTL": "5"}).json()
    assert audit_record(gateway, stored["id"]).metadata["cache"]["ttl_s"] == 120
    zero = ask(client, {**QUESTION, "input": "Explain jitter", "cache_ttl": 0})
    assert cache_header(zero) == "miss"  # read, but not stored
    assert "cache" not in audit_record(gateway, zero.json()["id"]).metadata


def test_task_routes_set_the_ttl(client, gateway, simulator):
    """A task route's TTL applies to its task type (0: never cached, even when a request asks);
    the default route's TTL applies to task types without a TTL of their own."""
    TaskRoute.objects.create(task_type="quick", start_tier="fast", cache_ttl_s=1)
    TaskRoute.objects.create(task_type="never", start_tier="fast", cache_ttl_s=0)
    routing_config_changed()
    quick = {**QUESTION, "task_type": "quick"}
    first = ask(client, quick).json()
    assert ask(client, quick).json()["cached_from"] == first["id"]
    time.sleep(1.2)
    assert cache_header(ask(client, quick)) == "miss"

    never = {**QUESTION, "task_type": "never"}
    calls = upstream_calls(simulator)
    for _ in range(2):
        assert cache_header(ask(client, never, headers={"X-Gateway-Cache-TTL": "60"})) == "bypass"
    assert upstream_calls(simulator) == calls + 2

    TaskRoute.objects.filter(task_type="default").update(cache_ttl_s=0)
    routing_config_changed()
    assert cache_header(ask(client, {**QUESTION, "task_type": "misc"})) == "bypass"
    assert cache_header(ask(client, quick)) != "bypass"  # its own TTL still applies


def test_the_switch_turns_the_cache_off(client, simulator):
    settings.GATEWAY["CACHE_ENABLED"] = False
    calls = upstream_calls(simulator)
    assert cache_header(ask(client)) == "bypass"
    assert cache_header(ask(client)) == "bypass"
    assert upstream_calls(simulator) == calls + 2


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Cache-Control", "max-age=soon"),
        ("Cache-Control", "max-age=-1"),
        ("Cache-Control", "no-cache, max-age="),
        ("X-Gateway-Cache-TTL", "ten"),
        ("X-Gateway-Cache-TTL", "-5"),
        ("X-Gateway-Cache-TTL", "604801"),
        ("X-Gateway-Cache-Scope", "team"),
    ],
)
def test_bad_cache_headers_are_refused(client, simulator, header, value):
    """A cache header the gateway cannot read is a 400 naming it, on both APIs, before routing."""
    chat_body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    for path, body in (("/v1/completion", QUESTION), ("/v1/chat/completions", chat_body)):
        response = client.post(path, json=body, headers={header: value})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_field" and error["param"] == header
        assert error["type"] == "invalid_request_error" and header in error["fields"]
        assert header in error["message"]
    assert upstream_calls(simulator) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("cache_ttl", -1), ("cache_ttl", "60"), ("cache_ttl", 10**9), ("cache_scope", "team")],
)
def test_bad_cache_fields_are_refused(client, simulator, field, value):
    response = client.post("/v1/completion", json={**QUESTION, field: value})
    assert response.status_code == 400, response.text
    assert field in response.json()["error"]["fields"]
    assert upstream_calls(simulator) == 0


# --- what is never cached, and what is removed ----------------------------------------------------


def test_answers_that_are_not_approved_are_never_cached(client, gateway, simulator):
    """A weak answer (pending review here) is not stored: the next request asks again."""
    for model in ("sim-fast", "sim-medium", "sim-large"):
        simulator.configure(model, quality="bad")
    first = ask(client).json()
    assert first["status"] == "pending_review"
    calls = upstream_calls(simulator)
    second = ask(client)
    assert cache_header(second) == "miss" and upstream_calls(simulator) > calls
    assert "cache" not in audit_record(gateway, first["id"]).metadata


def test_oversized_answers_are_not_cached(client, simulator):
    settings.GATEWAY["CACHE_MAX_ENTRY_BYTES"] = 200
    ask(client)
    assert cache_header(ask(client)) == "miss"


def test_a_reviewers_rejection_or_correction_evicts_the_answer(client, gateway, simulator):
    """A rejected (decided through the API) or corrected answer is not served again; an approved
    one stays."""
    tunable_set(name="sample_approved", task_type="analysis", value=1)
    reviewer_key = reviewer_api_key_create(username="rita")[1]
    rob = User.objects.create_user(username="rob", password="pw", is_staff=True)
    questions = {
        verdict: {**QUESTION, "input": f"Explain {topic}"}
        for verdict, topic in (("reject", "queues"), ("correct", "caches"), ("approve", "locks"))
    }
    sources = {}
    for verdict, body in questions.items():
        sources[verdict] = ask(client, body).json()
        assert ask(client, body).json()["cached_from"] == sources[verdict]["id"]

    item = review_item(gateway, sources["reject"]["id"])
    decided = httpx.post(
        f"{gateway.url}/v1/reviews/{item.pk}/decision",
        json={"decision": "reject", "reason": "wrong about queues"},
        headers={"Authorization": f"Bearer {reviewer_key}"},
        timeout=10,
    )
    assert decided.status_code == 200, decided.text
    review_item_decide(
        item_id=review_item(gateway, sources["correct"]["id"]).pk,
        actor=rob,
        decision="correct",
        corrected_output="Caches keep answers.",
    )
    review_item_decide(
        item_id=review_item(gateway, sources["approve"]["id"]).pk, actor=rob, decision="approve"
    )

    calls = upstream_calls(simulator)
    for verdict in ("reject", "correct"):
        again = ask(client, questions[verdict])
        assert cache_header(again) == "miss", verdict
    assert upstream_calls(simulator) == calls + 2
    assert ask(client, questions["approve"]).json()["cached_from"] == sources["approve"]["id"]


def test_a_rejection_does_not_remove_a_newer_answer(client, gateway):
    """The entry is removed only while it still holds the rejected answer."""
    tunable_set(name="sample_approved", task_type="analysis", value=1)
    old = ask(client).json()
    new = ask(client, headers={"Cache-Control": "no-cache"}).json()
    rob = User.objects.create_user(username="rob", password="pw", is_staff=True)
    review_item_decide(
        item_id=review_item(gateway, old["id"]).pk, actor=rob, decision="reject", reason="no"
    )
    assert ask(client).json()["cached_from"] == new["id"]


def test_the_admin_shows_the_ttl_and_clears_a_task_types_answers(client, gateway, simulator):
    """Task routes list their TTL; the admin action clears the selected task types' answers."""
    route = TaskRoute.objects.create(task_type="analysis", start_tier="fast", cache_ttl_s=600)
    routing_config_changed()
    ask(client)
    other = {**QUESTION, "task_type": "summary"}
    ask(client, other)
    admin = User.objects.create_superuser(username="admin", password="pw")
    browser = Client()
    browser.force_login(admin)
    listing = browser.get("/admin/routing/taskroute/")
    assert listing.status_code == 200 and b"Cache TTL (s)" in listing.content
    form = browser.get(f"/admin/routing/taskroute/{route.pk}/change/")
    assert b'name="cache_ttl_s"' in form.content
    done = browser.post(
        "/admin/routing/taskroute/",
        {"action": "clear_cached_answers", "index": "0", "_selected_action": [route.pk]},
        follow=True,
    )
    assert b"Removed 1 cached answer(s) of analysis." in done.content
    assert cache_header(ask(client)) == "miss"
    assert cache_header(ask(client, other)) == "hit"


def test_metrics_count_hits_and_misses(client, gateway):
    ask(client)
    ask(client)
    text = httpx.get(f"{gateway.url}/metrics").text
    assert 'gateway_cache_lookups_total{result="hit"}' in text
    assert 'gateway_cache_lookups_total{result="miss"}' in text
    assert 'gateway_cache_writes_total{action="stored"}' in text


# --- several processes -----------------------------------------------------------------------


@needs_redis
def test_gateway_processes_share_the_cache_through_redis(start_gateway, setup, simulator):
    """With Redis, an answer stored by one process is served by another without an upstream call."""
    key = new_api_key("codex")
    _, url_a = start_gateway(GATEWAY_CACHE_ENABLED="1")
    _, url_b = start_gateway(GATEWAY_CACHE_ENABLED="1")
    auth = {"Authorization": f"Bearer {key}"}
    first = httpx.post(f"{url_a}/v1/completion", json=QUESTION, headers=auth, timeout=20).json()
    assert first["cached"] is False
    calls = upstream_calls(simulator)
    time.sleep(0.2)  # the store runs after the response
    second = httpx.post(f"{url_b}/v1/completion", json=QUESTION, headers=auth, timeout=20)
    assert second.headers["X-Gateway-Cache"] == "hit"
    assert second.json()["cached_from"] == first["id"]
    assert upstream_calls(simulator) == calls


# --- pieces ------------------------------------------------------------------------------------


def test_cache_directives_are_read_like_http_caches_read_them():
    assert request_cache({}).read and request_cache({}).store
    use = request_cache({"Cache-Control": " No-Cache , max-age=30, stale-if-error=5"})
    assert (use.read, use.store, use.max_age_s) == (False, True, 30)
    use = request_cache({"Cache-Control": "no-store"})
    assert (use.read, use.store) == (False, False)
    use = request_cache({"X-Gateway-Cache-TTL": " 90 ", "X-Gateway-Cache-Scope": "Project"})
    assert (use.ttl_s, use.project_scope) == (90, True)
    use = request_cache({"X-Gateway-Cache-TTL": "90"}, ttl_s=5, scope="agent")
    assert (use.ttl_s, use.project_scope) == (5, False)
    with pytest.raises(CacheDirectiveError) as raised:
        request_cache({"X-Gateway-Cache-TTL": "1e3"})
    assert raised.value.param == "X-Gateway-Cache-TTL"


def test_the_in_process_store_is_bounded_and_expires():
    store = LocalValues(max_bytes=100)
    store.set("a", "x" * 40, ttl=60)
    store.set("b", "y" * 40, ttl=60)
    store.set("c", "z" * 40, ttl=60)  # over the bound: the oldest goes
    assert store.get("a") is None and store.get("b") == "y" * 40 and store.get("c")
    store.set("big", "w" * 200, ttl=60)  # larger than the whole store: not kept
    assert store.get("big") is None and store.get("c")
    store.set("short", "s", ttl=0.05)
    time.sleep(0.1)
    assert store.get("short") is None
    assert store.delete_prefix("b") == 1 and store.get("b") is None


@pytest.mark.django_db
def test_task_route_ttls_travel_with_the_configuration():
    """``gateway_config`` exports and imports a task route's cache TTL (null: the default)."""
    TaskRoute.objects.create(task_type="quick", start_tier="fast", cache_ttl_s=30)
    exported = config_export()
    assert "cache_ttl_s: 30" in exported and "cache_ttl_s: null" in exported
    text = "task_routes:\n  - {task_type: quick, start_tier: fast, cache_ttl_s: null}\n"
    report = config_import(text=text, dry_run=False)
    assert report.sections["task_routes"].updated == 1
    assert TaskRoute.objects.get(task_type="quick").cache_ttl_s is None


def test_a_refused_cache_write_does_not_take_the_shared_state_down():
    """Redis out of memory refuses the cached value; cooldowns and limits keep using Redis."""
    import asyncio

    import redis.exceptions

    from gateway_project.shared_state import SharedState

    class Refusing:
        async def set(self, *args: Any, **kwargs: Any) -> None:
            raise redis.exceptions.ResponseError("OOM command not allowed")

    state = SharedState("redis://127.0.0.1:1/0")
    state._async = lambda: Refusing()  # type: ignore[method-assign]
    asyncio.run(state.aset_value("rc:x:1", "value", 60))
    assert state.uses_redis and state.local_values.get("rc:x:1") is None
