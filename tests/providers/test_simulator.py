"""The upstream simulator, exercised over real loopback HTTP as a provider client would.

Each test starts the aiohttp app on a free port inside its own event loop and talks to it with
httpx, asserting the wire shapes that official clients parse. No Django is involved.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

# The repo root must be importable whatever the pytest configuration says.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from providers.simulator.answers import build_answer, count_words  # noqa: E402
from providers.simulator.server import (  # noqa: E402
    KnobError,
    parse_model_spec,
    start_in_background,
)

QUESTION = "Please explain photosynthesis in green plants"
OPENAI_PATH = "/v1/chat/completions"
GEMINI_PATH = "/v1beta/models/gemini-2.0-flash:generateContent"
GEMINI_STREAM_PATH = "/v1beta/models/gemini-2.0-flash:streamGenerateContent"


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    runner, port = await start_in_background()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        yield http
    await runner.cleanup()


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def openai_body(text: str = QUESTION, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": user(text), **extra}


def ollama_body(text: str = QUESTION, **extra: Any) -> dict[str, Any]:
    return {"model": "llama3.2:1b", "messages": user(text), **extra}


def anthropic_body(text: str = QUESTION, **extra: Any) -> dict[str, Any]:
    return {"model": "claude-3-5-haiku", "max_tokens": 256, "messages": user(text), **extra}


def gemini_body(text: str = QUESTION, **config: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    if config:
        body["generationConfig"] = config
    return body


def sse_events(raw: str) -> list[tuple[str | None, str]]:
    """Parse an SSE body into (event, data) pairs, accepting LF and CRLF line ends."""
    events: list[tuple[str | None, str]] = []
    event: str | None = None
    data: list[str] = []
    for line in raw.replace("\r\n", "\n").split("\n"):
        if not line:
            if data:
                events.append((event, "\n".join(data)))
            event, data = None, []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
    assert not data, "stream ended inside an event"
    return events


def expected_answer(text: str = QUESTION, **knobs: Any) -> str:
    return build_answer(text, **knobs)


# ------------------------------------------------------------------------------------ OpenAI


@pytest.mark.asyncio
async def test_openai_non_stream(client: httpx.AsyncClient) -> None:
    response = await client.post(OPENAI_PATH, json=openai_body())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == "gpt-4o-mini"
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    content = choice["message"]["content"]
    assert content == expected_answer()
    assert "photosynthesis" in content and "plants" in content
    assert content.count(".") >= 2  # several sentences
    assert count_words(content) == 30
    assert body["usage"] == {
        "prompt_tokens": len(QUESTION) // 4,
        "completion_tokens": 30,
        "total_tokens": len(QUESTION) // 4 + 30,
    }


@pytest.mark.asyncio
async def test_openai_stream(client: httpx.AsyncClient) -> None:
    response = await client.post(
        OPENAI_PATH, json=openai_body(stream=True, stream_options={"include_usage": True})
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("data: [DONE]\n\n")
    events = sse_events(response.text)
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    usage_chunk, finish_chunk, content_chunks = chunks[-1], chunks[-2], chunks[1:-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 30
    assert finish_chunk["choices"][0]["finish_reason"] == "stop"
    assert finish_chunk["choices"][0]["delta"] == {}
    assert all(c["choices"][0]["finish_reason"] is None for c in content_chunks)
    text = "".join(c["choices"][0]["delta"]["content"] for c in content_chunks)
    assert text == expected_answer()
    assert len(content_chunks) == 30  # chunk_words defaults to one word per chunk


@pytest.mark.asyncio
async def test_openai_stream_without_usage_and_chunk_words(client: httpx.AsyncClient) -> None:
    response = await client.post(
        OPENAI_PATH, json=openai_body(QUESTION + " [[sim chunk_words=10]]", stream=True)
    )
    chunks = [json.loads(d) for _, d in sse_events(response.text)[:-1]]
    assert all(c["choices"] for c in chunks)  # no usage chunk unless asked
    assert len(chunks) == 1 + 3 + 1  # role, 30 words in chunks of ten, finish


# ------------------------------------------------------------------------------------ Ollama


@pytest.mark.asyncio
async def test_ollama_non_stream(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/chat", json=ollama_body(stream=False))
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "llama3.2:1b"
    assert body["created_at"].endswith("Z")
    assert body["message"] == {"role": "assistant", "content": expected_answer()}
    assert body["done"] is True
    assert body["done_reason"] == "stop"
    assert body["prompt_eval_count"] == len(QUESTION) // 4
    assert body["eval_count"] == 30
    assert isinstance(body["total_duration"], int)


@pytest.mark.asyncio
async def test_ollama_streams_ndjson_by_default(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/chat", json=ollama_body())  # no "stream" key
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    *parts, final = lines
    assert all(p["done"] is False and p["message"]["role"] == "assistant" for p in parts)
    assert set(parts[0]) == {"model", "created_at", "message", "done"}
    assert "".join(p["message"]["content"] for p in parts) == expected_answer()
    assert final["done"] is True
    assert final["message"] == {"role": "assistant", "content": ""}
    assert final["done_reason"] == "stop"
    assert final["eval_count"] == 30
    assert final["prompt_eval_count"] == len(QUESTION) // 4
    assert "total_duration" in final


@pytest.mark.asyncio
async def test_ollama_listing_and_version(client: httpx.AsyncClient) -> None:
    await client.put("/_sim/models/qwen2.5:0.5b", json={})
    await client.post("/api/chat", json=ollama_body(stream=False))
    tags = (await client.get("/api/tags")).json()
    names = [m["name"] for m in tags["models"]]
    assert names == ["llama3.2:1b", "qwen2.5:0.5b"]
    model = tags["models"][0]
    assert {"name", "model", "modified_at", "size", "digest", "details"} <= set(model)
    assert "version" in (await client.get("/api/version")).json()


# --------------------------------------------------------------------------------- Anthropic


@pytest.mark.asyncio
async def test_anthropic_non_stream(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/messages",
        json=anthropic_body(system="You are terse."),
        headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("msg_")
    assert body["type"] == "message"
    assert body["role"] == "assistant"
    assert body["model"] == "claude-3-5-haiku"
    assert body["content"] == [{"type": "text", "text": expected_answer()}]
    assert body["stop_reason"] == "end_turn"
    assert body["stop_sequence"] is None
    chars = len(QUESTION) + len("You are terse.")
    assert body["usage"] == {"input_tokens": chars // 4, "output_tokens": 30}


@pytest.mark.asyncio
async def test_anthropic_stream(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/messages", json=anthropic_body(stream=True))
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[3:-3] == ["content_block_delta"] * 30
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    payloads = [json.loads(data) for _, data in events]
    assert all(p["type"] == name for p, name in zip(payloads, names, strict=True))
    start = payloads[0]["message"]
    assert start["role"] == "assistant" and start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] == len(QUESTION) // 4
    deltas = [p["delta"] for p in payloads[3:-3]]
    assert {d["type"] for d in deltas} == {"text_delta"}
    assert "".join(d["text"] for d in deltas) == expected_answer()
    assert payloads[-2]["delta"]["stop_reason"] == "end_turn"
    assert payloads[-2]["usage"] == {"output_tokens": 30}


@pytest.mark.asyncio
async def test_anthropic_requires_max_tokens(client: httpx.AsyncClient) -> None:
    body = anthropic_body()
    del body["max_tokens"]
    response = await client.post("/v1/messages", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


# ------------------------------------------------------------------------------------ Gemini


@pytest.mark.asyncio
async def test_gemini_non_stream(client: httpx.AsyncClient) -> None:
    body = gemini_body()
    body["systemInstruction"] = {"parts": [{"text": "Be brief."}]}
    response = await client.post(GEMINI_PATH, json=body, headers={"x-goog-api-key": "k"})
    assert response.status_code == 200
    data = response.json()
    [candidate] = data["candidates"]
    assert candidate["content"] == {"role": "model", "parts": [{"text": expected_answer()}]}
    assert candidate["finishReason"] == "STOP"
    assert candidate["index"] == 0
    prompt = (len(QUESTION) + len("Be brief.")) // 4
    assert data["usageMetadata"] == {
        "promptTokenCount": prompt,
        "candidatesTokenCount": 30,
        "totalTokenCount": prompt + 30,
    }
    assert data["modelVersion"] == "gemini-2.0-flash"


@pytest.mark.asyncio
async def test_gemini_stream_sse(client: httpx.AsyncClient) -> None:
    response = await client.post(GEMINI_STREAM_PATH, params={"alt": "sse"}, json=gemini_body())
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = [json.loads(data) for _, data in sse_events(response.text)]
    *parts, last = chunks
    assert all("finishReason" not in c["candidates"][0] for c in parts)
    assert all("usageMetadata" not in c for c in parts)
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert text == expected_answer()
    assert last["candidates"][0]["finishReason"] == "STOP"
    assert last["usageMetadata"]["candidatesTokenCount"] == 30


@pytest.mark.asyncio
async def test_gemini_stream_json_array_without_alt(client: httpx.AsyncClient) -> None:
    response = await client.post(GEMINI_STREAM_PATH, json=gemini_body())
    chunks = response.json()
    assert isinstance(chunks, list)
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert text == expected_answer()


# ------------------------------------------------------------------------------------- knobs


ERROR_CASES = [
    ("openai", lambda b: b["error"]["code"] == "rate_limit_exceeded" and b["error"]["message"]),
    ("ollama", lambda b: isinstance(b["error"], str)),
    ("anthropic", lambda b: b["type"] == "error" and b["error"]["type"] == "rate_limit_error"),
    (
        "gemini",
        lambda b: b["error"]["status"] == "RESOURCE_EXHAUSTED" and b["error"]["code"] == 429,
    ),
]


def request_for(protocol: str, text: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    if protocol == "openai":
        return OPENAI_PATH, openai_body(text, **extra)
    if protocol == "ollama":
        return "/api/chat", ollama_body(text, **extra)
    if protocol == "anthropic":
        return "/v1/messages", anthropic_body(text, **extra)
    return GEMINI_PATH, gemini_body(text)


@pytest.mark.parametrize(("protocol", "check"), ERROR_CASES)
@pytest.mark.asyncio
async def test_status_and_retry_after(client: httpx.AsyncClient, protocol: str, check: Any) -> None:
    path, body = request_for(protocol, "hello [[sim status=429 retry_after=7]]")
    response = await client.post(path, json=body)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert check(response.json())


@pytest.mark.asyncio
async def test_anthropic_overloaded_is_529(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/messages", json=anthropic_body("hi [[sim status=529]]"))
    assert response.status_code == 529
    assert response.json()["error"]["type"] == "overloaded_error"
    assert "retry-after" not in response.headers


@pytest.mark.asyncio
async def test_status_applies_before_a_stream_starts(client: httpx.AsyncClient) -> None:
    response = await client.post(
        OPENAI_PATH, json=openai_body("hi [[sim status=503]]", stream=True)
    )
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "server_error"


@pytest.mark.asyncio
async def test_fail_times_counts_per_model(client: httpx.AsyncClient) -> None:
    put = await client.put("/_sim/models/flaky", json={"status": 503, "fail_times": 2})
    assert put.status_code == 200
    body = {"model": "flaky", "messages": user("hi")}
    statuses = [(await client.post(OPENAI_PATH, json=body)).status_code for _ in range(4)]
    assert statuses == [503, 503, 200, 200]
    # Other models are unaffected.
    assert (await client.post(OPENAI_PATH, json=openai_body())).status_code == 200


@pytest.mark.asyncio
async def test_reset_after_chunks_cuts_the_connection(client: httpx.AsyncClient) -> None:
    received: list[str] = []
    body = openai_body("hi [[sim reset_after_chunks=3 token_interval_ms=1]]", stream=True)
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream("POST", OPENAI_PATH, json=body) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                received.append(line)
    data = [line[6:] for line in received if line.startswith("data: ")]
    assert len(data) == 1 + 3  # the role chunk, then three content chunks
    assert "[DONE]" not in data
    assert all(json.loads(d)["choices"][0]["finish_reason"] is None for d in data)


@pytest.mark.asyncio
async def test_reset_after_chunks_ollama_has_no_done_line(client: httpx.AsyncClient) -> None:
    lines: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream(
            "POST", "/api/chat", json=ollama_body("hi [[sim reset_after_chunks=2]]")
        ) as response:
            async for line in response.aiter_lines():
                lines.append(line)
    assert [json.loads(line)["done"] for line in lines] == [False, False]


@pytest.mark.asyncio
async def test_malformed_non_stream_is_not_json(client: httpx.AsyncClient) -> None:
    for protocol in ("openai", "ollama", "anthropic", "gemini"):
        path, body = request_for(protocol, "hi [[sim malformed=true]]", stream=False)
        response = await client.post(path, json=body)
        assert response.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(response.text)


@pytest.mark.asyncio
async def test_malformed_stream_has_broken_data(client: httpx.AsyncClient) -> None:
    response = await client.post(
        OPENAI_PATH, json=openai_body("hi [[sim malformed=1]]", stream=True)
    )
    assert response.status_code == 200
    events = sse_events(response.text)
    json.loads(events[0][1])  # the role chunk is fine...
    with pytest.raises(json.JSONDecodeError):
        json.loads(events[1][1])  # ...the next one is cut in the middle
    assert "[DONE]" not in response.text


@pytest.mark.asyncio
async def test_quality_bad(client: httpx.AsyncClient) -> None:
    response = await client.post(OPENAI_PATH, json=openai_body(QUESTION + " [[sim quality=bad]]"))
    content = response.json()["choices"][0]["message"]["content"]
    assert content.startswith("I'm sorry, but I cannot help with that.")
    assert content.count("the answer is") >= 5
    assert "photosynthesis" not in content


@pytest.mark.asyncio
async def test_language_de(client: httpx.AsyncClient) -> None:
    text = "Erkläre bitte die Photosynthese [[sim language=de words=60]]"
    response = await client.post("/api/chat", json=ollama_body(text, stream=False))
    content = response.json()["message"]["content"]
    assert count_words(content) == 60
    assert content.startswith("Hier ist eine kurze Antwort zum Thema Photosynthese.")
    german = {"die", "und", "ist", "das", "wie", "sie", "zu", "der", "es"}
    assert sum(word.strip(".,") in german for word in content.split()) >= 8
    assert " the " not in content


@pytest.mark.asyncio
async def test_json_valid_from_response_format_and_knob(client: httpx.AsyncClient) -> None:
    response = await client.post(
        OPENAI_PATH, json=openai_body(response_format={"type": "json_object"})
    )
    parsed = json.loads(response.json()["choices"][0]["message"]["content"])
    assert set(parsed) == {"answer", "language"} and parsed["language"] == "en"
    assert "photosynthesis" in parsed["answer"]

    ollama = await client.post("/api/chat", json=ollama_body(stream=False, format="json"))
    assert json.loads(ollama.json()["message"]["content"])["answer"]

    gemini = await client.post(GEMINI_PATH, json=gemini_body(responseMimeType="application/json"))
    assert json.loads(gemini.json()["candidates"][0]["content"]["parts"][0]["text"])["answer"]

    anthropic = await client.post(
        "/v1/messages", json=anthropic_body("Bonjour [[sim json=valid language=fr]]")
    )
    parsed = json.loads(anthropic.json()["content"][0]["text"])
    assert parsed["language"] == "fr" and parsed["answer"].startswith("Voici")


@pytest.mark.asyncio
async def test_json_broken(client: httpx.AsyncClient) -> None:
    response = await client.post(
        OPENAI_PATH,
        json=openai_body("hi [[sim json=broken]]", response_format={"type": "json_object"}),
    )
    content = response.json()["choices"][0]["message"]["content"]
    assert content.startswith('{"answer":')
    with pytest.raises(json.JSONDecodeError):
        json.loads(content)


@pytest.mark.asyncio
async def test_max_tokens_gives_length_in_every_dialect(client: httpx.AsyncClient) -> None:
    openai = (await client.post(OPENAI_PATH, json=openai_body(max_tokens=5))).json()
    assert openai["choices"][0]["finish_reason"] == "length"
    assert openai["usage"]["completion_tokens"] == 5
    assert openai["choices"][0]["message"]["content"] == "Here is a short answer"

    body = ollama_body(stream=False, options={"num_predict": 4, "temperature": 0})
    ollama = (await client.post("/api/chat", json=body)).json()
    assert (ollama["done_reason"], ollama["eval_count"]) == ("length", 4)

    anthropic = (await client.post("/v1/messages", json=anthropic_body(max_tokens=3))).json()
    assert (anthropic["stop_reason"], anthropic["usage"]["output_tokens"]) == ("max_tokens", 3)

    gemini = (await client.post(GEMINI_PATH, json=gemini_body(maxOutputTokens=2))).json()
    assert gemini["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert gemini["usageMetadata"]["candidatesTokenCount"] == 2

    stream = await client.post(GEMINI_STREAM_PATH + "?alt=sse", json=gemini_body(maxOutputTokens=2))
    last = json.loads(sse_events(stream.text)[-1][1])
    assert last["candidates"][0]["finishReason"] == "MAX_TOKENS"


@pytest.mark.asyncio
async def test_stop_sequences(client: httpx.AsyncClient) -> None:
    body = anthropic_body(stop_sequences=["answer"])
    anthropic = (await client.post("/v1/messages", json=body)).json()
    assert anthropic["content"][0]["text"] == "Here is a short "
    assert (anthropic["stop_reason"], anthropic["stop_sequence"]) == ("stop_sequence", "answer")
    openai = (await client.post(OPENAI_PATH, json=openai_body(stop="short"))).json()
    assert openai["choices"][0]["message"]["content"] == "Here is a "
    assert openai["choices"][0]["finish_reason"] == "stop"


@pytest.mark.asyncio
async def test_reply_words_and_directive_removal(client: httpx.AsyncClient) -> None:
    text = "Say it [[sim reply=hello%2C%20world%21]]"
    response = await client.post(OPENAI_PATH, json=openai_body(text))
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "hello, world!"
    assert body["usage"]["completion_tokens"] == 2
    assert body["usage"]["prompt_tokens"] == 1  # "Say it" once the directive is gone

    short = await client.post(OPENAI_PATH, json=openai_body(QUESTION + " [[sim words=7]]"))
    assert short.json()["usage"]["completion_tokens"] == 7


@pytest.mark.asyncio
async def test_unknown_knob_is_a_protocol_error(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/messages", json=anthropic_body("hi [[sim latency=5]]"))
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "latency" in response.json()["error"]["message"]


@pytest.mark.asyncio
async def test_latency_and_ttft(client: httpx.AsyncClient) -> None:
    await client.put("/_sim/models/slow", json={"latency_ms": 150, "ttft_ms": 30})
    started = time.perf_counter()
    await client.post(OPENAI_PATH, json={"model": "slow", "messages": user("hi")})
    assert time.perf_counter() - started >= 0.15
    started = time.perf_counter()
    await client.post(OPENAI_PATH, json={"model": "slow", "messages": user("hi"), "stream": True})
    # The stream waits ttft_ms, not latency_ms.
    assert 0.03 <= time.perf_counter() - started < 0.15


@pytest.mark.asyncio
async def test_answers_are_deterministic(client: httpx.AsyncClient) -> None:
    first = (await client.post("/v1/messages", json=anthropic_body())).json()
    second = (await client.post("/v1/messages", json=anthropic_body())).json()
    assert first["content"] == second["content"]
    other = await client.post("/v1/messages", json=anthropic_body("Tell me about volcanoes"))
    assert "volcanoes" in other.json()["content"][0]["text"]


# ------------------------------------------------------------------------------- control API


@pytest.mark.asyncio
async def test_control_api_and_stats(client: httpx.AsyncClient) -> None:
    assert (await client.get("/_sim/health")).json() == {"status": "ok"}
    bad = await client.put("/_sim/models/m", json={"colour": "blue"})
    assert bad.status_code == 400

    put = await client.put("/_sim/models/m", json={"reply": "configured", "latency_ms": 0})
    assert put.json() == {"model": "m", "knobs": {"reply": "configured", "latency_ms": 0}}
    body = {"model": "m", "messages": user("hi")}
    answer = (await client.post(OPENAI_PATH, json=body)).json()
    assert answer["choices"][0]["message"]["content"] == "configured"
    # A directive overrides the model's config for one request.
    body_override = {"model": "m", "messages": user("hi [[sim reply=override]]")}
    answer = (await client.post(OPENAI_PATH, json=body_override)).json()
    assert answer["choices"][0]["message"]["content"] == "override"

    await client.post("/api/chat", json={"model": "m", "messages": user("hi"), "stream": False})
    await client.post(GEMINI_PATH, json=gemini_body())
    models = (await client.get("/v1/models")).json()
    assert models["object"] == "list"
    assert {"id": "m", "object": "model", "owned_by": "simulator"}.items() <= models["data"][
        1
    ].items()
    assert [m["id"] for m in models["data"]] == ["gemini-2.0-flash", "m"]

    stats = (await client.get("/_sim/stats")).json()
    assert stats == {
        "calls": {"m": 3, "gemini-2.0-flash": 1},
        "by_protocol": {"openai": 2, "ollama": 1, "anthropic": 0, "gemini": 1},
    }

    deleted = await client.delete("/_sim/models/m")
    assert deleted.json() == {"model": "m", "deleted": True}
    answer = (await client.post(OPENAI_PATH, json=body)).json()
    assert answer["choices"][0]["message"]["content"] != "configured"

    assert (await client.post("/_sim/reset")).json() == {"status": "ok"}
    stats = (await client.get("/_sim/stats")).json()
    assert stats["calls"] == {} and set(stats["by_protocol"].values()) == {0}


@pytest.mark.asyncio
async def test_require_key() -> None:
    runner, port = await start_in_background(require_key="sekret")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            denied = {
                "openai": await http.post(OPENAI_PATH, json=openai_body()),
                "ollama": await http.post("/api/chat", json=ollama_body()),
                "anthropic": await http.post("/v1/messages", json=anthropic_body()),
                "gemini": await http.post(GEMINI_PATH, json=gemini_body()),
            }
            assert {r.status_code for r in denied.values()} == {401}
            assert denied["openai"].json()["error"]["code"] == "invalid_api_key"
            assert isinstance(denied["ollama"].json()["error"], str)
            assert denied["anthropic"].json()["error"]["type"] == "authentication_error"
            assert denied["gemini"].json()["error"]["status"] == "UNAUTHENTICATED"
            wrong = await http.post(
                OPENAI_PATH, json=openai_body(), headers={"Authorization": "Bearer nope"}
            )
            assert wrong.status_code == 401

            allowed = [
                await http.post(
                    OPENAI_PATH, json=openai_body(), headers={"Authorization": "Bearer sekret"}
                ),
                await http.post(
                    "/v1/messages", json=anthropic_body(), headers={"x-api-key": "sekret"}
                ),
                await http.post(
                    GEMINI_PATH, json=gemini_body(), headers={"x-goog-api-key": "sekret"}
                ),
                await http.post(GEMINI_PATH, params={"key": "sekret"}, json=gemini_body()),
            ]
            assert [r.status_code for r in allowed] == [200] * 4
            assert (await http.get("/_sim/health")).status_code == 200
    finally:
        await runner.cleanup()


@pytest.mark.asyncio
async def test_startup_models_and_reset_restores_them() -> None:
    models = {"fixed": {"reply": "from start-up", "status": "200"}}
    runner, port = await start_in_background(models=models)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            body = {"model": "fixed", "messages": user("hi")}
            await http.put("/_sim/models/fixed", json={"reply": "changed"})
            await http.post("/_sim/reset")
            answer = (await http.post(OPENAI_PATH, json=body)).json()
            assert answer["choices"][0]["message"]["content"] == "from start-up"
    finally:
        await runner.cleanup()


# ----------------------------------------------------------------------------------- the CLI


def test_parse_model_spec() -> None:
    assert parse_model_spec("gpt-4o") == ("gpt-4o", {})
    name, knobs = parse_model_spec("llama3.2:1b:latency_ms=5,malformed=true,reply=a%2Cb")
    assert name == "llama3.2:1b"
    assert knobs == {"latency_ms": 5, "malformed": True, "reply": "a,b"}
    with pytest.raises(KnobError):
        parse_model_spec("m:quality=excellent")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.asyncio
async def test_cli_serves_configured_models() -> None:
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "providers.simulator",
            "--port",
            str(port),
            "--model",
            "cli-model:reply=from%20cli",
            "--require-key",
            "k",
        ],
        cwd=_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            for _ in range(100):
                try:
                    await http.get("/_sim/health")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            response = await http.post(
                "/api/chat",
                json={"model": "cli-model", "messages": user("hi"), "stream": False},
                headers={"Authorization": "Bearer k"},
            )
            assert response.json()["message"]["content"] == "from cli"
    finally:
        process.terminate()
        process.wait(timeout=5)
