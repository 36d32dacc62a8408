"""Token counts: the cheap estimate of the request path, and the real count billing falls back on.

The request path guesses before any answer exists (the context-window check, the TPM and quota
reservations, an upstream's count when it reported none): :func:`estimate_tokens`, about four
characters a token, is the one formula for those guesses, and :func:`estimate_prompt_tokens` adds
a chat prompt's framing to it. Budgets reserve against a bound instead, never a guess:
:func:`prompt_tokens_at_most`, the prompt's bytes (a token is at least one byte).

Providers normally report usage and the gateway bills from it. Some do not (an OpenAI-compatible
server that ignores ``stream_options``, Ollama when it reuses a cached prompt, a stream the client
dropped before the last chunk); then cost is estimated by counting tokens with a real BPE
vocabulary (``cl100k_base`` by default, setting ``GATEWAY_TOKENIZER``). The vocabulary takes about
100 MB and half a second to load, so it is loaded on the first estimate, in a thread, never at
start-up and never on the event loop. Without it (``GATEWAY_TOKENIZER=none``, or the package
missing) the count falls back to the cheap estimate.
docs/adr/0013-token-estimates.md.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable
from typing import Protocol

from django.conf import settings

logger = logging.getLogger(__name__)

# Chat formats add a few tokens around each message and to prime the reply (OpenAI documents
# three and three for its chat models); close enough for the others.
TOKENS_PER_MESSAGE = 3
TOKENS_FOR_REPLY = 3
CHARS_PER_TOKEN = 4
# The most bytes a message's framing can add to the budget's bound of a prompt.
FRAMING_BYTES_PER_MESSAGE = 8
HEURISTIC = "heuristic"
# Pieces this long can never exceed the tokenizer's per-call limits (200 000 tokens, a million
# characters): a character is at most four bytes and a token at least one.
_PIECE_CHARS = 50_000


class _Encoding(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


_lock = threading.Lock()
_encodings: dict[str, _Encoding | None] = {}


def encoding_name() -> str:
    """The configured vocabulary, or ``"heuristic"`` when counting is switched off."""
    name = settings.GATEWAY["TOKENIZER"].strip()
    return HEURISTIC if name.lower() in ("", "none", "off", HEURISTIC) else name


def _load(name: str) -> _Encoding | None:
    """The encoding called ``name``, loaded once per process; None when it cannot be."""
    if name in _encodings:  # loaded: no lock, so the event loop never waits on a loading thread
        return _encodings[name]
    with _lock:
        if name not in _encodings:
            try:
                # Imported here, under the lock: the vocabulary loads on first need (ADR 0013),
                # and a missing or broken package falls back to the estimate (below).
                import bpe_openai

                _encodings[name] = bpe_openai.get_encoding(name)
            except (ImportError, LookupError, RuntimeError, OSError) as exc:
                # The package missing or broken, or a vocabulary it does not know.
                logger.warning(
                    "tokenizer %r unavailable (%s); token estimates use ~4 characters a token",
                    name,
                    type(exc).__name__,
                )
                _encodings[name] = None
        return _encodings[name]


def loaded(name: str) -> bool:
    """Whether ``name`` has been loaded (or failed to) in this process."""
    return name in _encodings


def _pieces(text: str) -> Iterable[str]:
    for start in range(0, len(text), _PIECE_CHARS):
        yield text[start : start + _PIECE_CHARS]


def chars_to_tokens(chars: int) -> int:
    """The cheap estimate for a text of ``chars`` characters (rounded up)."""
    return -(-chars // CHARS_PER_TOKEN)


def estimate_tokens(text: str) -> int:
    """The request path's one guess of a text's tokens: about four characters a token."""
    return chars_to_tokens(len(text))


def estimate_prompt_tokens(contents: Iterable[str]) -> int:
    """A chat prompt's tokens, guessed: each message's estimate and framing, and the reply's."""
    return TOKENS_FOR_REPLY + sum(TOKENS_PER_MESSAGE + estimate_tokens(c) for c in contents)


def prompt_tokens_at_most(contents: Iterable[str]) -> int:
    """A bound no tokenizer exceeds for a chat prompt: its UTF-8 bytes (a token is at least one
    byte) and the framing's. What budgets reserve a call's prompt at (docs/adr/0012)."""
    return sum(len(c.encode()) + FRAMING_BYTES_PER_MESSAGE for c in contents)


class TokenCounter:
    """Counts tokens with one vocabulary (or the heuristic), tells which it used."""

    def __init__(self, encoding: _Encoding | None, name: str | None = None) -> None:
        self._encoding = encoding
        self.method = HEURISTIC if encoding is None else name or encoding_name()

    def text(self, text: str) -> int:
        if not text:
            return 0
        if self._encoding is None:
            return estimate_tokens(text)
        return sum(len(self._encoding.encode_ordinary(piece)) for piece in _pieces(text))

    def messages(self, contents: Iterable[str]) -> int:
        """A chat prompt: each message's content plus its framing, plus the reply's priming."""
        if self._encoding is None:
            return estimate_prompt_tokens(contents)
        total = TOKENS_FOR_REPLY
        for content in contents:
            total += TOKENS_PER_MESSAGE + self.text(content)
        return total


def counter() -> TokenCounter:
    """A counter for this thread (loads the vocabulary on first use, which blocks)."""
    name = encoding_name()
    return TokenCounter(None if name == HEURISTIC else _load(name), name)


async def async_counter() -> TokenCounter:
    """A counter for the event loop: the first call loads the vocabulary in a thread."""
    name = encoding_name()
    if name != HEURISTIC and not loaded(name):
        await asyncio.to_thread(_load, name)
    return counter()
