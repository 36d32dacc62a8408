"""The state of one simulator: model configs (knobs), failure and rate-limit counters, the
outage, and call statistics; the aiohttp app holds it under :data:`SIMULATOR`."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Mapping
from typing import Final

from aiohttp import web

from .dialect import Dialect, now_rfc3339
from .knobs import DEFAULT_KNOBS, KnobError, Knobs, as_int, make_knobs, parse_knobs
from .ratelimits import Budget

PROTOCOLS: Final = ("openai", "ollama", "anthropic", "gemini")


class Simulator:
    """Mutable state of one simulator: model configs, failure counters and call statistics."""

    def __init__(
        self,
        models: Mapping[str, Mapping[str, object]] | None = None,
        require_key: str | None = None,
    ) -> None:
        self.require_key = require_key or None
        # Start-up configuration, restored by POST /_sim/reset.
        self._initial = {name: parse_knobs(cfg) for name, cfg in (models or {}).items()}
        self._ids = itertools.count(1)
        self.started_iso = now_rfc3339()
        self.started = int(time.time())
        self.reset()

    def reset(self) -> None:
        """Back to the start-up model configs, with every counter at zero."""
        self.configs: dict[str, dict[str, object]] = {k: dict(v) for k, v in self._initial.items()}
        self._knobs: dict[str, Knobs] = {k: make_knobs(v) for k, v in self.configs.items()}
        self.failures: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.wrong: Counter[str] = Counter()  # plausibly wrong answers served, per model
        self.rate_limited: Counter[str] = Counter()  # 429 answers, per model
        # Tokens of the answers served, per model: what a real upstream would bill.
        self.tokens_in: Counter[str] = Counter()
        self.tokens_out: Counter[str] = Counter()
        # Per model: the knobs its budgets were made for, and its "requests"/"tokens" budgets.
        self.budgets: dict[str, tuple[tuple[object, ...], dict[str, Budget]]] = {}
        self.by_protocol: dict[str, int] = dict.fromkeys(PROTOCOLS, 0)
        self.seen: set[str] = set()
        # An outage: the status every provider endpoint of these protocols answers; None: up.
        self.outage: tuple[int, frozenset[str]] | None = None

    def set_outage(self, raw: Mapping[str, object]) -> dict[str, object]:
        """Start an outage: ``status`` (5xx or 4xx, default 503) for ``protocols`` (default
        all); raises :class:`KnobError` on anything else."""
        unknown = set(raw) - {"status", "protocols"}
        if unknown:
            raise KnobError(f"unknown outage field(s): {', '.join(sorted(unknown))}")
        status = as_int("status", raw.get("status", 503), 400, 599)
        protocols = raw.get("protocols", list(PROTOCOLS))
        if (
            not isinstance(protocols, list)
            or not protocols
            or not all(isinstance(p, str) and p in PROTOCOLS for p in protocols)
        ):
            raise KnobError(f"protocols: a non-empty list of {', '.join(PROTOCOLS)}")
        self.outage = (status, frozenset(str(p) for p in protocols))
        return self.outage_info()

    def outage_info(self) -> dict[str, object]:
        if self.outage is None:
            return {"outage": None}
        status, protocols = self.outage
        return {"outage": {"status": status, "protocols": sorted(protocols)}}

    def outage_status(self, protocol: str) -> int | None:
        """The status an endpoint of ``protocol`` answers during an outage (None: no outage)."""
        outage = self.outage
        if outage is None or protocol not in outage[1]:
            return None
        return outage[0]

    def configure(self, model: str, knobs: Mapping[str, object]) -> dict[str, object]:
        """Replace ``model``'s config (validated) and restart its ``fail_times`` count."""
        config = parse_knobs(knobs)
        self.configs[model] = config
        self._knobs[model] = make_knobs(config)
        self.failures.pop(model, None)
        self.budgets.pop(model, None)
        return config

    def unconfigure(self, model: str) -> bool:
        """Forget ``model``'s config; returns whether there was one."""
        self._knobs.pop(model, None)
        self.failures.pop(model, None)
        self.budgets.pop(model, None)
        return self.configs.pop(model, None) is not None

    def knobs_for(self, model: str, overrides: Mapping[str, object]) -> Knobs:
        """Effective knobs: defaults, then the model's config, then the request's directives."""
        base = self._knobs.get(model, DEFAULT_KNOBS)
        if not overrides:
            return base
        return make_knobs({**self.configs.get(model, {}), **overrides})

    def next_id(self) -> int:
        """A number for the next answer's id (counting from 1 since start)."""
        return next(self._ids)

    def known_models(self) -> list[str]:
        """Configured models plus every model a request has named."""
        return sorted(self.seen.union(self.configs))

    def authorized(self, request: web.Request) -> bool:
        """Whether the request carries the required key in any provider's usual place."""
        key = self.require_key
        if key is None:
            return True
        headers = request.headers
        return (
            headers.get("Authorization") == f"Bearer {key}"
            or headers.get("x-api-key") == key
            or headers.get("x-goog-api-key") == key
            or request.query.get("key") == key
        )

    def failure_status(self, model: str, knobs: Knobs) -> int | None:
        """The error status this request must get, if any (honouring ``fail_times``)."""
        status = knobs.status
        if status is None or status == 200:
            return None
        if knobs.fail_times is not None:
            if self.failures[model] >= knobs.fail_times:
                return None
            self.failures[model] += 1
        return status

    def stats(self) -> dict[str, object]:
        """Calls per model and per protocol, wrong answers, 429 answers and the tokens of the
        answers served per model, since start or the last reset."""
        return {
            "calls": dict(self.calls),
            "by_protocol": dict(self.by_protocol),
            "wrong": dict(self.wrong),
            "rate_limited": dict(self.rate_limited),
            "tokens": {
                model: {"in": self.tokens_in[model], "out": self.tokens_out[model]}
                for model in self.tokens_in
            },
        }

    def budgets_for(self, model: str, knobs: Knobs, now: float) -> dict[str, Budget]:
        """The model's rate-limit budgets (made, or made again when their knobs changed),
        refreshed to ``now``; empty when the model has no rate limit."""
        spec = (
            knobs.ratelimit_requests,
            knobs.ratelimit_tokens,
            knobs.ratelimit_window_s,
            knobs.ratelimit_style,
        )
        held = self.budgets.get(model)
        if held is None or held[0] != spec:
            fixed = knobs.ratelimit_style == "cerebras"
            budgets = {
                kind: Budget(capacity, knobs.ratelimit_window_s, fixed, float(capacity), now)
                for kind, capacity in (
                    ("requests", knobs.ratelimit_requests),
                    ("tokens", knobs.ratelimit_tokens),
                )
                if capacity is not None
            }
            held = self.budgets[model] = (spec, budgets)
        for budget in held[1].values():
            budget.refresh(now)
        return held[1]


SIMULATOR: Final = web.AppKey("simulator", Simulator)


def simulator_of(request: web.Request) -> Simulator:
    """The state of the simulator serving ``request``."""
    return request.app[SIMULATOR]


def refused(request: web.Request, dialect: Dialect) -> web.Response | None:
    """The error a provider endpoint answers before anything else: the outage's status, or a
    401 without the required key (None: go ahead)."""
    sim = request.app[SIMULATOR]
    if (down := sim.outage_status(dialect.name)) is not None:
        return dialect.error(down)
    if not sim.authorized(request):
        return dialect.error(401)
    return None
