"""Upstream rate-limit headers, parsed into a typed snapshot (docs/adr/0011-upstream-quotas.md).

Providers say on every answer how much of their rate limits is left:

* OpenAI, Groq, Mistral...: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, the reset
  as a duration (``1s``, ``6m0s``, ``20ms``) until the limit is *fully replenished* (a token
  bucket that refills steadily).
* Cerebras: the same with the window in the name (``x-ratelimit-remaining-requests-day``,
  ``-tokens-minute``), the reset in seconds (``33011.38``) until the window *ends*. Any suffix is
  accepted (``-day``, ``_usage_based``...); one naming a period (day, minute...) is read as a fixed
  window.
* Anthropic: ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,
  reset}``, the reset an RFC 3339 time at which the bucket is full again.

:func:`parse_rate_limits` turns them into :class:`RateLimits`: one :class:`Window` per limit the
upstream reported, each with what remains and when it is back. Values that cannot be read are
ignored, never raised: a quirky header must not fail an answer. ``Retry-After`` stays where it was
(``ProviderError.retry_after``). The module is pure: no Django, no I/O, ``now`` can be given.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

REQUESTS: Final = "requests"
TOKENS: Final = "tokens"
INPUT_TOKENS: Final = "input_tokens"
OUTPUT_TOKENS: Final = "output_tokens"
TOKEN_KINDS: Final = (TOKENS, INPUT_TOKENS, OUTPUT_TOKENS)

DEFAULT_RESET_S: Final = 60.0
"""How long an exhausted window is assumed to last when the upstream sent no (readable) reset."""
MAX_RESET_S: Final = 86_400.0 + 3_600.0
"""Resets further away than a day (and an hour of clock skew) are cut to that."""

_PREFIXES: Final = ("x-ratelimit-", "anthropic-ratelimit-")
_OPENAI_RE: Final = re.compile(
    r"x-ratelimit-(limit|remaining|reset)-(requests|tokens|input-tokens|output-tokens)"
    r"(?:[-_]([a-z0-9_-]+))?"
)
_ANTHROPIC_RE: Final = re.compile(
    r"anthropic-ratelimit-(requests|tokens|input-tokens|output-tokens)-(limit|remaining|reset)"
)
# Window names that mean a fixed period: the reset is when the period ends, nothing comes back
# before it.
_PERIODS: Final = frozenset({"second", "minute", "hour", "day", "week", "month"})
_DURATION_RE: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)")
_UNIT_S: Final = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Window:
    """One limit an upstream reported: ``remaining`` of ``limit`` units of ``kind`` are left.

    ``reset_at`` (epoch seconds) is when the window is full again (``replenishes``: a bucket that
    refills steadily until then) or when it starts over (a fixed window: nothing comes back
    before). ``period`` is the window's name in the header (``day``, ``minute``), "" when none.
    """

    kind: str
    remaining: int
    limit: int | None = None
    reset_at: float | None = None
    period: str = ""
    replenishes: bool = True

    def free_at(self, need: int, observed_at: float) -> float | None:
        """When ``need`` units are available (epoch seconds), or None if they were when observed.

        A replenishing window with a known limit refills linearly from ``remaining`` at
        ``observed_at`` to ``limit`` at ``reset_at``; otherwise (fixed window, unknown limit, or a
        need above the limit) nothing is assumed back before the reset.
        """
        if self.remaining >= need:
            return None
        reset = self.reset_at if self.reset_at is not None else observed_at + DEFAULT_RESET_S
        limit = self.limit
        if self.replenishes and limit is not None and self.remaining < need <= limit:
            span = max(0.0, reset - observed_at)
            return observed_at + span * (need - self.remaining) / (limit - self.remaining)
        return reset


@dataclass(frozen=True, slots=True)
class RateLimits:
    """What an upstream said about its rate limits on one answer, observed at ``observed_at``."""

    windows: tuple[Window, ...]
    observed_at: float

    def _tightest(self, kinds: Iterable[str]) -> Window | None:
        wanted = set(kinds)
        found = [w for w in self.windows if w.kind in wanted]
        return min(found, key=lambda w: w.remaining) if found else None

    @property
    def requests_remaining(self) -> int | None:
        """Requests left in the tightest request window, None when none was reported."""
        window = self._tightest((REQUESTS,))
        return window.remaining if window else None

    @property
    def requests_reset_at(self) -> float | None:
        window = self._tightest((REQUESTS,))
        return window.reset_at if window else None

    @property
    def tokens_remaining(self) -> int | None:
        """Tokens left in the tightest token window (total, input or output), None when none."""
        window = self._tightest(TOKEN_KINDS)
        return window.remaining if window else None

    @property
    def tokens_reset_at(self) -> float | None:
        window = self._tightest(TOKEN_KINDS)
        return window.reset_at if window else None

    def blocked_until(self, needs: Mapping[str, int]) -> tuple[float, Window, int] | None:
        """The latest time a window can give what ``needs`` asks for (units per kind), with that
        window and its need; None when every window had enough when observed."""
        worst: tuple[float, Window, int] | None = None
        for window in self.windows:
            need = needs.get(window.kind, 0)
            if need <= 0:
                continue
            at = window.free_at(need, self.observed_at)
            if at is not None and (worst is None or at > worst[0]):
                worst = (at, window, need)
        return worst

    def is_low(self, needs: Mapping[str, int]) -> bool:
        """Whether some window has less than ``needs`` (the most one request could ask for)."""
        return any(w.remaining < needs.get(w.kind, 0) for w in self.windows)

    def expires_at(self) -> float:
        """When everything reported here is stale: the furthest reset (bounded)."""
        latest = max(
            (w.reset_at if w.reset_at is not None else self.observed_at + DEFAULT_RESET_S)
            for w in self.windows
        )
        return min(latest, self.observed_at + MAX_RESET_S)

    # -- a compact text form for the shared state ----------------------------------------------

    def encode(self) -> str:
        parts = [f"{self.observed_at:.3f}"]
        for w in self.windows:
            limit = "" if w.limit is None else str(w.limit)
            reset = "" if w.reset_at is None else f"{w.reset_at:.3f}"
            parts.append(f"{w.kind},{w.remaining},{limit},{reset},{w.period},{int(w.replenishes)}")
        return ";".join(parts)

    @classmethod
    def decode(cls, raw: str) -> RateLimits | None:
        """The snapshot :meth:`encode` wrote; None for anything else."""
        try:
            head, *items = raw.split(";")
            windows = []
            for item in items:
                kind, remaining, limit, reset, period, replenishes = item.split(",")
                windows.append(
                    Window(
                        kind=kind,
                        remaining=int(remaining),
                        limit=int(limit) if limit else None,
                        reset_at=float(reset) if reset else None,
                        period=period,
                        replenishes=replenishes == "1",
                    )
                )
            observed_at = float(head)
        except ValueError:
            return None
        return cls(tuple(windows), observed_at) if windows else None


def needs_for(prompt_tokens: int, max_tokens: int | None) -> dict[str, int]:
    """What one request asks of each kind of window: one request, its prompt plus the output it
    may produce (what providers reserve when they admit it)."""
    output = max_tokens or 0
    return {
        REQUESTS: 1,
        TOKENS: prompt_tokens + output,
        INPUT_TOKENS: prompt_tokens,
        OUTPUT_TOKENS: max(1, output),
    }


# --- parsing ---------------------------------------------------------------------------------


def parse_count(value: str) -> int | None:
    """A non-negative count (``"42"``, ``"42.0"``); None when unreadable."""
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if math.isfinite(number) and number >= 0 else None


def parse_duration(value: str) -> float | None:
    """Seconds from ``"1.5"`` or a Go-style duration (``"6m0s"``, ``"20ms"``, ``"1h2m3.5s"``)."""
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    total, end = 0.0, 0
    for match in _DURATION_RE.finditer(text):
        if match.start() != end:
            return None
        total += float(match[1]) * _UNIT_S[match[2]]
        end = match.end()
    return total if end == len(text) and end else None


def parse_reset(value: str, now: float) -> float | None:
    """When a window resets (epoch seconds), from a duration, an epoch timestamp (seconds or
    milliseconds), an RFC 3339 time or an HTTP date; None when unreadable."""
    text = value.strip()
    seconds = parse_duration(text)
    if seconds is not None:
        if seconds > 1e12:  # epoch milliseconds
            return seconds / 1000.0
        if seconds > 1e9:  # epoch seconds (a duration of 30 years is not one)
            return seconds
        return now + seconds
    when: datetime | None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def parse_rate_limits(headers: Mapping[str, str], now: float | None = None) -> RateLimits | None:
    """The rate limits the headers report, None when they report none (the usual case for local
    and self-hosted upstreams, which costs one pass over the header names).

    ``headers`` is any mapping of names to values; names are matched ignoring case.
    """
    # (family, kind, period, replenishes) → the window's fields as sent
    found: dict[tuple[str, str, str, bool], dict[str, str]] = {}
    for name, value in headers.items():
        lower = name.lower()
        if not lower.startswith(_PREFIXES):
            continue
        if lower[0] == "x":
            match = _OPENAI_RE.fullmatch(lower)
            if match is None:
                continue
            field, kind, period = match[1], match[2], match[3] or ""
            key = ("x", kind, period, period not in _PERIODS)
        else:
            match = _ANTHROPIC_RE.fullmatch(lower)
            if match is None:
                continue
            kind, field = match[1], match[2]
            key = ("anthropic", kind, "", True)
        found.setdefault(key, {})[field] = value
    if not found:
        return None
    observed = time.time() if now is None else now
    windows = []
    for (_family, kind, period, replenishes), fields in found.items():
        remaining = parse_count(fields.get("remaining", ""))
        if remaining is None:
            continue  # a limit without what is left of it tells nothing
        limit = parse_count(fields.get("limit", ""))
        reset_at = parse_reset(fields["reset"], observed) if "reset" in fields else None
        if reset_at is not None:
            reset_at = min(max(reset_at, observed), observed + MAX_RESET_S)
        if limit is not None and limit < remaining:
            limit = None  # inconsistent: don't interpolate with it
        windows.append(
            Window(
                kind=kind.replace("-", "_"),
                remaining=remaining,
                limit=limit,
                reset_at=reset_at,
                period=period,
                replenishes=replenishes,
            )
        )
    if not windows:
        return None
    return RateLimits(
        tuple(sorted(windows, key=lambda w: (w.kind, w.period, w.remaining))), observed
    )
