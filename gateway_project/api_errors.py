"""The product's one error base, the API's one error shape, and the one table from HTTP status to
error ``type``.

Every error the API answers is a :class:`GatewayError` (or is made one here): the lean ASGI
handler's body refusals, the async views' validation, the router's and the limits' refusals, the
review decision API's conflicts. Each carries its HTTP status, code, message, ``param``, extra body
fields and headers, and :func:`error_response` is the one place that turns it into HTTP, so the body
always reads ``{"error": {"message", "type", "code", "param", ...}}`` with a ``type`` that matches
the status. See docs/adr/0014-hostile-input.md and docs/adr/0017-layers.md.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from django.http import HttpResponse

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "request_timeout",
    409: "conflict_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}

REQUEST_ID_HEADER = "X-Gateway-Request-Id"


def error_type(http_status: int) -> str:
    """The ``type`` of an error with this HTTP status."""
    known = ERROR_TYPES.get(http_status)
    if known is not None:
        return known
    return "invalid_request_error" if http_status < 500 else "api_error"


class GatewayError(Exception):
    """An error the gateway answers a caller with: raised by any layer, translated to HTTP once.

    ``extra`` adds fields to the error body (``fields``, ``attempts``...); ``headers`` go on the
    response, with ``Retry-After`` (whole seconds, rounded up) when ``retry_after_s`` is known.
    Subclasses whose extra fields or headers depend on their own state override the properties.
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int,
        code: str,
        param: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.code = code
        self.param = param
        self.retry_after_s = retry_after_s
        self._extra = dict(extra or {})
        self._headers = dict(headers or {})

    @property
    def extra(self) -> dict[str, Any]:
        """Fields the error body carries besides message, type, code and param."""
        return self._extra

    @property
    def headers(self) -> dict[str, str]:
        """The response's headers, ``Retry-After`` included when known."""
        if self.retry_after_s is None:
            return self._headers
        return {**self._headers, "Retry-After": str(math.ceil(self.retry_after_s))}


class ApiError(GatewayError):
    """An error a view or the API's plumbing raises with the status and code it chooses."""

    def __init__(
        self,
        http_status: int,
        message: str,
        *,
        code: str,
        param: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            message, http_status=http_status, code=code, param=param, extra=extra, headers=headers
        )


def invalid_fields(fields: dict[str, str]) -> ApiError:
    """400 ``invalid_field``: each wrong field and what is wrong with it, in the message and in
    ``fields``; ``param`` names the first."""
    summary = "; ".join(f"{name}: {problem}" for name, problem in fields.items())
    return ApiError(
        400,
        f"Invalid request: {summary}",
        code="invalid_field",
        param=next(iter(fields), None),
        extra={"fields": fields},
    )


INTERNAL_ERROR_MESSAGE = "Internal error; the request was not completed."


def internal_error() -> ApiError:
    """500 ``internal_error``: what a caller is told of a failure it cannot act on."""
    return ApiError(500, INTERNAL_ERROR_MESSAGE, code="internal_error")


def error_body(error: GatewayError, *, request_id: str | None = None) -> dict[str, Any]:
    """``{"error": {...}}``; ``id`` names the request's audit record when it has one."""
    body: dict[str, Any] = {
        "message": error.message,
        "type": error_type(error.http_status),
        "code": error.code,
        "param": error.param,
    }
    body.update(error.extra)
    if request_id:
        body["id"] = request_id
    return {"error": body}


def error_response(error: GatewayError, *, request_id: str | None = None) -> HttpResponse:
    """The error as an HTTP response, with its headers (and the request id, when assigned)."""
    headers = dict(error.headers)
    if error.http_status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id
    return HttpResponse(
        orjson.dumps(error_body(error, request_id=request_id)),
        status=error.http_status,
        content_type="application/json",
        headers=headers or None,
    )
