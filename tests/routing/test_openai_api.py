"""The OpenAI-compatible API, driven by the official ``openai`` SDK over real HTTP."""

from __future__ import annotations

import httpx
import openai
import pytest
from factories import new_api_key, sim_setup

from routing.models import AuditRecord


@pytest.fixture
def setup(gateway, simulator):
    return sim_setup(simulator.url)


@pytest.fixture
def sdk(gateway, setup):
    key = new_api_key("codex")
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=20)


def test_sdk_chat_completion(sdk):
    """The SDK gets a parsed chat completion with usage from a tier alias."""
    completion = sdk.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "Describe the ocean tides"}]
    )
    assert completion.model == "sim-fast"
    assert completion.choices[0].message.role == "assistant"
    assert "tides" in completion.choices[0].message.content.lower()
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0


def test_sdk_streaming(sdk, gateway):
    """Streaming through the SDK yields the whole answer, a finish reason and usage."""
    stream = sdk.chat.completions.create(
        model="sim-medium",
        messages=[{"role": "user", "content": "Tell me about rivers"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert "rivers" in text.lower()
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == len(text.split())
    gateway.flush_audit()
    record = AuditRecord.objects.get(stream=True)
    assert record.status == "approved" and record.output == text and record.model == "sim-medium"


def test_stream_falls_over_before_the_first_byte(sdk, simulator):
    """A failing upstream before the first chunk is invisible to a streaming client."""
    simulator.configure("sim-fast", status=503)
    stream = sdk.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hello"}], stream=True
    )
    chunks = list(stream)
    assert chunks[0].model == "sim-medium"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_stream_cut_mid_way_is_reported_and_audited(gateway, setup, simulator):
    """A reset after the first chunks ends the stream with an error event and a failed record."""
    simulator.configure("sim-fast", reset_after_chunks=3, words=20)
    key = new_api_key("stream-agent")
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json={"model": "fast", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers={"Authorization": f"Bearer {key}"},
        timeout=20,
    ) as response:
        body = response.read().decode()
    assert response.status_code == 200
    assert "stream_interrupted" in body
    assert "[DONE]" not in body
    gateway.flush_audit()
    record = AuditRecord.objects.get(stream=True)
    assert record.status == "failed"
    assert record.attempts[0]["outcome"] == "interrupted"


def test_auto_routes_by_task_type_header(gateway, setup):
    """`model: auto` takes the task type from X-Task-Type and follows its route."""
    from routing.config import routing_config_changed
    from routing.models import TaskRoute

    TaskRoute.objects.create(task_type="review", start_tier="large")
    routing_config_changed()
    key = new_api_key("copilot")
    client = openai.OpenAI(
        base_url=f"{gateway.url}/v1",
        api_key=key,
        max_retries=0,
        default_headers={"X-Task-Type": "review"},
    )
    completion = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "x"}]
    )
    assert completion.model == "sim-large"


def test_auto_classifies_by_rules(gateway, setup):
    """Without a task type, admin rules classify the input and its route applies."""
    from routing.config import routing_config_changed
    from routing.models import ClassificationRule, TaskRoute

    TaskRoute.objects.create(task_type="code", start_tier="medium")
    ClassificationRule.objects.create(task_type="code", pattern="python, function, bug")
    routing_config_changed()
    key = new_api_key("claude-code")
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
    completion = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Fix this Python function please"}]
    )
    assert completion.model == "sim-medium"
    classified = httpx.post(
        f"{gateway.url}/v1/classify",
        json={"input": "there is a bug here"},
        headers={"Authorization": f"Bearer {key}"},
    ).json()
    assert classified["task_type"] == "code" and classified["method"] == "rule"
    assert classified["tier"] == "medium"


def test_models_list(sdk):
    """GET /v1/models lists the aliases and every public model."""
    ids = {m.id for m in sdk.models.list()}
    assert {
        "auto",
        "fast",
        "medium",
        "large",
        "sim-fast",
        "sim-medium",
        "sim-large",
        "sim-external",
    } <= ids


def test_unknown_model_is_a_404_the_sdk_understands(sdk):
    """An unknown model raises the SDK's NotFoundError with OpenAI's error body."""
    with pytest.raises(openai.NotFoundError) as raised:
        sdk.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert isinstance(raised.value.body, dict)  # the SDK types it as object
    assert raised.value.body["code"] == "model_not_found"


def test_bad_requests_raise_sdk_errors(sdk):
    """Invalid fields come back as 400s the SDK raises as BadRequestError."""
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="fast", messages=[])
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "x"}], max_tokens=0
        )
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.chat.completions.create(
            model="fast",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"api_base": "http://x"},
        )
    assert isinstance(raised.value.body, dict)  # the SDK types it as object
    assert raised.value.body["code"] == "forbidden_field"


def test_sdk_authentication_error(gateway, setup):
    """A wrong key raises the SDK's AuthenticationError."""
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "x"}])


def test_max_tokens_truncates_with_length_finish(sdk):
    """max_tokens reaches the upstream; a cut answer reports finish_reason length."""
    completion = sdk.chat.completions.create(
        model="sim-large", messages=[{"role": "user", "content": "long story"}], max_tokens=5
    )
    assert completion.choices[0].finish_reason == "length"
    assert len(completion.choices[0].message.content.split()) == 5


def test_each_wire_protocol_answers(sdk):
    """Every tier's model (Ollama, OpenAI, Anthropic, Gemini protocols) answers through the SDK."""
    for model in ("sim-fast", "sim-medium", "sim-large", "sim-external"):
        for stream in (False, True):
            if stream:
                text = "".join(
                    c.choices[0].delta.content or ""
                    for c in sdk.chat.completions.create(
                        model=model,
                        messages=[{"role": "user", "content": "hello world"}],
                        stream=True,
                    )
                    if c.choices
                )
            else:
                text = (
                    sdk.chat.completions.create(
                        model=model, messages=[{"role": "user", "content": "hello world"}]
                    )
                    .choices[0]
                    .message.content
                )
            assert "hello" in text.lower(), (model, stream, text)


def test_client_closing_a_stream_is_audited(gateway, setup, simulator):
    """A client that hangs up mid-stream leaves a record saying so, with what it received."""
    import time

    simulator.configure("sim-fast", words=60, token_interval_ms=50)
    key = new_api_key("impatient")
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json={"model": "fast", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers={"Authorization": f"Bearer {key}"},
        timeout=20,
    ) as response:
        for line in response.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                break
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        gateway.flush_audit()
        record = AuditRecord.objects.filter(stream=True).first()
        if record is not None:
            break
        time.sleep(0.1)
    assert record is not None
    assert record.status == "client_closed"
    assert 0 < len(record.output.split()) < 60
