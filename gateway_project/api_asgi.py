"""A lean ASGI handler for the gateway API (``/v1/…`` and ``/health…``).

Django's own ASGI handler runs every ``MiddlewareMixin`` hook, the ``request_started`` and
``request_finished`` signals and ``response.close()`` through ``sync_to_async``, in a fresh thread per
request: about forty thread hops for one API call, which multiplied the gateway's overhead several
times over. The API views need none of that (no sessions, cookies, CSRF or templates; they touch the
database only from worker threads), so this handler builds Django's request object, resolves the view
with Django's URL resolver, awaits it and sends its response on the event loop. The admin and
everything else keep Django's full handler. See docs/adr/0005-async-request-path.md.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.urls import Resolver404, get_resolver

from .api_errors import ApiError, GatewayError, error_response, internal_error

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

API_PREFIXES = ("/v1/", "/health")


class ClientDisconnected(Exception):
    pass


class BodyRefused(GatewayError):
    """The request body cannot be read: too large (413) or too slow (408)."""

    def __init__(self, http_status: int, message: str, code: str) -> None:
        super().__init__(message, http_status=http_status, code=code)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length before the app sees it
    return None


async def read_body(scope: Scope, receive: Receive) -> bytes:
    """The whole request body, within ``GATEWAY_MAX_BODY_BYTES`` and ``BODY_READ_TIMEOUT_S``.

    A declared ``Content-Length`` over the limit is refused before anything is read; a body that
    has not arrived in time is refused too, so a slow client cannot hold a connection (ADR 0014).
    """
    limit = settings.GATEWAY["MAX_BODY_BYTES"]
    too_large = BodyRefused(413, f"Request body larger than {limit} bytes.", "body_too_large")
    declared = _declared_length(scope)
    if declared is not None and declared > limit:
        raise too_large
    timeout = settings.GATEWAY["BODY_READ_TIMEOUT_S"]
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnected
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise BodyRefused(
            408, f"The request body did not arrive within {timeout:g} s.", "body_timeout"
        ) from None


async def _send_whole(response: HttpResponse, send: Send, *, close: bool = False) -> None:
    content = response.content
    headers = _headers(response)
    headers.append((b"content-length", str(len(content)).encode()))
    if close:
        # The body was not read to its end: the connection cannot carry another request.
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": content, "more_body": False})


def _headers(response: HttpResponseBase) -> list[tuple[bytes, bytes]]:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.items()]
    for cookie in response.cookies.values():
        headers.append((b"set-cookie", cookie.output(header="").strip().encode("latin-1")))
    return headers


async def _send_streaming(response: StreamingHttpResponse, receive: Receive, send: Send) -> None:
    """Relay an async streaming response; stop it when the client goes away."""

    async def relay() -> None:
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": _headers(response),
            }
        )
        async for chunk in response:
            await send({"type": "http.response.body", "body": bytes(chunk), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def watch_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    relay_task = asyncio.ensure_future(relay())
    watch_task = asyncio.ensure_future(watch_disconnect())
    try:
        await asyncio.wait({relay_task, watch_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (relay_task, watch_task):
            if not task.done():
                # Cancelling the relay closes the view's generator, which audits the stream.
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):  # noqa: BLE001
                    pass
    if relay_task.done() and not relay_task.cancelled() and relay_task.exception() is not None:
        logger.error("stream relay failed", exc_info=relay_task.exception())


class ApiHandler:
    """Serves the API paths: Django request in, the view's response out, on the event loop."""

    def __init__(self) -> None:
        self._resolver = get_resolver()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await read_body(scope, receive)
        except ClientDisconnected:
            return
        except BodyRefused as refused:
            await _send_whole(error_response(refused), send, close=True)
            return
        response = await self._respond(scope, body)
        if isinstance(response, StreamingHttpResponse):
            await _send_streaming(response, receive, send)
            return
        assert isinstance(response, HttpResponse)
        await _send_whole(response, send)

    async def _respond(self, scope: Scope, body: bytes) -> HttpResponseBase:
        try:
            request = ASGIRequest(scope, io.BytesIO(body))
        except UnicodeDecodeError:
            return error_response(
                ApiError(
                    400, "The request path or headers are not valid UTF-8.", code="bad_request"
                )
            )
        try:
            match = self._resolver.resolve(request.path_info)
        except Resolver404:
            return error_response(
                ApiError(404, f"No endpoint at {request.path_info}.", code="not_found")
            )
        try:
            if asyncio.iscoroutinefunction(match.func):
                response: HttpResponseBase = await match.func(request, *match.args, **match.kwargs)
            else:
                # Control-plane endpoints (DRF views) are synchronous; run them in a worker thread.
                response = await sync_to_async(match.func, thread_sensitive=False)(
                    request, *match.args, **match.kwargs
                )
        except Exception:
            logger.exception("unhandled error in %s", request.path_info)
            return error_response(internal_error())
        return response


class BodyGuard:
    """The same body limits for the rest of the site (the admin): Django's handler reads a body
    without a deadline. The body is read here and handed on whole."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(scope, receive)
        except ClientDisconnected:
            return
        except BodyRefused as refused:
            response = HttpResponse(
                f"{refused.message}\n", status=refused.http_status, content_type="text/plain"
            )
            await _send_whole(response, send, close=True)
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect Django listens for

        await self.app(scope, replay, send)


def is_api_path(scope: Scope) -> bool:
    return scope["type"] == "http" and str(scope.get("path", "")).startswith(API_PREFIXES)
