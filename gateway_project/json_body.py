"""The rules every JSON request body meets, on every endpoint (docs/adr/0014-hostile-input.md).

- At most ``GATEWAY_MAX_BODY_BYTES`` (413 ``body_too_large``).
- Valid JSON in UTF-8 with valid Unicode: orjson refuses lone surrogates, raw control characters
  and numbers that overflow a double (400 ``invalid_json``); integers beyond 64 bits become floats.
- Nested at most ``GATEWAY_MAX_JSON_DEPTH`` levels (400 ``nesting_too_deep``).
- No NUL character in any string or key, at any depth: PostgreSQL cannot store it in text or
  JSON, so it is refused here, once, naming each field (400 ``invalid_field``).

The common body pays two byte scans; the parsed data is only walked when a scan hits.
"""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings

from .api_errors import ApiError, invalid_fields

# The only way JSON can carry a NUL: a raw NUL byte is a control character orjson refuses.
_NUL_ESCAPE = b"\\u0000"
# More paths than this in one error would only make the error large.
_MAX_REPORTED_FIELDS = 10
NUL_MESSAGE = "must not contain the NUL character (\\u0000)"


def parse_json_body(raw: bytes) -> Any:
    """The body's JSON value, or an ``ApiError`` saying which rule it breaks."""
    gateway = settings.GATEWAY
    limit = gateway["MAX_BODY_BYTES"]
    if len(raw) > limit:
        raise ApiError(413, f"Request body larger than {limit} bytes.", code="body_too_large")
    if not raw:
        raise ApiError(400, "Request body is empty; send a JSON object.", code="invalid_json")
    max_depth = gateway["MAX_JSON_DEPTH"]
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _decode_error(exc, max_depth) from None
    has_nul = _NUL_ESCAPE in raw
    # Each level opens with a bracket, so their count bounds the depth.
    maybe_deep = raw.count(b"[") + raw.count(b"{") > max_depth
    if has_nul or maybe_deep:
        _check_value(data, max_depth=max_depth, find_nul=has_nul)
    return data


def _decode_error(exc: orjson.JSONDecodeError, max_depth: int) -> ApiError:
    detail = str(exc)
    if "depth limit" in detail:
        return _too_deep(max_depth)
    if "surrogate" in detail or "UTF-8" in detail:
        return ApiError(
            400,
            f"Invalid text in the JSON body ({detail}): send UTF-8 with valid Unicode; a lone "
            "UTF-16 surrogate such as \\ud800 is not a character.",
            code="invalid_json",
        )
    if "infinity" in detail:
        return ApiError(
            400,
            f"A number in the JSON body is out of range ({detail}): numbers must be finite.",
            code="invalid_json",
        )
    return ApiError(400, f"Malformed JSON: {detail}", code="invalid_json")


def _too_deep(max_depth: int) -> ApiError:
    return ApiError(
        400,
        f"The JSON body is nested deeper than {max_depth} levels.",
        code="nesting_too_deep",
    )


def _path_text(path: tuple[str | int, ...]) -> str:
    return ".".join(str(part).replace("\x00", "\\u0000") for part in path) or "body"


def _check_value(data: Any, *, max_depth: int, find_nul: bool) -> None:
    """Walk the parsed body (without recursion): too deep, or the paths of strings with a NUL."""
    nul_paths: list[str] = []
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            if len(path) >= max_depth:
                raise _too_deep(max_depth)
            for key, item in reversed(value.items()):
                if find_nul and "\x00" in key:
                    nul_paths.append(_path_text((*path, key)))
                stack.append((item, (*path, key)))
        elif isinstance(value, list):
            if len(path) >= max_depth:
                raise _too_deep(max_depth)
            stack.extend((item, (*path, index)) for index, item in reversed(list(enumerate(value))))
        elif find_nul and isinstance(value, str) and "\x00" in value:
            nul_paths.append(_path_text(path))
    if nul_paths:
        raise invalid_fields(dict.fromkeys(nul_paths[:_MAX_REPORTED_FIELDS], NUL_MESSAGE))
