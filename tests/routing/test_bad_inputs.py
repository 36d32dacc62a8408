"""Odd and hostile inputs never produce a 500: each gets a 4xx with a JSON error body."""

from __future__ import annotations

import httpx
import pytest
from factories import new_api_key, sim_setup

ODD_BODIES: list[bytes] = [
    b"\xff\xfe\x00garbage",
    b'{"model": "fast", "messages": "hello"}',
    b'{"model": "fast", "messages": [null]}',
    b'{"model": "fast", "messages": [{"role": "tool", "content": "x"}]}',
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
