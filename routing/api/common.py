"""What every API view shares: JSON in and out, bearer-key auth, and one error format.

Errors always look like OpenAI's, which every SDK already parses:
``{"error": {"message": ..., "type": ..., "code": ..., "param": ...}}`` plus ``fields`` for
validation errors naming each wrong field.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from typing import Any

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse

from agents.selectors import Caller, caller_for_key

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}

# Fields that would make the gateway call an address or credentials chosen by the caller.
FORBIDDEN_FIELDS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "api_type",
        "custom_llm_provider",
        "extra_headers",
        "headers",
        "url",
        "endpoint",
        "organization",
        "proxy",
        "proxies",
    }
)


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


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> HttpResponse:
    response = HttpResponse(
        orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )
    return response


def error_response(error: ApiError) -> HttpResponse:
    body: dict[str, Any] = {
        "message": error.message,
        "type": ERROR_TYPES.get(error.status, "api_error"),
        "code": error.code,
        "param": error.param,
    }
    body.update(error.extra)
    headers = dict(error.headers)
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return json_response({"error": body}, status=error.status, headers=headers or None)


async def authenticate(request: HttpRequest) -> Caller:
    """The caller behind ``Authorization: Bearer <key>`` (``x-api-key`` is accepted too)."""
    header = request.headers.get("Authorization", "")
    raw_key = ""
    if header[:7].lower() == "bearer ":
        raw_key = header[7:].strip()
    elif "x-api-key" in request.headers:
        raw_key = request.headers["x-api-key"].strip()
    if not raw_key:
        raise ApiError(
            401, "Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key"
        )
    caller = await caller_for_key(raw_key)
    if caller is None:
        raise ApiError(401, "Invalid or revoked API key.", code="invalid_api_key")
    if caller.expired():
        raise ApiError(401, "This API key has expired.", code="expired_api_key")
    return caller


def read_json_object(request: HttpRequest) -> dict[str, Any]:
    """The request body as a JSON object, with 413 for oversized and 400 for malformed bodies."""
    # The API handler already refused bodies over the limit (gateway_project/api_asgi.py); this
    # guards the view when it is served another way.
    limit = settings.GATEWAY["MAX_BODY_BYTES"]
    raw = request.body
    if len(raw) > limit:
        raise ApiError(413, f"Request body larger than {limit} bytes.", code="body_too_large")
    if not raw:
        raise ApiError(400, "Request body is empty; send a JSON object.", code="invalid_json")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"Malformed JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The body must be a JSON object.", code="invalid_json")
    forbidden = sorted(FORBIDDEN_FIELDS.intersection(data))
    if forbidden:
        raise ApiError(
            400,
            f"Field(s) not allowed: {', '.join(forbidden)}. Upstreams are chosen by the gateway.",
            code="forbidden_field",
            param=forbidden[0],
        )
    return data


def validation_error(errors: dict[str, Any]) -> ApiError:
    """Turn DRF serializer errors into one 400 naming every wrong field."""

    def flatten(value: Any) -> str:
        if isinstance(value, list):
            return " ".join(flatten(v) for v in value)
        if isinstance(value, dict):
            return "; ".join(f"{k}: {flatten(v)}" for k, v in value.items())
        return str(value)

    fields = {name: flatten(detail) for name, detail in errors.items()}
    summary = "; ".join(f"{name}: {text}" for name, text in fields.items())
    first = next(iter(fields), None)
    return ApiError(
        400,
        f"Invalid request: {summary}",
        code="invalid_field",
        param=first,
        extra={"fields": fields},
    )


# A random part per process and a counter: unique across processes and hosts, and cheaper than
# reading 16 random bytes from the kernel for every request.
_ID_PREFIX = uuid.uuid4().hex[:16]
_id_counter = itertools.count(1)


def _new_id_prefix() -> None:
    """A forked worker must not continue its parent's sequence."""
    global _ID_PREFIX, _id_counter
    _ID_PREFIX = uuid.uuid4().hex[:16]
    _id_counter = itertools.count(1)


os.register_at_fork(after_in_child=_new_id_prefix)


def new_request_id() -> str:
    return f"call-{_ID_PREFIX}{next(_id_counter):016x}"


def deadline_from_now() -> float:
    return time.monotonic() + settings.GATEWAY["REQUEST_DEADLINE_S"]
