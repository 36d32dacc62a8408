"""Request bodies at the edge, over a raw socket to the real uvicorn server: a declared length over
GATEWAY_MAX_BODY_BYTES is refused before anything is read, and a body that does not arrive in
time gets 408 and the connection is closed (docs/adr/0014-hostile-input.md)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import orjson
import pytest
from django.conf import settings
from factories import new_api_key, sim_setup

from gateway_project.api_errors import ERROR_TYPES


@pytest.fixture
def key(gateway, simulator) -> str:
    sim_setup(simulator.url)
    return new_api_key()


@pytest.fixture
def short_read_timeout() -> Iterator[float]:
    previous = settings.GATEWAY["BODY_READ_TIMEOUT_S"]
    settings.GATEWAY["BODY_READ_TIMEOUT_S"] = 0.5
    yield 0.5
    settings.GATEWAY["BODY_READ_TIMEOUT_S"] = previous


def connect(gateway) -> socket.socket:
    url = urlsplit(gateway.url)
    sock = socket.create_connection((url.hostname, url.port), timeout=10)
    return sock


def request_head(path: str, key: str, length: int, content_type: str = "application/json") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one response (its Content-Length says where it ends)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return status, headers, body


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_declared_length_over_the_limit_is_refused_before_reading(gateway, key):
    """Content-Length 999,999,999 with 12 bytes sent: 413 at once, and the connection closed."""
    with connect(gateway) as sock:
        started = time.monotonic()
        sock.sendall(request_head("/v1/completion", key, 999_999_999) + b'{"input": "x')
        status, headers, body = read_response(sock)
        assert time.monotonic() - started < 2
        error = orjson.loads(body)["error"]
        assert status == 413 and error["code"] == "body_too_large"
        assert error["type"] == ERROR_TYPES[413] == "request_too_large"
        assert headers["connection"] == "close"
        assert closed_by_server(sock)


def test_a_body_that_does_not_arrive_in_time_gets_408(gateway, key, short_read_timeout):
    """A client that declares 100 bytes and sends 12 gets 408 after the read timeout, and its
    connection is released."""
    with connect(gateway) as sock:
        started = time.monotonic()
        sock.sendall(request_head("/v1/completion", key, 100) + b'{"input": "x')
        status, headers, body = read_response(sock)
        elapsed = time.monotonic() - started
        assert short_read_timeout <= elapsed < short_read_timeout + 2
        error = orjson.loads(body)["error"]
        assert status == 408 and error["code"] == "body_timeout"
        assert error["type"] == ERROR_TYPES[408]
        assert headers["connection"] == "close"
        assert closed_by_server(sock)


def test_a_trickling_body_gets_408_too(gateway, key, short_read_timeout):
    """The read timeout bounds the whole body, so a byte every 0.2 s does not keep it open."""
    with connect(gateway) as sock:
        started = time.monotonic()
        sock.sendall(request_head("/v1/completion", key, 100))
        sock.settimeout(0.2)
        response = b""
        while not response and time.monotonic() - started < 5:
            try:
                sock.sendall(b" ")
                response = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        assert response.startswith(b"HTTP/1.1 408"), response[:100]
        assert time.monotonic() - started < short_read_timeout + 2


def test_the_admin_has_the_same_body_limits(gateway, short_read_timeout):
    """The rest of the site (the admin login) refuses a declared length over the limit and a
    slow body the same way, before Django reads it."""
    limit = settings.GATEWAY["MAX_BODY_BYTES"]
    form = "application/x-www-form-urlencoded"
    with connect(gateway) as sock:
        sock.sendall(request_head("/admin/login/", "-", limit + 1, form) + b"username=a")
        status, headers, _ = read_response(sock)
        assert status == 413 and headers["connection"] == "close"
    with connect(gateway) as sock:
        sock.sendall(request_head("/admin/login/", "-", 100, form) + b"username=a")
        status, headers, _ = read_response(sock)
        assert status == 408 and headers["connection"] == "close"
        assert closed_by_server(sock)


def test_a_whole_body_in_pieces_is_read_normally(gateway, key, short_read_timeout):
    """A body sent in pieces within the timeout is answered as usual, on a kept-alive connection."""
    body = orjson.dumps({"input": "hello in pieces"})
    with connect(gateway) as sock:
        sock.sendall(request_head("/v1/completion", key, len(body)) + body[:5])
        time.sleep(0.1)
        sock.sendall(body[5:])
        status, headers, answer = read_response(sock)
        assert status == 200, answer[:300]
        assert headers.get("connection") != "close"
        assert orjson.loads(answer)["output"]
