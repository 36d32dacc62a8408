"""Values made storable before they reach the database (docs/adr/0007-audit-write-path.md).

What the audit writer stores comes from callers, upstream models and our own code, and some of it
PostgreSQL refuses whatever the row: a NUL in a text column ("text fields cannot contain NUL") or
in a JSON string ("unsupported Unicode escape sequence"), a lone UTF-16 surrogate (it cannot be
encoded as UTF-8 at all), and JSON that orjson cannot encode (integers beyond 64 bits, nesting
deeper than its limit, keys that are not strings, types it does not know). The documented
replacements:

- NUL becomes U+FFFD (the replacement character); so does a lone surrogate, while a surrogate pair
  becomes the character it encodes. In text columns, in JSON strings and in JSON keys alike.
- In JSON, an integer beyond 64 bits becomes its decimal digits as a string, a value nested deeper
  than ``MAX_JSON_DEPTH`` becomes the string ``"[nested too deep]"``, a key that is not a string
  becomes its ``str()``, a date or time its ISO 8601 text, and a value of any other type orjson
  does not encode its ``str()``.

Most values need none of this, so the checks are cheap (a substring test, ``str.isascii``, one
orjson encoding) and a structure is only walked when a check hits.
"""

from __future__ import annotations

import re
from datetime import date, time
from typing import Any

import orjson

REPLACEMENT = "\ufffd"
# orjson refuses nesting deeper than 254 levels; stay well below it.
MAX_JSON_DEPTH = 200
TOO_DEEP = "[nested too deep]"
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
_SURROGATES = re.compile("[\ud800-\udfff]")
_JSON_NUL = b"\\u0000"


def storable_text(text: str) -> str:
    """``text`` with NUL and lone surrogates replaced by U+FFFD (the same object when clean)."""
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            # Surrogate pairs are joined into their character, lone surrogates replaced.
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            # A UTF-16 decoder keeps nothing unpaired, but be certain before a database sees it.
            text = _SURROGATES.sub(REPLACEMENT, text)
    return text


def storable_json(value: Any) -> Any:
    """``value`` as JSON PostgreSQL stores (``value`` itself when it already is)."""
    try:
        encoded = orjson.dumps(value)
    except (TypeError, ValueError):  # orjson.JSONEncodeError is a TypeError
        return _walk(value, 0)
    # A NUL is encoded as the escape jsonb refuses. "\\u0000" (an escaped backslash before
    # "u0000") matches too; walking it changes nothing, and it is rare.
    return _walk(value, 0) if _JSON_NUL in encoded else value


def _walk(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return storable_text(value)
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if _INT64_MIN <= value <= _UINT64_MAX else _int_text(value)
    if isinstance(value, dict | list | tuple):
        if depth >= MAX_JSON_DEPTH:
            return TOO_DEEP
        if isinstance(value, dict):
            return {_key(k): _walk(v, depth + 1) for k, v in value.items()}
        return [_walk(v, depth + 1) for v in value]
    if isinstance(value, date | time):  # datetime too
        return value.isoformat()
    try:
        return storable_text(str(value))
    except Exception:  # noqa: BLE001 - a value whose __str__ fails is still not a reason to fail
        return f"[{type(value).__name__}]"


def _key(key: Any) -> str:
    return storable_text(key if isinstance(key, str) else str(key))


def _int_text(value: int) -> str:
    try:
        return str(value)
    except ValueError:  # beyond Python's limit on integer-to-string conversion
        return f"[integer of {value.bit_length()} bits]"


def json_text(value: Any) -> str:
    """``value`` encoded as JSON text, whatever it holds (made storable first when needed)."""
    return orjson.dumps(storable_json(value)).decode()
