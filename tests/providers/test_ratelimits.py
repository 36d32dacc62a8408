"""Parsing of upstream rate-limit headers (providers/ratelimits.py): pure, no network, no Django."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from email.utils import formatdate
from pathlib import Path

import pytest
from multidict import CIMultiDict

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from providers.ratelimits import (  # noqa: E402
    DEFAULT_RESET_S,
    MAX_RESET_S,
    RateLimits,
    Window,
    needs_for,
    parse_count,
    parse_duration,
    parse_rate_limits,
    parse_reset,
)

NOW = 1_750_000_000.0  # an epoch time: resets are absolute


def parse(headers: dict[str, str], now: float = NOW) -> RateLimits | None:
    return parse_rate_limits(CIMultiDict(headers), now=now)


def window(limits: RateLimits | None, kind: str, period: str = "") -> Window:
    assert limits is not None
    return next(w for w in limits.windows if w.kind == kind and w.period == period)


def test_openai_and_groq_headers() -> None:
    """The OpenAI family: limit, remaining and a Go-style duration until full again."""
    limits = parse(
        {
            "x-ratelimit-limit-requests": "14400",
            "x-ratelimit-remaining-requests": "14370",
            "x-ratelimit-reset-requests": "2m59.56s",
            "x-ratelimit-limit-tokens": "6000",
            "x-ratelimit-remaining-tokens": "5997",
            "x-ratelimit-reset-tokens": "30ms",
            "content-type": "application/json",
        }
    )
    assert limits is not None and limits.observed_at == NOW
    assert limits.requests_remaining == 14370
    assert limits.requests_reset_at == pytest.approx(NOW + 179.56)
    assert limits.tokens_remaining == 5997
    assert limits.tokens_reset_at == pytest.approx(NOW + 0.03)
    requests = window(limits, "requests")
    assert requests.limit == 14400 and requests.replenishes and requests.period == ""


def test_header_names_ignore_case() -> None:
    limits = parse({"X-RateLimit-Remaining-Requests": "3", "X-RATELIMIT-LIMIT-REQUESTS": "10"})
    assert window(limits, "requests") == Window("requests", 3, 10, None)


def test_cerebras_suffixed_windows_are_fixed() -> None:
    """Cerebras names the window (-day, -minute) and gives the reset in seconds: a fixed window,
    nothing comes back before it ends."""
    limits = parse(
        {
            "x-ratelimit-limit-requests-day": "14400",
            "x-ratelimit-remaining-requests-day": "0",
            "x-ratelimit-reset-requests-day": "33011.382867097855",
            "x-ratelimit-limit-tokens-minute": "60000",
            "x-ratelimit-remaining-tokens-minute": "59000",
            "x-ratelimit-reset-tokens-minute": "11.382867097854614",
        }
    )
    day = window(limits, "requests", "day")
    assert day.remaining == 0 and day.limit == 14400 and not day.replenishes
    assert day.reset_at == pytest.approx(NOW + 33011.382867)
    assert window(limits, "tokens", "minute").remaining == 59000
    assert limits is not None
    blocked = limits.blocked_until(needs_for(10, None))
    assert blocked is not None and blocked[0] == day.reset_at  # not interpolated


def test_other_suffixes_are_separate_windows() -> None:
    """Any suffix is a window of its own (OpenAI's _usage_based); the tightest one counts."""
    limits = parse(
        {
            "x-ratelimit-remaining-tokens": "159976",
            "x-ratelimit-remaining-tokens_usage_based": "1000",
            "x-ratelimit-reset-tokens_usage_based": "9ms",
        }
    )
    assert limits is not None
    assert {(w.kind, w.period) for w in limits.windows} == {
        ("tokens", ""),
        ("tokens", "usage_based"),
    }
    assert limits.tokens_remaining == 1000
    assert window(limits, "tokens", "usage_based").replenishes  # not a period name


def test_anthropic_headers_with_rfc3339_resets() -> None:
    reset = datetime.fromtimestamp(NOW + 42, UTC).isoformat().replace("+00:00", "Z")
    limits = parse(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": reset,
            "anthropic-ratelimit-tokens-limit": "96000",
            "anthropic-ratelimit-tokens-remaining": "96000",
            "anthropic-ratelimit-tokens-reset": reset,
            "anthropic-ratelimit-input-tokens-limit": "80000",
            "anthropic-ratelimit-input-tokens-remaining": "1000",
            "anthropic-ratelimit-input-tokens-reset": reset,
            "anthropic-ratelimit-output-tokens-limit": "16000",
            "anthropic-ratelimit-output-tokens-remaining": "16000",
            "anthropic-ratelimit-output-tokens-reset": reset,
            "request-id": "req_1",
        }
    )
    assert limits is not None
    assert limits.requests_remaining == 0
    assert limits.requests_reset_at == pytest.approx(NOW + 42)
    assert window(limits, "input_tokens").remaining == 1000
    assert window(limits, "output_tokens").limit == 16000
    assert limits.tokens_remaining == 1000  # the tightest token window
    assert all(w.replenishes for w in limits.windows)


def test_no_rate_limit_headers_gives_none() -> None:
    """The usual case for local and self-hosted upstreams."""
    assert parse({}) is None
    assert parse({"content-type": "application/json", "retry-after": "3"}) is None
    assert parse({"x-ratelimit-something-else": "1", "x-request-id": "abc"}) is None


@pytest.mark.parametrize(
    "headers",
    [
        {"x-ratelimit-remaining-requests": "lots"},
        {"x-ratelimit-remaining-requests": "-1"},
        {"x-ratelimit-remaining-requests": "nan"},
        {"x-ratelimit-remaining-requests": ""},
        {"x-ratelimit-limit-requests": "30", "x-ratelimit-reset-requests": "1s"},  # no remaining
        {"anthropic-ratelimit-requests-remaining": "soon"},
    ],
)
def test_unreadable_windows_are_ignored(headers: dict[str, str]) -> None:
    assert parse(headers) is None


def test_malformed_parts_are_dropped_not_raised() -> None:
    """A bad limit or reset leaves the rest of the window; a limit below what remains is
    inconsistent and dropped."""
    limits = parse(
        {
            "x-ratelimit-remaining-requests": "5",
            "x-ratelimit-limit-requests": "many",
            "x-ratelimit-reset-requests": "whenever",
            "x-ratelimit-remaining-tokens": "500",
            "x-ratelimit-limit-tokens": "100",
            "anthropic-ratelimit-requests-remaining": "7",
            "anthropic-ratelimit-requests-reset": "2025-13-45T99:00:00Z",
        }
    )
    assert limits is not None
    assert limits.windows == (
        Window("requests", 5, None, None),
        Window("requests", 7, None, None),  # Anthropic's, kept apart
        Window("tokens", 500, None, None),
    )
    assert limits.requests_remaining == 5


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("7.66s", 7.66),
        ("1d", 86400.0),
        ("250us", 0.00025),
        ("0.5", 0.5),
        ("12", 12.0),
        (" 3s ", 3.0),
        ("", None),
        ("s", None),
        ("1x", None),
        ("1s2", None),
        ("1.5.5s", None),
        ("-1", None),
        ("-1s", None),
        ("inf", None),
        ("nan", None),
    ],
)
def test_parse_duration(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_parse_reset_forms() -> None:
    assert parse_reset("1.5s", NOW) == pytest.approx(NOW + 1.5)
    assert parse_reset(str(int(NOW + 60)), NOW) == NOW + 60  # epoch seconds
    assert parse_reset(str(int((NOW + 60) * 1000)), NOW) == pytest.approx(NOW + 60)  # epoch ms
    assert (
        parse_reset("2025-06-15T15:06:40Z", NOW)
        == datetime(2025, 6, 15, 15, 6, 40, tzinfo=UTC).timestamp()
    )
    assert (
        parse_reset("2025-06-15T15:06:40", NOW)
        == datetime(2025, 6, 15, 15, 6, 40, tzinfo=UTC).timestamp()
    )  # no zone: UTC
    assert parse_reset(formatdate(NOW + 30, usegmt=True), NOW) == NOW + 30
    assert parse_reset("tomorrow", NOW) is None


def test_resets_are_bounded() -> None:
    """A reset in the past is now; one further than a day (plus skew) is cut."""
    limits = parse(
        {
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": str(int(NOW - 100)),
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": "1000000s",
        }
    )
    assert window(limits, "requests").reset_at == NOW
    assert window(limits, "tokens").reset_at == NOW + MAX_RESET_S


def test_parse_count() -> None:
    assert parse_count("42") == 42 and parse_count("42.0") == 42 and parse_count(" 7 ") == 7
    assert parse_count("-3") is None and parse_count("x") is None and parse_count("inf") is None


def test_needs_for_a_request() -> None:
    assert needs_for(100, 50) == {
        "requests": 1,
        "tokens": 150,
        "input_tokens": 100,
        "output_tokens": 50,
    }
    assert needs_for(100, None)["tokens"] == 100
    assert needs_for(100, None)["output_tokens"] == 1


def test_a_replenishing_window_frees_up_in_proportion() -> None:
    """A bucket refilled steadily until its reset: one request of 30 is back after 1/30 of it."""
    w = Window("requests", remaining=0, limit=30, reset_at=NOW + 60)
    assert w.free_at(1, NOW) == pytest.approx(NOW + 2)
    assert w.free_at(30, NOW) == pytest.approx(NOW + 60)
    assert Window("tokens", 1000, 6000, NOW + 50).free_at(3500, NOW) == pytest.approx(NOW + 25)
    assert w.free_at(0, NOW) is None


def test_fixed_unknown_or_too_big_needs_wait_for_the_reset() -> None:
    fixed = Window("requests", 0, 30, NOW + 60, period="minute", replenishes=False)
    assert fixed.free_at(1, NOW) == NOW + 60
    assert Window("requests", 0, None, NOW + 60).free_at(1, NOW) == NOW + 60  # limit unknown
    assert Window("tokens", 10, 100, NOW + 60).free_at(500, NOW) == NOW + 60  # above the limit
    assert Window("requests", 0).free_at(1, NOW) == NOW + DEFAULT_RESET_S  # no reset sent


def test_blocked_until_takes_the_latest_window() -> None:
    limits = RateLimits(
        (
            Window("requests", 5, 30, NOW + 60),
            Window("tokens", 100, 6000, NOW + 60),
            Window("input_tokens", 10_000, 80_000, NOW + 60),
        ),
        NOW,
    )
    assert limits.blocked_until(needs_for(50, 40)) is None  # 90 tokens fit in 100
    at, w, need = limits.blocked_until(needs_for(50, 1000)) or (0.0, None, 0)
    assert w is not None and w.kind == "tokens" and need == 1050
    assert at == pytest.approx(NOW + 60 * 950 / 5900)


def test_is_low_and_expiry() -> None:
    limits = RateLimits(
        (Window("requests", 3, 30, NOW + 20), Window("tokens", 5000, 6000, NOW + 7)), NOW
    )
    assert not limits.is_low({"requests": 1, "tokens": 4096})
    assert limits.is_low({"requests": 1, "tokens": 8192})
    assert limits.expires_at() == NOW + 20
    assert RateLimits((Window("requests", 0),), NOW).expires_at() == NOW + DEFAULT_RESET_S


def test_encode_decode_round_trip() -> None:
    limits = RateLimits(
        (
            Window("requests", 0, 14400, NOW + 33011.382, "day", replenishes=False),
            Window("tokens", 59000, None, None, "minute", replenishes=False),
            Window("output_tokens", 12, 16000, NOW + 3.25),
        ),
        NOW,
    )
    assert RateLimits.decode(limits.encode()) == limits


@pytest.mark.parametrize("raw", ["", "garbage", "1.0", "1.0;requests,x,1,2,,1", "1;a,b"])
def test_decode_rejects_anything_else(raw: str) -> None:
    assert RateLimits.decode(raw) is None
