"""Text helpers shared by the validators: words, fenced code blocks, JSON and the prose of an answer.

Several validators look at the same derived text (the prose without code, the parsed JSON), so
the helpers are memoised on the answer string: one answer is split and parsed once per scoring
whatever the number of validators asking. Cached values are shared: callers must not mutate them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import orjson

# Tokens for comparing texts: runs of letters and digits in any script.
_TOKEN_RE: Final = re.compile(r"[^\W_]+")

# A fenced block: ``` or ~~~ (three or more), an optional info string whose first word is the
# language, the body, and the same fence closing it (or the end of a truncated answer).
_FENCE_RE: Final = re.compile(
    r"^[ \t]{0,3}(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[^\s`{]*)[^\n]*\n"
    r"(?P<body>.*?)"
    r"(?:^[ \t]{0,3}(?P<close>(?P=fence))[`~]*[ \t]*$|\Z)",
    re.MULTILINE | re.DOTALL,
)
_INLINE_CODE_RE: Final = re.compile(r"`[^`\n]+`")
_URL_RE: Final = re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE)

_QUOTES: Final = str.maketrans(
    {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u201c": '"', "\u201d": '"'}
)

# How many string values of a JSON answer are gathered as its text.
_MAX_JSON_STRINGS: Final = 1000


@dataclass(frozen=True, slots=True)
class CodeBlock:
    """One fenced block: its language tag (lower case, "" when untagged) and its body."""

    lang: str
    code: str
    closed: bool


@dataclass(frozen=True, slots=True)
class JsonOutcome:
    """The answer parsed as JSON: ``ok`` with ``value``, or ``error``; ``fenced`` when it came
    wrapped in a single fenced block."""

    ok: bool
    value: Any = None
    error: str = ""
    fenced: bool = False


def count_words(text: str) -> int:
    """Whitespace-separated words, as the simulator and the token accounting count them (so
    "min_words" means the same everywhere)."""
    return len(text.split())


def tokens(text: str) -> list[str]:
    """Lower-case runs of letters and digits: the units texts are compared by."""
    return _TOKEN_RE.findall(text.lower())


def normalize_quotes(text: str) -> str:
    """Typographic apostrophes and quotes as ASCII, so one pattern matches both spellings."""
    return text.translate(_QUOTES)


@lru_cache(maxsize=64)
def code_blocks(text: str) -> tuple[CodeBlock, ...]:
    """The fenced code blocks of a Markdown answer, in order."""
    if "```" not in text and "~~~" not in text:
        return ()
    return tuple(
        CodeBlock(
            match.group("lang").lower(), match.group("body"), match.group("close") is not None
        )
        for match in _FENCE_RE.finditer(text)
    )


@lru_cache(maxsize=64)
def prose(text: str) -> str:
    """The answer without fenced blocks, inline code and URLs (each replaced by a space)."""
    if "```" in text or "~~~" in text:
        text = _FENCE_RE.sub(" ", text)
    if "`" in text:
        text = _INLINE_CODE_RE.sub(" ", text)
    if "://" in text or "www." in text:
        text = _URL_RE.sub(" ", text)
    return text.strip()


def _single_fence_body(text: str) -> str | None:
    """The body when ``text`` is exactly one fenced block (```json ... ```), else None."""
    if not (text.startswith("```") or text.startswith("~~~")):
        return None
    match = _FENCE_RE.match(text)
    if match is None or match.end() < len(text.rstrip()):
        return None
    return match.group("body")


@lru_cache(maxsize=64)
def parse_json(text: str) -> JsonOutcome:
    """Parse the whole answer as JSON, tolerating one fenced block around it."""
    candidate = text.strip()
    fenced = False
    body = _single_fence_body(candidate)
    if body is not None:
        candidate, fenced = body.strip(), True
    if not candidate:
        return JsonOutcome(ok=False, error="the answer is empty", fenced=fenced)
    try:
        return JsonOutcome(ok=True, value=orjson.loads(candidate), fenced=fenced)
    except orjson.JSONDecodeError as error:
        return JsonOutcome(ok=False, error=str(error), fenced=fenced)


def looks_like_json(text: str) -> bool:
    """Whether the answer opens like a JSON document (possibly fenced)."""
    start = text.lstrip()[:8]
    return start[:1] in ("{", "[") or start.lower().startswith(("```json", "```\n{", "```\n["))


def json_strings(value: Any) -> list[str]:
    """The string values (not the keys) inside a parsed JSON document, depth first."""
    found: list[str] = []
    stack = [value]
    while stack and len(found) < _MAX_JSON_STRINGS:
        item = stack.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return found


@lru_cache(maxsize=64)
def answer_text(text: str) -> str:
    """The natural-language part of an answer: the string values of a JSON answer, otherwise
    its prose (code, inline code and URLs removed). Language, refusal and repetition look at
    this, so JSON keys and code do not count as words of the answer."""
    if looks_like_json(text):
        parsed = parse_json(text)
        if parsed.ok:
            return "\n".join(json_strings(parsed.value))
    return prose(text)
