"""Rate limits of a simulated model: a budget of requests or tokens per window, and the duration
and time formats providers report their resets in."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(slots=True)
class Budget:
    """One simulated rate limit of a model: ``capacity`` units that refill steadily over
    ``window`` seconds (a token bucket, as OpenAI, Groq and Anthropic describe theirs), or, when
    ``fixed``, come back all at once when the window starts over (Cerebras' per-day windows)."""

    capacity: int
    window: float
    fixed: bool
    level: float
    since: float  # monotonic: last refill (bucket) or start of the window (fixed)

    def refresh(self, now: float) -> None:
        if self.fixed:
            if now - self.since >= self.window:
                elapsed_windows = (now - self.since) // self.window
                self.since += elapsed_windows * self.window
                self.level = float(self.capacity)
        else:
            refill = (now - self.since) * self.capacity / self.window
            self.level = min(float(self.capacity), self.level + refill)
            self.since = now

    @property
    def remaining(self) -> int:
        return max(0, math.floor(self.level + 1e-9))

    def reset_in(self, now: float) -> float:
        """Seconds until the budget is whole again (bucket) or starts over (fixed)."""
        if self.fixed:
            return max(0.0, self.since + self.window - now)
        return (self.capacity - self.level) * self.window / self.capacity

    def available_in(self, now: float) -> float:
        """Seconds until one unit is available."""
        if self.level >= 1:
            return 0.0
        if self.fixed:
            return self.reset_in(now)
        return (1 - self.level) * self.window / self.capacity

    def take(self, amount: int) -> None:
        # Never below zero: what one answer overdraws is forgiven, so what the headers say is
        # never more than what the next request finds.
        self.level = max(0.0, self.level - amount)


def go_duration(seconds: float) -> str:
    """A Go-style duration as OpenAI writes resets (``20ms``, ``1.5s``, ``6m0s``), rounded up to
    the millisecond so a client that trusts it is never early."""
    ms = math.ceil(seconds * 1000 - 1e-6)
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def rfc3339_after(seconds: float) -> str:
    """The wall-clock time ``seconds`` from now, rounded up to the second, as Anthropic writes
    resets."""
    when = datetime.fromtimestamp(math.ceil(time.time() + seconds), UTC)
    return when.isoformat().replace("+00:00", "Z")
