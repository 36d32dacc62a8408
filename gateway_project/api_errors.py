"""The API's one error shape, and the one table from HTTP status to error ``type``.

Every error the API answers (the lean ASGI handler, the async views, the DRF review endpoint) is
built here, so the body always reads ``{"error": {"message", "type", "code", "param", ...}}`` with a
``type`` that matches the status. See docs/adr/0014-hostile-input.md.
"""

from __future__ import annotations

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


def error_type(status: int) -> str:
    """The ``type`` of an error with this HTTP status."""
    known = ERROR_TYPES.get(status)
    if known is not None:
        return known
    return "invalid_request_error" if status < 500 else "api_error"


class ApiError(Exception):
    """Raised anywhere in a view to answer with a JSON error."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        param: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.extra = extra or {}
        self.headers = headers or {}


def error_body(error: ApiError, *, request_id: str | None = None) -> dict[str, Any]:
    """``{"error": {...}}``; ``id`` names the request's audit record when it has one."""
    body: dict[str, Any] = {
        "message": error.message,
        "type": error_type(error.status),
        "code": error.code,
        "param": error.param,
    }
    body.update(error.extra)
    if request_id:
        body["id"] = request_id
    return {"error": body}


def error_response(error: ApiError, *, request_id: str | None = None) -> HttpResponse:
    """The error as an HTTP response, with its headers (and the request id, when assigned)."""
    headers = dict(error.headers)
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id
    return HttpResponse(
        orjson.dumps(error_body(error, request_id=request_id)),
        status=error.status,
        content_type="application/json",
        headers=headers or None,
    )
