"""DRF's parser and exception handler for the API, set once in ``REST_FRAMEWORK``.

DRF's own JSON parser reads with the standard library: no size or depth limit (a body of two
thousand ``[`` raised ``RecursionError``, a 500) and no NUL rule. This one applies the same body
rules as the async views (gateway_project/json_body.py), and every DRF exception is answered in
the gateway's error shape (gateway_project/api_errors.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from rest_framework import exceptions
from rest_framework.parsers import BaseParser

from .api_errors import ApiError, GatewayError, error_response, invalid_fields
from .json_body import parse_json_body


class GatewayJSONParser(BaseParser):
    """``application/json`` bodies, under the gateway's body rules."""

    media_type = "application/json"

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        # One byte more than the limit is enough to know it is over.
        raw = stream.read(settings.GATEWAY["MAX_BODY_BYTES"] + 1)
        return parse_json_body(raw if isinstance(raw, bytes) else raw.encode())


def _flatten(detail: Any) -> str:
    if isinstance(detail, list):
        return " ".join(_flatten(d) for d in detail)
    if isinstance(detail, dict):
        return "; ".join(f"{k}: {_flatten(v)}" for k, v in detail.items())
    return str(detail)


def exception_handler(exc: Exception, context: Mapping[str, Any]) -> HttpResponse | None:
    """DRF's exceptions (auth, parse, validation, method) and ours, in the gateway's shape."""
    if isinstance(exc, GatewayError):
        return error_response(exc)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, exceptions.ValidationError) and isinstance(exc.detail, dict):
        return error_response(invalid_fields({n: _flatten(d) for n, d in exc.detail.items()}))
    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        response = error_response(ApiError(exc.status_code, _flatten(exc.detail), code=str(code)))
        auth_header = getattr(exc, "auth_header", None)
        if auth_header:
            response["WWW-Authenticate"] = auth_header
        return response
    return None
