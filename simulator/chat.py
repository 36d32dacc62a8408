"""The chat request path, the same in every dialect: outage, key, body and knobs, rate limits and
failures, then the answer, whole or streamed. It is the baseline the gateway is benchmarked
against, so it avoids logging and per-request work that can be done once."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Mapping

import orjson
from aiohttp import web

from . import answers
from .dialect import Chat, Completion, Dialect
from .knobs import Knobs, strip_directives, wrong_rate_for
from .ratelimits import Budget
from .state import Simulator, simulator_of


async def answer(request: web.Request, dialect: Dialect) -> web.StreamResponse:
    """Answer one chat request in ``dialect``."""
    sim = simulator_of(request)
    if sim.outage is not None and (down := sim.outage_status(dialect.name)) is not None:
        return dialect.error(down)
    if not sim.authorized(request):
        return dialect.error(401)
    parsed = await _parse(request, dialect, sim)
    if isinstance(parsed, web.Response):
        return parsed
    chat, messages, knobs = parsed

    model = chat.model
    sim.calls[model] += 1
    sim.by_protocol[dialect.name] += 1
    sim.seen.add(model)

    budgets: dict[str, Budget] = {}
    now = 0.0
    if knobs.ratelimit_requests is not None or knobs.ratelimit_tokens is not None:
        now = time.monotonic()
        budgets = sim.budgets_for(model, knobs, now)
        if any(b.level < 1 for b in budgets.values()):
            return _rate_limited(sim, dialect, model, knobs, budgets, now)

    first_delay = knobs.first_delay_ms if chat.stream else knobs.latency_ms
    status = sim.failure_status(model, knobs)
    if status is not None:
        if status == 429:
            sim.rate_limited[model] += 1
        if first_delay:
            await asyncio.sleep(first_delay / 1000)
        return dialect.error(status, retry_after=knobs.retry_after)

    done = complete(sim, dialect, chat, messages, knobs)
    sim.tokens_in[model] += done.input_tokens
    sim.tokens_out[model] += done.output_tokens
    headers = _spend(dialect, budgets, knobs, done, now)
    if chat.stream:
        return await _stream(request, dialect, done, knobs, headers)
    if first_delay:
        await asyncio.sleep(first_delay / 1000)
    payload = orjson.dumps(dialect.response(done))
    if knobs.malformed:
        payload = payload[: len(payload) // 2]
    return web.Response(body=payload, content_type="application/json", headers=headers)


async def _parse(
    request: web.Request, dialect: Dialect, sim: Simulator
) -> tuple[Chat, list[tuple[str, str]], Knobs] | web.Response:
    """The request, its messages without directives, and its knobs; or the 400 to answer."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return dialect.error(400, "The request body is not valid JSON.")
    if not isinstance(body, dict):
        return dialect.error(400, "The request body must be a JSON object.")
    try:
        chat = dialect.parse(body, request)
        overrides: dict[str, object] = {}
        messages = [
            (role, strip_directives(text, overrides) if "[[sim" in text else text)
            for role, text in chat.messages
        ]
        knobs = sim.knobs_for(chat.model, overrides)
    except ValueError as exc:  # BadRequest or KnobError
        return dialect.error(400, str(exc))
    return chat, messages, knobs


def _rate_limited(
    sim: Simulator,
    dialect: Dialect,
    model: str,
    knobs: Knobs,
    budgets: dict[str, Budget],
    now: float,
) -> web.Response:
    """The 429 for a request that finds a budget already spent (only such a request is
    refused), with the wait until one unit is back."""
    sim.rate_limited[model] += 1
    wait = max(b.available_in(now) for b in budgets.values() if b.level < 1)
    return dialect.error(
        429,
        retry_after=str(max(1, math.ceil(wait))),
        headers=dialect.ratelimit_headers(budgets, knobs.ratelimit_style, now),
    )


def _spend(
    dialect: Dialect, budgets: dict[str, Budget], knobs: Knobs, done: Completion, now: float
) -> dict[str, str] | None:
    """Take the answer out of the model's budgets; the rate-limit headers to send, if any."""
    if not budgets:
        return None
    if "requests" in budgets:
        budgets["requests"].take(1)
    if "tokens" in budgets:
        budgets["tokens"].take(done.input_tokens + done.output_tokens)
    return dialect.ratelimit_headers(budgets, knobs.ratelimit_style, now) or None


def complete(
    sim: Simulator, dialect: Dialect, chat: Chat, messages: list[tuple[str, str]], knobs: Knobs
) -> Completion:
    """The answer to ``chat``: its text (the last user message's), how it finished, tokens and
    the planned duration."""
    question = next((text for role, text in reversed(messages) if role == "user"), "")
    json_mode = knobs.json or ("valid" if chat.json_requested else None)
    wrong = (
        bool(knobs.wrong_rate)
        and knobs.quality == "good"
        and knobs.reply is None
        and random.random() < wrong_rate_for(knobs.wrong_rate, question)
    )
    text = answers.build_answer(
        question,
        quality=knobs.quality,
        language=knobs.language,
        json_mode=json_mode,
        words=knobs.words,
        reply=knobs.reply,
        wrong=wrong,
    )
    finish = "stop"
    text, stop_sequence = answers.apply_stop(text, chat.stops)
    if stop_sequence is not None:
        finish = "stop_sequence"
    if chat.max_tokens is not None:
        text, cut = answers.truncate_words(text, chat.max_tokens)
        if cut:
            finish, stop_sequence = "length", None
    if wrong and answers.is_wrong(text):  # not when cut before the wrong statement
        sim.wrong[chat.model] += 1
    output_tokens = answers.count_words(text)
    planned_ms = knobs.latency_ms
    if chat.stream:
        chunks = math.ceil(output_tokens / knobs.chunk_words)
        planned_ms = knobs.first_delay_ms + knobs.token_interval_ms * max(0, chunks - 1)
    return Completion(
        id=f"{dialect.id_prefix}{sim.next_id():012d}",
        model=chat.model,
        created=int(time.time()),
        text=text,
        finish=finish,
        stop_sequence=stop_sequence,
        input_tokens=answers.count_input_tokens(sum(len(t) for _, t in messages)),
        output_tokens=output_tokens,
        include_usage=chat.include_usage,
        report_usage=knobs.usage,
        # A 1 ms floor keeps clients that compute tokens per second from dividing by zero.
        duration_ns=(planned_ms + 1) * 1_000_000,
    )


async def _stream(
    request: web.Request,
    dialect: Dialect,
    done: Completion,
    knobs: Knobs,
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Send ``done`` as the dialect's stream, paced by the knobs (or broken, or cut off)."""
    deltas = answers.split_chunks(done.text, knobs.chunk_words)
    if knobs.first_delay_ms:
        await asyncio.sleep(knobs.first_delay_ms / 1000)
    response = web.StreamResponse(
        headers={
            "Content-Type": dialect.stream_content_type,
            "Cache-Control": "no-cache",
            **(headers or {}),
        }
    )
    head, frames, tail = dialect.stream(done, deltas)
    reset = knobs.reset_after_chunks
    if reset is not None:
        frames, tail = frames[:reset], b""
    try:
        await response.prepare(request)
        if knobs.malformed:
            await response.write(dialect.broken_stream(done, deltas))
            await response.write_eof()
            return response
        await _write_frames(response, head, frames, tail, knobs.token_interval_ms / 1000)
        if reset is not None:
            _drop_connection(request)
            return response
        await response.write_eof()
    except ConnectionResetError:
        # The client hung up mid-stream (a load generator stopping, a cancelled request):
        # normal for a stream, nothing to report.
        pass
    return response


async def _write_frames(
    response: web.StreamResponse, head: bytes, frames: list[bytes], tail: bytes, interval: float
) -> None:
    """Write the stream's frames ``interval`` seconds apart (the preamble with the first, the
    terminator with the last)."""
    if not interval or len(frames) <= 1:
        # Nothing to pace: a single write is the cheapest way to send the whole stream.
        await response.write(head + b"".join(frames) + tail)
        return
    last = len(frames) - 1
    for index, frame in enumerate(frames):
        if index:
            await asyncio.sleep(interval)
        await response.write(
            (head if index == 0 else b"") + frame + (tail if index == last else b"")
        )


def _drop_connection(request: web.Request) -> None:
    """Close the socket mid-response (after flushing what was written): no stream terminator."""
    transport = request.transport
    if transport is not None:
        transport.close()
