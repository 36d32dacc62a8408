"""Admission of a request: requests and tokens per minute, and budgets (docs/adr/0012).

One atomic step in the shared state admits a request against every limit it falls under (its
agent's RPM and TPM, and every budget: global, project, agent, key) or refuses it naming the first
limit it would break; nothing is counted for a refused request. With Redis that step is one Lua
script, so any number of gateway processes enforce one limit; on the embedded defaults it is one
lock in the process.

- RPM/TPM: a sliding window over two fixed minute windows (the current count plus the previous
  minute's weighted by how much of it still overlaps the last 60 s). A request counts 1 request
  and its estimated prompt tokens plus its ``max_tokens``; the answer's real tokens are settled
  after.
- Budgets: a request reserves the worst-case cost of each upstream call (prompt bytes as tokens,
  since a token is at least one byte, and ``max_tokens`` or ``BUDGET_MAX_OUTPUT_TOKENS`` of output,
  at the price of the deployment about to be called) before making it, and settles the real cost
  after, so concurrent requests can overshoot a budget by no more than the gap between one
  request's reservation and its real cost. A budget's counter is loaded from the spend rollups
  when the shared state does not have it (a new day, a Redis restart).
- Each budget has a second counter, of its reservations not yet settled (``…:held``), moved in
  the same atomic steps: the counter minus the held amount is the settled spend, which the 50,
  80 and 100 % alerts are computed from.
- Redis unreachable: the shared state falls back to the process; each process then enforces
  1/``FALLBACK_PROCESSES`` of every rate limit and of every budget's remaining amount, so the
  limits never open up.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from gateway_project.api_errors import GatewayError
from gateway_project.shared_state import ADMITTED, MISSING, Counter, shared_state
from gateway_project.shared_state import Admission as SharedAdmission
from gateway_project.state_keys import (
    agent_rate_key,
    budget_alert_key,
    budget_held_key,
    budget_key,
    budget_period_id,
)

from .selectors import BudgetRef, Caller
from .spend import spent_nano
from .tasks import budget_alert_raise

logger = logging.getLogger(__name__)

NANO = 1_000_000_000
WINDOW_S = 60
ALERT_THRESHOLDS = (50, 80, 100)


class LimitExceeded(GatewayError):
    """A request over a limit: HTTP 429 with ``code``, ``Retry-After`` and rate-limit headers."""

    def __init__(
        self, code: str, message: str, *, retry_after_s: float, headers: dict[str, str]
    ) -> None:
        super().__init__(
            message, http_status=429, code=code, headers=headers, retry_after_s=retry_after_s
        )


@dataclass(frozen=True, slots=True)
class _Rate:
    """One per-minute limit of an admission, as the headers report it."""

    name: str  # "requests" or "tokens"
    limit: int
    key: str
    previous_key: str
    weight: float
    elapsed: float


@dataclass(slots=True)
class Admission:
    """What an admitted request holds: its budget reservation and token count, to settle.

    ``reserved_nano`` is what the budgets hold for the request; ``committed_nano`` what its
    finished calls really cost; ``held_nano`` the worst cases of its calls in progress (a second
    opinion runs beside the answer). Before each upstream call the reservation is made to cover
    all three (``reserve``).
    """

    caller: Caller
    budgets: list[tuple[BudgetRef, str, float]] = field(default_factory=list)  # ref, key, ttl
    reserved_nano: int = 0
    committed_nano: int = 0
    held_nano: int = 0
    tokens_key: str = ""
    tokens_counted: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    settled: bool = False
    refusal: LimitExceeded | None = None

    async def reserve(self, cost_usd: float) -> bool:
        """Hold ``cost_usd`` for one more call, reserving more from the budgets when needed;
        False (nothing held, ``refusal`` set) when a budget cannot cover it."""
        if not self.budgets:
            return True
        if self.settled:
            return False  # the request has ended: no call is made for it any more
        worst = _nano(cost_usd)
        self.held_nano += worst
        extra = self.committed_nano + self.held_nano - self.reserved_nano
        if extra <= 0:
            return True
        # Claimed before the round trip, so a call of this request reserving meanwhile counts it.
        self.reserved_nano += extra
        counters = [
            Counter(
                key=key,
                amount=extra,
                limit=ref.limit_nano,
                ttl=ttl,
                strict=True,
                held_key=budget_held_key(key),
            )
            for ref, key, ttl in self.budgets
        ]
        try:
            admission = await _admit_loading(counters, self.budgets, 0, datetime.now(UTC))
        except BaseException:
            self.reserved_nano -= extra
            self.held_nano -= worst
            raise
        if admission.status == ADMITTED:
            return True
        self.reserved_nano -= extra
        self.held_nano -= worst
        ref, key, _ = self.budgets[max(0, admission.index)]
        used = admission.used[0] if admission.used else ref.limit_nano
        await _check_alerts([(ref, key, used - admission.held, admission.held)])
        self.refusal = _budget_refusal(ref, used, worst)
        return False

    def release(self, cost_nano: int) -> None:
        """A call held for is over (its cost, if any, is committed separately)."""
        self.held_nano = max(0, self.held_nano - cost_nano)

    def commit(self, cost_usd: float) -> None:
        """Count what a finished call really cost."""
        self.committed_nano += _nano(cost_usd)

    def guard(self, prompt_tokens_at_most: int, max_output_tokens: int) -> BudgetGuard | None:
        return BudgetGuard(self, prompt_tokens_at_most, max_output_tokens) if self.budgets else None

    async def settle(self, *, cost_usd: float, tokens: int) -> None:
        """Replace the reservation by the real cost and the token estimate by the real count."""
        if self.settled:
            return
        self.settled = True
        deltas: list[tuple[str, int, float]] = []
        if self.tokens_key and tokens != self.tokens_counted:
            deltas.append((self.tokens_key, tokens - self.tokens_counted, 2 * WINDOW_S))
        cost = _nano(cost_usd)
        # A settlement that spent something is checked against the alert thresholds, even when
        # it cost exactly what was reserved (a delta of 0 still reads the counters).
        spent = bool(self.budgets) and bool(cost or self.reserved_nano)
        if spent:
            for _, key, ttl in self.budgets:
                deltas.append((key, cost - self.reserved_nano, ttl))
                deltas.append((budget_held_key(key), -self.reserved_nano, ttl))
        if not deltas:
            return
        values = await shared_state().aadjust(deltas)
        if spent:
            pairs = values[-2 * len(self.budgets) :]
            await _check_alerts(
                [
                    (ref, key, pairs[2 * i] - pairs[2 * i + 1], pairs[2 * i + 1])
                    for i, (ref, key, _) in enumerate(self.budgets)
                ]
            )


class BudgetGuard:
    """The router's check before calling a deployment: can the budgets cover its worst case?

    One guard serves one walk of the router, which calls one deployment at a time: asking for the
    next deployment releases what was held for the previous one, and ``finish`` releases the last
    and commits what the answer really cost.
    """

    def __init__(
        self, admission: Admission, prompt_tokens_at_most: int, max_output_tokens: int
    ) -> None:
        self.admission = admission
        self.prompt_tokens_at_most = prompt_tokens_at_most
        self.max_output_tokens = max_output_tokens
        self.refusal: Exception | None = None
        self.holding_nano = 0

    def worst_case_usd(self, deployment: Any) -> float:
        return float(deployment.cost_usd(self.prompt_tokens_at_most, self.max_output_tokens))

    async def __call__(self, deployment: Any) -> str | None:
        self.admission.release(self.holding_nano)
        self.holding_nano = 0
        worst = self.worst_case_usd(deployment)
        if await self.admission.reserve(worst):
            self.holding_nano = _nano(worst)
            return None
        self.refusal = self.admission.refusal
        return f"budget cannot cover a call of up to ${worst:.4f}"

    def finish(self, cost_usd: float) -> None:
        """The walk is over: release what it held, and commit what its answer cost (0: none)."""
        self.admission.release(self.holding_nano)
        self.holding_nano = 0
        self.admission.commit(cost_usd)


def usd(amount: float) -> str:
    """Dollars as people read them: cents from a dollar up, six decimals below."""
    return f"${amount:,.2f}" if amount >= 1 else f"${amount:.6f}"


def _budget_refusal(ref: BudgetRef, used: int, amount: int) -> LimitExceeded:
    now = datetime.now(UTC)
    _, _, end = budget_period(ref.period, now)
    return LimitExceeded(
        "budget_exceeded",
        f"Budget exceeded: the {ref.label} budget of {usd(ref.limit_nano / NANO)} has "
        f"{usd(max(0, ref.limit_nano - used) / NANO)} left and this request may cost up to "
        f"{usd(amount / NANO)}. No upstream call was made.",
        retry_after_s=max(1.0, (end - now).total_seconds()),
        headers={},
    )


def _nano(usd: float) -> int:
    # Rounded first: $0.00041 is 410000.00000000006 nano-USD as a float, and must count 410000,
    # so that settled spend is exactly what the audit records add up to.
    return math.ceil(round(usd * NANO, 6)) if usd > 0 else 0


# --- windows and keys ---------------------------------------------------------------------


def _rates(caller: Caller, now: float) -> list[_Rate]:
    window = int(now // WINDOW_S)
    elapsed = now - window * WINDOW_S
    weight = 1.0 - elapsed / WINDOW_S
    rates = []
    for name, limit in (("requests", caller.rpm_limit), ("tokens", caller.tpm_limit)):
        if limit:
            key = agent_rate_key(caller.agent, name, window)
            previous = agent_rate_key(caller.agent, name, window - 1)
            rates.append(_Rate(name, limit, key, previous, weight, elapsed))
    return rates


def _retry_after(rate: _Rate, used: int, amount: int) -> float:
    """Seconds until ``amount`` more fits, if nothing else is counted meanwhile (at least 1)."""
    # In the next window the current count becomes the weighted "previous" one.
    current_share = max(0, used - amount)  # an upper bound of the current window's own count
    until_next = WINDOW_S - rate.elapsed
    if current_share <= 0:
        return max(1.0, until_next)
    room = (rate.limit - amount) / current_share  # the weight at which it fits
    return max(1.0, until_next + max(0.0, 1.0 - room) * WINDOW_S)


def budget_period(period: str, now: datetime) -> tuple[str, datetime, datetime]:
    """A budget period's id, start and end (UTC)."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
        return start.strftime("%Y%m"), start, end
    return day.strftime("%Y%m%d"), day, day + timedelta(days=1)


# --- admission ----------------------------------------------------------------------------


async def admit(
    caller: Caller, *, tokens: int, worst_cost_usd: float, cached: bool = False
) -> Admission:
    """Count the request against every limit of ``caller`` at once, or raise ``LimitExceeded``
    (and count nothing). A ``cached`` answer counts as a request, but uses no tokens upstream
    and costs nothing."""
    now_epoch = time.time()
    rates = _rates(caller, now_epoch)
    if cached:
        rates = [rate for rate in rates if rate.name == "requests"]
    now = datetime.fromtimestamp(now_epoch, UTC)
    budgets = []
    for ref in () if cached else caller.budgets:
        period_id, _, end = budget_period(ref.period, now)
        # Kept a day past the period's end: late settlements still land on it.
        budgets.append(
            (ref, budget_key(ref.id, ref.revision, period_id), (end - now).total_seconds() + 86400)
        )
    if not rates and not budgets:
        return Admission(caller=caller)
    amount = _nano(worst_cost_usd)
    counters = [
        Counter(
            key=rate.key,
            amount=1 if rate.name == "requests" else tokens,
            limit=rate.limit,
            ttl=2 * WINDOW_S,
            previous_key=rate.previous_key,
            weight=rate.weight,
        )
        for rate in rates
    ]
    counters += [
        Counter(
            key=key,
            amount=amount,
            limit=ref.limit_nano,
            ttl=ttl,
            strict=True,
            held_key=budget_held_key(key),
        )
        for ref, key, ttl in budgets
    ]
    if not rates and amount == 0:
        # A call that costs nothing (a local model) is not held by budgets; the router's guard
        # reserves before any call that could cost something.
        return Admission(caller=caller, budgets=budgets)
    result = await _admit_loading(counters, budgets, len(rates), now)
    if result.status != ADMITTED:
        index, used = result.index, result.used[0] if result.used else 0
        if index < len(rates):
            raise _rate_refusal(rates[index], used, counters[index].amount, rates)
        ref, key, _ = budgets[index - len(rates)]
        # Refused for what is reserved and spent; an alert says only what is spent.
        await _check_alerts([(ref, key, used - result.held, result.held)])
        raise _budget_refusal(ref, used, amount)
    admission = Admission(caller=caller, budgets=budgets, reserved_nano=amount)
    for rate, used in zip(rates, result.used, strict=False):
        admission.headers.update(_rate_headers(rate, used))
        if rate.name == "tokens":
            admission.tokens_key, admission.tokens_counted = rate.key, tokens
    return admission


async def _admit_loading(
    counters: list[Counter],
    budgets: list[tuple[BudgetRef, str, float]],
    offset: int,
    now: datetime,
) -> SharedAdmission:
    """``aadmit``, loading a budget counter the shared state does not have from the rollups
    and trying again. ``offset`` is the index of the first budget counter in ``counters``."""
    for _ in range(3):
        result = await shared_state().aadmit(counters)
        if result.status != MISSING:
            return result
        ref, key, ttl = budgets[result.index - offset]
        await _load_budget(ref, key, ttl, now)
    # Loaded, and gone again (evicted): refuse rather than guess.
    raise LimitExceeded(
        "budget_unavailable",
        "The budget counters are unavailable; try again shortly.",
        retry_after_s=1,
        headers={},
    )


def _rate_headers(rate: _Rate, used: int) -> dict[str, str]:
    reset = WINDOW_S - rate.elapsed
    return {
        f"x-ratelimit-limit-{rate.name}": str(rate.limit),
        f"x-ratelimit-remaining-{rate.name}": str(max(0, rate.limit - used)),
        f"x-ratelimit-reset-{rate.name}": f"{reset:.0f}s",
    }


def _rate_refusal(rate: _Rate, used: int, amount: int, rates: list[_Rate]) -> LimitExceeded:
    retry = _retry_after(rate, used, amount)
    headers = _rate_headers(rate, used)
    headers["x-ratelimit-reset-" + rate.name] = f"{retry:.0f}s"
    per = "requests" if rate.name == "requests" else "tokens"
    return LimitExceeded(
        f"rate_limit_{per}",
        f"Rate limit reached: {rate.limit} {per} per minute for this agent "
        f"({used} used in the last minute). Retry after {math.ceil(retry)} s.",
        retry_after_s=retry,
        headers=headers,
    )


async def _load_budget(ref: BudgetRef, key: str, ttl: float, now: datetime) -> None:
    """Start a budget's counter from what the rollups say was spent in its period. While Redis is
    down, a process starts as if the others had reserved all but its share of what is left (held,
    not spent: no alert fires for it)."""
    _, start, end = budget_period(ref.period, now)
    spent = await sync_to_async(spent_nano, thread_sensitive=False)(ref, start, end)
    state = shared_state()
    others = 0
    if state.redis_url and not state.uses_redis:
        processes = max(1, settings.GATEWAY["FALLBACK_PROCESSES"])
        left = max(0, ref.limit_nano - spent)
        others = left - left // processes
    if await state.aadd(key, str(spent + others), ttl) and others:
        await state.aadjust([(budget_held_key(key), others, ttl)])


# --- alerts -------------------------------------------------------------------------------

_alerted: set[str] = set()


async def _check_alerts(values: list[tuple[BudgetRef, str, int, int]]) -> None:
    """Raise each budget's 50/80/100 % alert once per period, across processes (the first process
    to claim the alert's key sends it). ``values``: per budget, its key, its settled spend and
    its reservations in flight (nano-USD); only the settled spend counts towards a threshold."""
    for ref, key, spent, reserved in values:
        share = 100.0 * spent / ref.limit_nano if ref.limit_nano else 100.0
        for threshold in ALERT_THRESHOLDS:
            alert_key = budget_alert_key(key, threshold)
            if share < threshold or alert_key in _alerted:
                continue
            if len(_alerted) > 10_000:
                _alerted.clear()
            _alerted.add(alert_key)
            if await shared_state().aadd(alert_key, "1", 40 * 86400):
                await _raise_alert(ref, key, threshold, spent, max(0, reserved))


async def _raise_alert(ref: BudgetRef, key: str, threshold: int, spent: int, reserved: int) -> None:
    logger.warning(
        "BUDGET ALERT: the %s budget reached %d %% (%s of %s spent; %s reserved by requests "
        "in flight)",
        ref.label,
        threshold,
        usd(spent / NANO),
        usd(ref.limit_nano / NANO),
        usd(reserved / NANO),
    )
    period_id = budget_period_id(key)
    await sync_to_async(_enqueue_alert, thread_sensitive=False)(
        ref.id, period_id, threshold, spent, reserved
    )


def _enqueue_alert(
    budget_id: int, period_id: str, threshold: int, spent_nano: int, reserved_nano: int
) -> None:
    try:
        budget_alert_raise.delay(budget_id, period_id, threshold, spent_nano, reserved_nano)
    except Exception:
        # The log line above stands; the admin banner and webhook wait for the broker.
        logger.exception("could not enqueue the budget alert of budget %s", budget_id)
