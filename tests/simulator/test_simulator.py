"""The upstream simulator, exercised over real loopback HTTP as a provider client would.

Each test starts the aiohttp app on a free port inside its own event loop and talks to it with
httpx, asserting the wire shapes that official clients parse. No Django is involved.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

# The repo root must be importable whatever the pytest configuration says.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from providers.ratelimits import parse_duration, parse_rate_limits  # noqa: E402
from simulator import (  # noqa: E402
    KnobError,
    parse_knobs,
    parse_model_spec,
    start_in_background,
    wrong_rate_for,
)
from simulator.answers import (  # noqa: E402
    DEFAULT_WORDS,
    LANGUAGES,
    WRONG_MIN_WORDS,
    build_answer,
    count_words,
    is_wrong,
)
from simulator.ratelimits import Budget, go_duration  # noqa: E402

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
async def test_usage_false_leaves_usage_out_of_every_protocol(client: httpx.AsyncClient) -> None:
    text = QUESTION + " [[sim usage=false]]"
    plain = (await client.post(OPENAI_PATH, json=openai_body(text))).json()
    assert "usage" not in plain and plain["choices"][0]["message"]["content"]
    stream = await client.post(
        OPENAI_PATH,
        json=openai_body(text, stream=True, stream_options={"include_usage": True}),
    )
    chunks = [json.loads(d) for _, d in sse_events(stream.text) if d != "[DONE]"]
    assert chunks and all("usage" not in c for c in chunks)
    ollama = (await client.post("/api/chat", json=ollama_body(text, stream=False))).json()
    assert ollama["done"] and "eval_count" not in ollama and "prompt_eval_count" not in ollama
    anthropic = (await client.post("/v1/messages", json=anthropic_body(text))).json()
    assert "usage" not in anthropic and anthropic["content"][0]["text"]
    events = sse_events(
        (await client.post("/v1/messages", json=anthropic_body(text, stream=True))).text
    )
    assert all("usage" not in data for _, data in events)
    gemini = (await client.post(GEMINI_PATH, json=gemini_body(text))).json()
    assert "usageMetadata" not in gemini and gemini["candidates"][0]["finishReason"] == "STOP"


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


# ------------------------------------------------------------------------ plausibly wrong answers

WRONG_QUESTIONS = [
    QUESTION,
    "How do volcanoes erupt?",
    "Erkläre bitte die Photosynthese",
    "Comment fonctionne un moteur diesel ?",
    "¿Qué es la fotosíntesis?",
    "hi",
]
# Frequent short words, disjoint between the languages, to tell which language a text is in.
MARKERS = {
    "en": {"the", "and", "is", "of", "to", "that", "it", "a"},
    "de": {"die", "der", "und", "ist", "das", "zu", "sich", "dass", "von", "ein", "hat"},
    "fr": {"le", "et", "les", "des", "est", "qui", "une", "du", "au", "il"},
    "es": {"el", "y", "los", "las", "es", "un", "una", "del", "se", "lo"},
}


def language_of(text: str) -> str:
    words = re.findall(r"[^\W\d_]+", text.lower())
    return max(MARKERS, key=lambda lang: sum(word in MARKERS[lang] for word in words))


def repeated_share(text: str) -> float:
    """Share of word trigrams that already occurred earlier in ``text``."""
    words = re.findall(r"[^\W_]+", text.lower())
    trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return (len(trigrams) - len(set(trigrams))) / max(1, len(trigrams))


@pytest.mark.parametrize("language", LANGUAGES)
def test_wrong_answers_look_good_but_are_wrong(language: str) -> None:
    for question in WRONG_QUESTIONS:
        for words in (DEFAULT_WORDS, 60, 100, 300):
            good = build_answer(question, language=language, words=words)
            wrong = build_answer(question, language=language, words=words, wrong=True)
            assert wrong != good
            assert is_wrong(wrong), wrong
            assert not is_wrong(good), good
            assert count_words(wrong) == count_words(good) == words
            assert language_of(wrong) == language_of(good) == language
            # On topic: it opens like the good answer (intro naming the topic).
            assert wrong.split(".")[0] == good.split(".")[0]
            # No loop: every sentence of a short answer is new, and long answers repeat
            # themselves no more than good ones.
            if words <= 100:
                sentences = [s for s in re.split(r"(?<=[.!?])\s+", wrong) if s]
                assert len(sentences) == len(set(sentences)), wrong
            assert repeated_share(wrong) <= max(repeated_share(good), 0.1)
            assert "sorry" not in wrong.lower() and "leid" not in wrong.lower()


@pytest.mark.parametrize("language", LANGUAGES)
def test_is_wrong_is_false_for_good_and_bad_answers(language: str) -> None:
    for question in WRONG_QUESTIONS:
        for words in (1, 5, DEFAULT_WORDS, 100, 500):
            for quality in ("good", "bad"):
                for json_mode in (None, "valid", "broken"):
                    text = build_answer(
                        question,
                        quality=quality,
                        language=language,
                        words=words,
                        json_mode=json_mode,
                    )
                    assert not is_wrong(text), text
        # Bad stays bad: ``wrong`` only changes good answers.
        bad = build_answer(question, quality="bad", language=language)
        assert build_answer(question, quality="bad", language=language, wrong=True) == bad
        assert build_answer(question, reply="fixed", wrong=True) == "fixed"


@pytest.mark.parametrize("language", LANGUAGES)
def test_is_wrong_finds_the_statement_in_json_and_short_answers(language: str) -> None:
    wrapped = build_answer(QUESTION, language=language, json_mode="valid", wrong=True)
    parsed = json.loads(wrapped)
    assert is_wrong(wrapped) and is_wrong(parsed["answer"])
    assert is_wrong(json.dumps(parsed))  # ASCII-escaped JSON too
    assert not is_wrong(build_answer(QUESTION, language=language, json_mode="valid"))
    for words in range(WRONG_MIN_WORDS, 40):
        for question in WRONG_QUESTIONS:
            text = build_answer(question, language=language, words=words, wrong=True)
            assert is_wrong(text) and count_words(text) == words, (words, text)
    # Deterministic and cached like the other answers.
    assert build_answer(QUESTION, language=language, wrong=True) is build_answer(
        QUESTION, language=language, wrong=True
    )


def test_wrong_rate_parsing() -> None:
    assert parse_knobs({"wrong_rate": 0.1}) == {"wrong_rate": (("*", 0.1),)}
    assert parse_knobs({"wrong_rate": 1}) == {"wrong_rate": (("*", 1.0),)}
    assert parse_knobs({"wrong_rate": "0.25"}) == {"wrong_rate": (("*", 0.25),)}
    rates = (("python", 0.5), ("summarize", 0.02), ("*", 0.1))
    assert parse_knobs({"wrong_rate": {"Python": 0.5, "summarize": 0.02, "*": 0.1}}) == {
        "wrong_rate": rates
    }
    assert parse_knobs({"wrong_rate": "python:0.5/summarize:0.02/*:0.1"}) == {"wrong_rate": rates}
    # Typed values go through again unchanged (start-up configs are validated twice).
    assert parse_knobs(parse_knobs({"wrong_rate": rates})) == {"wrong_rate": rates}
    assert parse_knobs({"wrong_rate": {}}) == {"wrong_rate": ()}

    name, knobs = parse_model_spec(
        "llama3.2:1b:wrong_rate=python:0.5/summarize:0.02/*:0.1,words=40"
    )
    assert name == "llama3.2:1b"
    assert knobs == {"wrong_rate": rates, "words": 40}
    assert parse_model_spec("m:wrong_rate=0.3")[1] == {"wrong_rate": (("*", 0.3),)}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.5, "out of range"),
        (-0.1, "out of range"),
        ("nan", "out of range"),
        ("often", "numbers from 0 to 1"),
        (True, "numbers from 0 to 1"),
        ("python:lots", "numbers from 0 to 1"),
        ("python:2", "out of range"),
        ("python:0.5/", "expected topic:rate"),
        ("python:0.5/*", "expected topic:rate"),
        (":0.5", "non-empty"),
        ("python:0.5/PYTHON:0.1", "twice"),
        ({"python": 2}, "out of range"),
        ({"python": None}, "numbers from 0 to 1"),
        ({"": 0.1}, "non-empty"),
        ([1, 2, 3], "rates per topic"),
        (None, "rates per topic"),
    ],
)
def test_wrong_rate_rejects_bad_values(value: object, message: str) -> None:
    with pytest.raises(KnobError, match="wrong_rate") as caught:
        parse_knobs({"wrong_rate": value})
    assert message in str(caught.value)


def test_wrong_rate_for_topics() -> None:
    rates = (("python", 0.5), ("summarize", 0.02), ("*", 0.1))
    assert wrong_rate_for(rates, "Explain PYTHON decorators") == 0.5
    assert wrong_rate_for(rates, "Please summarize this python code") == 0.5  # first one wins
    assert wrong_rate_for(rates, "Summarize the news") == 0.02
    assert wrong_rate_for(rates, "What is a volcano?") == 0.1  # the fallback
    assert wrong_rate_for((("*", 0.1), ("python", 0.5)), "python") == 0.5  # "*" only as fallback
    assert wrong_rate_for((("python", 0.5),), "What is a volcano?") == 0.0  # no match, no "*"
    assert wrong_rate_for((), "python") == 0.0


PROTOCOL_MODELS = {
    "openai": "gpt-4o-mini",
    "ollama": "llama3.2:1b",
    "anthropic": "claude-3-5-haiku",
    "gemini": "gemini-2.0-flash",
}


async def answer_of(client: httpx.AsyncClient, protocol: str, text: str, *, stream: bool) -> str:
    """The answer text of one request in ``protocol``, streamed or not."""
    if protocol == "gemini":
        if stream:
            response = await client.post(
                GEMINI_STREAM_PATH, params={"alt": "sse"}, json=gemini_body(text)
            )
            chunks = [json.loads(data) for _, data in sse_events(response.text)]
            return "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
        body = (await client.post(GEMINI_PATH, json=gemini_body(text))).json()
        return str(body["candidates"][0]["content"]["parts"][0]["text"])
    path, body = request_for(protocol, text, stream=stream)
    response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    if protocol == "openai":
        if stream:
            chunks = [json.loads(d) for _, d in sse_events(response.text)[:-1]]
            return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        return str(response.json()["choices"][0]["message"]["content"])
    if protocol == "ollama":
        if stream:
            lines = [json.loads(line) for line in response.text.splitlines()]
            return "".join(line["message"]["content"] for line in lines)
        return str(response.json()["message"]["content"])
    if stream:
        payloads = [json.loads(data) for _, data in sse_events(response.text)]
        return "".join(p["delta"]["text"] for p in payloads if p["type"] == "content_block_delta")
    return str(response.json()["content"][0]["text"])


@pytest.mark.asyncio
async def test_wrong_rate_per_topic_in_every_protocol(client: httpx.AsyncClient) -> None:
    rates = {"python": 1, "summarize": 0, "*": 1}
    for model in PROTOCOL_MODELS.values():
        put = await client.put(f"/_sim/models/{model}", json={"wrong_rate": rates})
        assert put.status_code == 200
        assert put.json() == {
            "model": model,
            "knobs": {"wrong_rate": {"python": 1.0, "summarize": 0.0, "*": 1.0}},
        }
    listed = (await client.get("/_sim/models")).json()
    assert listed["models"]["gpt-4o-mini"] == {
        "wrong_rate": {"python": 1.0, "summarize": 0.0, "*": 1.0}
    }
    assert "wrong_rate" in listed["knobs"]

    python, summary, other = "Explain Python generators", "Summarize the news please", QUESTION
    for protocol in PROTOCOL_MODELS:
        for stream in (False, True):
            wrong = await answer_of(client, protocol, python, stream=stream)
            assert is_wrong(wrong), (protocol, stream, wrong)
            assert wrong == build_answer(python, wrong=True)
            summarized = await answer_of(client, protocol, summary, stream=stream)
            assert summarized == build_answer(summary) and not is_wrong(summarized)
            assert is_wrong(await answer_of(client, protocol, other, stream=stream))

    stats = (await client.get("/_sim/stats")).json()
    assert stats["wrong"] == {model: 4 for model in PROTOCOL_MODELS.values()}
    assert stats["calls"] == {model: 6 for model in PROTOCOL_MODELS.values()}
    await client.post("/_sim/reset")
    assert (await client.get("/_sim/stats")).json()["wrong"] == {}


@pytest.mark.asyncio
async def test_wrong_rate_as_a_single_rate(client: httpx.AsyncClient) -> None:
    put = await client.put("/_sim/models/always", json={"wrong_rate": 1.0, "language": "de"})
    assert put.json()["knobs"] == {"wrong_rate": {"*": 1.0}, "language": "de"}
    await client.put("/_sim/models/never", json={"wrong_rate": 0})
    question = "Erkläre bitte die Photosynthese"
    body: dict[str, Any]
    for _ in range(5):
        body = {"model": "always", "messages": user(question)}
        text = (await client.post(OPENAI_PATH, json=body)).json()["choices"][0]["message"][
            "content"
        ]
        assert is_wrong(text) and language_of(text) == "de"
        assert text == build_answer(question, language="de", wrong=True)
        body = {"model": "never", "messages": user(question)}
        text = (await client.post(OPENAI_PATH, json=body)).json()["choices"][0]["message"][
            "content"
        ]
        assert not is_wrong(text) and text == build_answer(question)
    # Quality bad stays bad, and a fixed reply stays as it is.
    body = {"model": "always", "messages": user(question + " [[sim quality=bad]]")}
    text = (await client.post(OPENAI_PATH, json=body)).json()["choices"][0]["message"]["content"]
    assert text == build_answer(question, quality="bad", language="de")
    body = {"model": "always", "messages": user("hi [[sim reply=fixed]]")}
    text = (await client.post(OPENAI_PATH, json=body)).json()["choices"][0]["message"]["content"]
    assert text == "fixed"
    # Cut before the wrong statement: served, but not counted as wrong.
    body = {"model": "always", "messages": user(question), "max_tokens": 3}
    text = (await client.post(OPENAI_PATH, json=body)).json()["choices"][0]["message"]["content"]
    assert not is_wrong(text)
    assert (await client.get("/_sim/stats")).json()["wrong"] == {"always": 5}


@pytest.mark.asyncio
async def test_wrong_rate_directive(client: httpx.AsyncClient) -> None:
    wrong = await answer_of(client, "anthropic", QUESTION + " [[sim wrong_rate=1]]", stream=True)
    assert is_wrong(wrong) and wrong == build_answer(QUESTION, wrong=True)
    text = QUESTION + " [[sim wrong_rate=python:1/plants:0/*:1 language=fr]]"
    answer = await answer_of(client, "openai", text, stream=False)
    assert answer == build_answer(QUESTION, language="fr") and not is_wrong(answer)
    text = "Explain python [[sim wrong_rate=python:1/plants:0 json=valid]]"
    answer = await answer_of(client, "gemini", text, stream=False)
    assert is_wrong(answer) and is_wrong(json.loads(answer)["answer"])
    # A directive overrides the model's rate for one request.
    await client.put("/_sim/models/gpt-4o-mini", json={"wrong_rate": 1})
    answer = await answer_of(client, "openai", QUESTION + " [[sim wrong_rate=0]]", stream=False)
    assert not is_wrong(answer)


@pytest.mark.asyncio
async def test_wrong_rate_draws_per_request(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    draws = iter([0.29, 0.3, 0.99, 0.0])
    monkeypatch.setattr("simulator.chat.random.random", lambda: next(draws))
    await client.put("/_sim/models/gpt-4o-mini", json={"wrong_rate": "0.3"})
    found = [is_wrong(await answer_of(client, "openai", QUESTION, stream=False)) for _ in range(4)]
    assert found == [True, False, False, True]


@pytest.mark.asyncio
async def test_wrong_rate_bad_values_are_rejected(client: httpx.AsyncClient) -> None:
    bad = await client.put("/_sim/models/m", json={"wrong_rate": 2})
    assert bad.status_code == 400
    assert bad.json() == {"error": "wrong_rate rate is out of range (0 to 1): 2"}
    bad = await client.put("/_sim/models/m", json={"wrong_rate": {"python": "often"}})
    assert bad.status_code == 400 and "wrong_rate" in bad.json()["error"]
    response = await client.post(
        OPENAI_PATH, json=openai_body("hi [[sim wrong_rate=python:0.5,*:0.1]]")
    )
    assert response.status_code == 400
    assert "wrong_rate" in response.json()["error"]["message"]
    with pytest.raises(KnobError, match="expected topic:rate"):
        parse_model_spec("m:wrong_rate=python:0.5/summarize")


@pytest.mark.asyncio
async def test_startup_wrong_rate_from_a_model_spec() -> None:
    name, knobs = parse_model_spec("spec-model:wrong_rate=volcano:1/*:0")
    runner, port = await start_in_background(models={name: knobs})
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            for question, expected in (("Tell me about a volcano", True), (QUESTION, False)):
                body = {"model": name, "messages": user(question), "stream": False}
                text = (await http.post("/api/chat", json=body)).json()["message"]["content"]
                assert is_wrong(text) is expected
            assert (await http.get("/_sim/stats")).json()["wrong"] == {name: 1}
    finally:
        await runner.cleanup()


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
    tokens = stats.pop("tokens")
    assert stats == {
        "calls": {"m": 3, "gemini-2.0-flash": 1},
        "by_protocol": {"openai": 2, "ollama": 1, "anthropic": 0, "gemini": 1},
        "wrong": {},
        "rate_limited": {},
    }
    # What a real upstream would bill: the tokens of every answer served, per model.
    assert set(tokens) == {"m", "gemini-2.0-flash"}
    assert all(t["in"] > 0 and t["out"] > 0 for t in tokens.values())

    deleted = await client.delete("/_sim/models/m")
    assert deleted.json() == {"model": "m", "deleted": True}
    answer = (await client.post(OPENAI_PATH, json=body)).json()
    assert answer["choices"][0]["message"]["content"] != "configured"

    assert (await client.post("/_sim/reset")).json() == {"status": "ok"}
    stats = (await client.get("/_sim/stats")).json()
    assert stats["calls"] == {} and set(stats["by_protocol"].values()) == {0}


@pytest.mark.asyncio
async def test_an_outage_takes_protocols_down_model_lists_included(
    client: httpx.AsyncClient,
) -> None:
    """PUT /_sim/outage makes every endpoint of the named protocols answer its status (the
    model lists health checks read included); DELETE and reset bring them back."""
    assert (await client.get("/_sim/outage")).json() == {"outage": None}
    bad_outages: list[dict[str, Any]] = [
        {"status": 200},
        {"protocols": ["smtp"]},
        {"protocols": [{}]},
        {"colour": 1},
    ]
    for bad in bad_outages:
        assert (await client.put("/_sim/outage", json=bad)).status_code == 400
    started = await client.put("/_sim/outage", json={"protocols": ["ollama", "anthropic"]})
    assert started.json() == {"outage": {"status": 503, "protocols": ["anthropic", "ollama"]}}

    anthropic_list = {"anthropic-version": "2023-06-01"}
    down = [
        await client.get("/api/tags"),
        await client.get("/"),
        await client.post("/api/chat", json=ollama_body(stream=False)),
        await client.get("/v1/models", headers=anthropic_list),
        await client.post("/v1/messages", json=anthropic_body()),
    ]
    assert [r.status_code for r in down] == [503] * 5
    up = [
        await client.get("/v1/models"),
        await client.post(OPENAI_PATH, json=openai_body()),
        await client.get("/v1beta/models"),
    ]
    assert [r.status_code for r in up] == [200] * 3

    assert (await client.delete("/_sim/outage")).json() == {"outage": None}
    assert (await client.get("/api/tags")).status_code == 200
    await client.put("/_sim/outage", json={"status": 500})
    assert (await client.post(OPENAI_PATH, json=openai_body())).status_code == 500
    await client.post("/_sim/reset")
    assert (await client.get("/v1/models", headers=anthropic_list)).status_code == 200


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
            "simulator",
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


# ------------------------------------------------------------------------------- rate limits


@pytest.mark.asyncio
async def test_ratelimit_requests_are_reported_and_spent(client: httpx.AsyncClient) -> None:
    """OpenAI-style headers count down per call; only a call finding nothing left gets a 429,
    with the headers and a Retry-After."""
    await client.put("/_sim/models/rl", json={"ratelimit_requests": 3, "ratelimit_window_s": 60})
    body = {"model": "rl", "messages": user("hi")}
    seen = []
    for _ in range(3):
        response = await client.post(OPENAI_PATH, json=body)
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit-requests"] == "3"
        seen.append(response.headers["x-ratelimit-remaining-requests"])
        reset = parse_duration(response.headers["x-ratelimit-reset-requests"])
        assert reset is not None and 0 < reset <= 60
    assert seen == ["2", "1", "0"]
    refused = await client.post(OPENAI_PATH, json=body)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(refused.headers["retry-after"]) <= 21  # one request back in 60/3 s
    stats = (await client.get("/_sim/stats")).json()
    assert stats["calls"]["rl"] == 4 and stats["rate_limited"] == {"rl": 1}
    # The gateway's parser reads what the simulator writes.
    limits = parse_rate_limits(refused.headers)
    assert limits is not None and limits.requests_remaining == 0


@pytest.mark.asyncio
async def test_ratelimit_refills_over_its_window(client: httpx.AsyncClient) -> None:
    await client.put("/_sim/models/rl", json={"ratelimit_requests": 2, "ratelimit_window_s": 0.4})
    body = {"model": "rl", "messages": user("hi")}
    assert [(await client.post(OPENAI_PATH, json=body)).status_code for _ in range(3)] == [
        200,
        200,
        429,
    ]
    await asyncio.sleep(0.25)  # one request back after 0.2 s
    response = await client.post(OPENAI_PATH, json=body)
    assert response.status_code == 200
    assert response.headers["x-ratelimit-remaining-requests"] == "0"


@pytest.mark.asyncio
async def test_ratelimit_tokens(client: httpx.AsyncClient) -> None:
    """A token budget counts each answer's input and output tokens."""
    await client.put("/_sim/models/rl", json={"ratelimit_tokens": 1000})
    body = {"model": "rl", "messages": user("hi")}
    first = await client.post(OPENAI_PATH, json=body)
    used = first.json()["usage"]["total_tokens"]
    assert first.headers["x-ratelimit-limit-tokens"] == "1000"
    assert int(first.headers["x-ratelimit-remaining-tokens"]) in (1000 - used, 1000 - used + 1)
    assert "x-ratelimit-remaining-requests" not in first.headers
    await client.put("/_sim/models/rl", json={"ratelimit_tokens": used})
    assert (await client.post(OPENAI_PATH, json=body)).status_code == 200
    spent = await client.post(OPENAI_PATH, json=body)
    assert spent.status_code == 429 and spent.headers["x-ratelimit-remaining-tokens"] == "0"


@pytest.mark.asyncio
async def test_ratelimit_anthropic_headers(client: httpx.AsyncClient) -> None:
    await client.put("/_sim/models/claude-3-5-haiku", json={"ratelimit_requests": 1})
    ok = await client.post("/v1/messages", json=anthropic_body())
    assert ok.status_code == 200
    assert ok.headers["anthropic-ratelimit-requests-limit"] == "1"
    assert ok.headers["anthropic-ratelimit-requests-remaining"] == "0"
    reset = datetime.fromisoformat(ok.headers["anthropic-ratelimit-requests-reset"])
    assert 0 < reset.timestamp() - time.time() <= 61
    assert not any(name.lower().startswith("x-ratelimit") for name in ok.headers)
    refused = await client.post("/v1/messages", json=anthropic_body())
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    limits = parse_rate_limits(refused.headers)
    assert limits is not None and limits.requests_remaining == 0


@pytest.mark.asyncio
async def test_ratelimit_cerebras_style(client: httpx.AsyncClient) -> None:
    """Windows named in the header (-day, -minute), resets in seconds, a fixed window."""
    await client.put(
        "/_sim/models/rl",
        json={"ratelimit_requests": 2, "ratelimit_tokens": 5000, "ratelimit_style": "cerebras"},
    )
    response = await client.post(OPENAI_PATH, json={"model": "rl", "messages": user("hi")})
    assert response.headers["x-ratelimit-limit-requests-day"] == "2"
    assert response.headers["x-ratelimit-remaining-requests-day"] == "1"
    assert 59 < float(response.headers["x-ratelimit-reset-requests-day"]) <= 60.001
    assert response.headers["x-ratelimit-limit-tokens-minute"] == "5000"
    assert "x-ratelimit-remaining-requests" not in response.headers
    limits = parse_rate_limits(response.headers)
    assert limits is not None
    assert {(w.kind, w.period, w.replenishes) for w in limits.windows} == {
        ("requests", "day", False),
        ("tokens", "minute", False),
    }


@pytest.mark.asyncio
async def test_ratelimit_streams_and_other_dialects(client: httpx.AsyncClient) -> None:
    """Streams carry the headers too; Ollama and Gemini send none but are limited all the same."""
    await client.put("/_sim/models/rl", json={"ratelimit_requests": 2})
    body = {"model": "rl", "messages": user("hi"), "stream": True}
    async with client.stream("POST", OPENAI_PATH, json=body) as response:
        assert response.headers["x-ratelimit-remaining-requests"] == "1"
        await response.aread()
    ollama = await client.post("/api/chat", json={**body, "stream": False})
    assert ollama.status_code == 200
    assert not any(name.lower().startswith("x-ratelimit") for name in ollama.headers)
    refused = await client.post("/api/chat", json={**body, "stream": False})
    assert refused.status_code == 429


@pytest.mark.asyncio
async def test_ratelimit_restarts_with_a_new_config_and_a_reset(client: httpx.AsyncClient) -> None:
    body = {"model": "rl", "messages": user("hi")}
    await client.put("/_sim/models/rl", json={"ratelimit_requests": 1})
    assert (await client.post(OPENAI_PATH, json=body)).status_code == 200
    assert (await client.post(OPENAI_PATH, json=body)).status_code == 429
    await client.put("/_sim/models/rl", json={"ratelimit_requests": 1})
    assert (await client.post(OPENAI_PATH, json=body)).status_code == 200
    await client.post("/_sim/reset")  # forgets the config (and its budget): no limit any more
    assert (await client.post(OPENAI_PATH, json=body)).status_code == 200
    # A directive sets a limit for the request that carries it.
    directive = {"model": "rl2", "messages": user("hi [[sim ratelimit_requests=1]]")}
    assert (await client.post(OPENAI_PATH, json=directive)).status_code == 200
    assert (await client.post(OPENAI_PATH, json=directive)).status_code == 429


@pytest.mark.asyncio
async def test_status_429_counts_as_rate_limited(client: httpx.AsyncClient) -> None:
    await client.post(OPENAI_PATH, json=openai_body("hi [[sim status=429]]"))
    assert (await client.get("/_sim/stats")).json()["rate_limited"] == {"gpt-4o-mini": 1}


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"ratelimit_requests": 0}, "out of range"),
        ({"ratelimit_tokens": "many"}, "integer"),
        ({"ratelimit_window_s": 0}, "positive"),
        ({"ratelimit_window_s": "nan"}, "positive"),
        ({"ratelimit_style": "groq"}, "must be one of"),
    ],
)
def test_ratelimit_knobs_are_validated(knobs: dict[str, object], message: str) -> None:
    with pytest.raises(KnobError, match=message):
        parse_knobs(knobs)


def test_ratelimit_knobs_from_a_model_spec() -> None:
    name, knobs = parse_model_spec(
        "free:ratelimit_requests=30,ratelimit_window_s=60,ratelimit_style=cerebras"
    )
    assert name == "free"
    assert knobs == {
        "ratelimit_requests": 30,
        "ratelimit_window_s": 60.0,
        "ratelimit_style": "cerebras",
    }


def test_budgets() -> None:
    bucket = Budget(capacity=10, window=10.0, fixed=False, level=10.0, since=0.0)
    bucket.take(10)
    assert bucket.remaining == 0 and bucket.reset_in(0.0) == 10.0 and bucket.available_in(0.0) == 1
    bucket.refresh(2.5)
    assert bucket.remaining == 2 and bucket.reset_in(2.5) == 7.5
    bucket.take(100)
    assert bucket.level == 0  # an overdraft is forgiven
    fixed = Budget(capacity=5, window=60.0, fixed=True, level=5.0, since=0.0)
    fixed.take(5)
    fixed.refresh(59.0)
    assert fixed.remaining == 0 and fixed.available_in(59.0) == 1.0
    fixed.refresh(125.0)
    assert fixed.remaining == 5 and fixed.reset_in(125.0) == 55.0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0ms"), (0.0201, "21ms"), (1.5, "1.5s"), (360, "6m0s"), (3725.5, "1h2m5.5s")],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text
    parsed = parse_duration(text)
    assert parsed is not None and seconds <= parsed < seconds + 0.001  # rounded up to the ms
