"""What every API view shares: JSON in and out, bearer-key auth, request ids, and one error format.

Errors always look like OpenAI's, which every SDK already parses:
``{"error": {"message": ..., "type": ..., "code": ..., "param": ...}}`` plus ``fields`` for
validation errors naming each wrong field, and ``id`` once the request has one. The error builder
and the body rules are the project's (gateway_project/api_errors.py, json_body.py), shared with the
DRF endpoint; see docs/adr/0014-hostile-input.md.
"""

from __future__ import annotations

import itertools
import os
import re
import time
import uuid
from typing import Any

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse

from agents.selectors import Caller, caller_for_key
from gateway_project.api_errors import ApiError
from gateway_project.json_body import parse_json_body

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


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> HttpResponse:
    response = HttpResponse(
        orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )
    return response


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
    """The request body as a JSON object, under the body rules of every endpoint
    (gateway_project/json_body.py: size, depth, NUL), without fields that redirect upstreams."""
    data = parse_json_body(request.body)
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


# Where a view leaves the request's id, so every later error names it (api_endpoint).
_REQUEST_ID_KEY = "gateway.request_id"


def assign_request_id(request: HttpRequest) -> str:
    """A new id for this request's audit record, remembered on the request for its errors."""
    request_id = new_request_id()
    request.META[_REQUEST_ID_KEY] = request_id
    return request_id


def assigned_request_id(request: HttpRequest) -> str | None:
    """The id ``assign_request_id`` gave this request, if it got that far."""
    value = request.META.get(_REQUEST_ID_KEY)
    return value if isinstance(value, str) else None


# Request ids the gateway issues ("call-" and 32 hex digits); the column holds at most 64.
_REQUEST_ID_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


def looks_like_request_id(value: str) -> bool:
    """Whether ``value`` could be a request id: anything else (a NUL, a megabyte) is not looked
    up at all."""
    return _REQUEST_ID_SHAPE.fullmatch(value) is not None


def deadline_from_now() -> float:
    return time.monotonic() + settings.GATEWAY["REQUEST_DEADLINE_S"]
