"""Cost from a tokenizer when the provider reports no usage, over real HTTP on every protocol."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from factories import new_api_key, sim_setup

from providers import tokenizer
from routing.models import AuditRecord

QUESTION = "Explain how tides follow the moon, briefly."
MODELS = (
    "sim-fast",
    "sim-medium",
    "sim-large",
    "sim-external",
)  # Ollama, OpenAI, Anthropic, Gemini


@pytest.fixture
def setup(gateway, simulator):
    return sim_setup(simulator.url)


@pytest.fixture
def sdk(gateway, setup):
    key = new_api_key("counting-agent")
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=20)


def wait_for_record(gateway, **filters) -> AuditRecord:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        gateway.flush_audit()
        record = AuditRecord.objects.filter(**filters).first()
        if record is not None:
            return record
        time.sleep(0.05)
    raise AssertionError(f"no audit record for {filters}")


def test_cl100k_counts_are_the_vocabulary_s():
    count = tokenizer.TokenCounter(tokenizer._load("cl100k_base"))
    assert count.method == "cl100k_base"
    assert count.text("hello world") == 2
    assert count.text("") == 0
    # Each message is framed by three tokens, and the reply primed by three.
    assert count.messages(["hello world"]) == 2 + 3 + 3
    assert count.messages(["hello world", "hello world"]) == 2 * (2 + 3) + 3


def test_long_text_is_counted_in_pieces_past_the_tokenizer_s_limits():
    count = tokenizer.TokenCounter(tokenizer._load("cl100k_base"))
    text = "word " * 300_000  # 1.5 million characters: more than one call may take
    assert count.text(text) == pytest.approx(300_000, rel=0.01)


def test_switched_off_or_unknown_vocabulary_falls_back_to_characters(settings, caplog):
    settings.GATEWAY = {**settings.GATEWAY, "TOKENIZER": "none"}
    assert tokenizer.counter().method == "heuristic"
    assert tokenizer.counter().text("x" * 40) == 10
    settings.GATEWAY = {**settings.GATEWAY, "TOKENIZER": "no_such_base"}
    assert tokenizer.counter().method == "heuristic"
    assert "tokenizer 'no_such_base' unavailable" in caplog.text


@pytest.mark.parametrize("model", MODELS)
def test_unreported_usage_is_counted_and_billed(sdk, gateway, simulator, setup, model):
    """Every protocol, whole answer: tokens counted with the vocabulary, cost from the prices."""
    simulator.configure(model, usage=False)
    completion = sdk.chat.completions.create(
        model=model, messages=[{"role": "user", "content": QUESTION}]
    )
    output = completion.choices[0].message.content
    count = tokenizer.counter()
    expected_in, expected_out = count.messages([QUESTION]), count.text(output)
    assert completion.usage.prompt_tokens == expected_in
    assert completion.usage.completion_tokens == expected_out
    record = wait_for_record(gateway, model=model)
    assert (record.tokens_in, record.tokens_out) == (expected_in, expected_out)
    deployment = {
        d.upstream_model: d for d in (setup.fast, setup.medium, setup.large, setup.external)
    }[model]
    expected_cost = (
        expected_in * float(deployment.input_cost_per_mtok)
        + expected_out * float(deployment.output_cost_per_mtok)
    ) / 1e6
    assert float(record.cost_usd) == pytest.approx(expected_cost, abs=1e-9)
    assert record.metadata["usage_estimated"] == {
        "by": "cl100k_base",
        "parts": ["input", "output"],
    }


@pytest.mark.parametrize("model", MODELS)
def test_unreported_usage_of_a_stream_is_counted(sdk, gateway, simulator, model):
    simulator.configure(model, usage=False)
    stream = sdk.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    count = tokenizer.counter()
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        count.messages([QUESTION]),
        count.text(text),
    )
    record = wait_for_record(gateway, model=model, stream=True)
    assert record.tokens_out == count.text(text)
    assert record.metadata["usage_estimated"]["by"] == "cl100k_base"


def test_reported_usage_is_billed_as_reported(sdk, gateway):
    completion = sdk.chat.completions.create(
        model="sim-medium", messages=[{"role": "user", "content": QUESTION}]
    )
    record = wait_for_record(gateway, model="sim-medium")
    # The simulator counts a word a token: not what the vocabulary would say, and billed as is.
    assert record.tokens_out == len(completion.choices[0].message.content.split())
    assert "usage_estimated" not in record.metadata


def test_stream_the_client_dropped_is_billed_for_what_it_received(gateway, setup, simulator):
    """A stream cut by the client never gets the provider's usage: its tokens are counted."""
    simulator.configure("sim-medium", words=80, token_interval_ms=40)
    key = new_api_key("impatient")
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json={
            "model": "sim-medium",
            "messages": [{"role": "user", "content": QUESTION}],
            "stream": True,
        },
        headers={"Authorization": f"Bearer {key}"},
        timeout=20,
    ) as response:
        seen = 0
        for line in response.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                seen += 1
                if seen == 5:
                    break
    record = wait_for_record(gateway, stream=True, status="client_closed")
    count = tokenizer.counter()
    assert record.tokens_in == count.messages([QUESTION])
    assert record.tokens_out == count.text(record.output) > 0
    assert float(record.cost_usd) > 0
    assert record.metadata["usage_estimated"]["parts"] == ["input", "output"]


def test_the_cheap_estimate_is_one_formula_everywhere(settings):
    """The request path's guess (context window, TPM, quotas) and the tokenizer's fallback are the
    same estimate; the budget's bound is the prompt's bytes, never below it."""
    settings.GATEWAY = {**settings.GATEWAY, "TOKENIZER": "none"}
    contents = ["Explain backpressure.", "ünïcødé " * 20, ""]
    assert tokenizer.estimate_tokens("x" * 41) == 11  # about four characters a token, rounded up
    fallback = tokenizer.counter()
    assert fallback.text(contents[1]) == tokenizer.estimate_tokens(contents[1])
    assert fallback.messages(contents) == tokenizer.estimate_prompt_tokens(contents)
    bound = tokenizer.prompt_tokens_at_most(contents)
    assert bound >= tokenizer.estimate_prompt_tokens(contents)
    real = tokenizer.TokenCounter(tokenizer._load("cl100k_base")).messages(contents)
    assert bound >= real
