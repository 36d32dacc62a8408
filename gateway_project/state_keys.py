"""Every key of the shared state (gateway_project/shared_state.py), built in one place.

The request path, ``/health``, the admin and the background loops of several apps read and write
the same keys; each key family is built here, once, so a reader can never ask for a key its writer
spells differently. Each family has a prefix of its own (``"rate:"`` for agents' rate limits is not
``"uplimit:"`` for what upstreams report), and every key lives under ``SHARED_STATE_NAMESPACE`` in
Redis. The state is ephemeral (counters, cooldowns, caches): a renamed key only starts empty.
See docs/adr/0008-embedded-defaults-and-shared-state.md and docs/adr/0017-layers.md.
"""

from __future__ import annotations

SHARED_STATE_NAMESPACE = "gw:"
"""Put before every key in Redis, so the gateway's keys are told apart from anything else there."""

# --- routing: cooldowns and the circuit breaker (docs/adr/0002) ------------------------------------


def deployment_cooldown_key(deployment_id: int) -> str:
    """Present while a deployment cools down; the value is when it ends (epoch seconds)."""
    return f"cool:d:{deployment_id}"


def provider_cooldown_key(provider_id: int) -> str:
    """Present while a provider cools down (its key was rejected); the value says why."""
    return f"cool:p:{provider_id}"


def deployment_failures_key(deployment_id: int) -> str:
    """A deployment's recent failures, counted towards the circuit breaker's threshold."""
    return f"fail:d:{deployment_id}"


# --- providers: background health checks -------------------------------------------------------


HEALTH_CHECK_CLAIM_KEY = "health:claim"
"""Claimed by the one process that probes the providers this interval."""


def provider_health_key(provider_id: int) -> str:
    """The last health check's report of a provider (JSON), for ``/health`` and the admin."""
    return f"health:p:{provider_id}"


def provider_failed_checks_key(provider_id: int) -> str:
    """How many health checks of a provider failed in a row (absent: none)."""
    return f"health:fails:p:{provider_id}"


# --- providers: upstream quotas (docs/adr/0011) ------------------------------------------------


def upstream_limits_key(provider_id: int, upstream_model: str) -> str:
    """What an upstream's rate-limit headers last said about one of its models (RateLimits)."""
    return f"uplimit:{provider_id}:{upstream_model}"


def daily_requests_key(provider_id: int, day: str) -> str:
    """A provider's calls on one UTC day (``YYYYMMDD``), for its declared daily quota."""
    return f"dq:p:{provider_id}:{day}:r"


def daily_tokens_key(provider_id: int, day: str) -> str:
    """A provider's tokens on one UTC day, for its declared daily token quota."""
    return f"dq:p:{provider_id}:{day}:t"


# --- agents: rate limits and budgets (docs/adr/0012) -------------------------------------------


def agent_rate_key(agent: str, counted: str, window: int) -> str:
    """An agent's ``requests`` or ``tokens`` in one minute window (epoch minutes)."""
    return f"rate:{agent}:{counted}:{window}"


def budget_key(budget_id: int, revision: int, period_id: str) -> str:
    """A budget's spend plus reservations in one period (``YYYYMMDD`` or ``YYYYMM``), nano-USD."""
    return f"budget:{budget_id}:{revision}:{period_id}"


def budget_period_id(budget_counter_key: str) -> str:
    """The period a ``budget_key`` counts."""
    return budget_counter_key.rsplit(":", 1)[1]


def budget_held_key(budget_counter_key: str) -> str:
    """The reservations of requests in flight within a budget's counter: the counter minus this
    is the settled spend."""
    return budget_counter_key + ":held"


def budget_alert_key(budget_counter_key: str, threshold: int) -> str:
    """Claimed by the process that raises a budget's alert at ``threshold`` percent, once."""
    return f"alert:{budget_counter_key}:{threshold}"


# --- routing: the response cache (docs/adr/0010) -----------------------------------------------

RESPONSE_CACHE_PREFIX = "rc:"
"""Every cached answer's key starts with this."""


def response_cache_key(task_type: str, digest: str) -> str:
    """A cached answer: ``rc:<task type>:<sha256>``, so a task type's answers can be cleared."""
    return f"{task_type_answers_prefix(task_type)}{digest}"


def task_type_answers_prefix(task_type: str) -> str:
    """What the keys of one task type's cached answers start with."""
    return f"{RESPONSE_CACHE_PREFIX}{task_type}:"


# --- versions and counts the processes watch -------------------------------------------------


def version_key(name: str) -> str:
    """A version token (``gateway_project.versions``): the routing configuration, access."""
    return f"version:{name}"


AUDIT_DEAD_LETTERS_KEY = "audit:dead_letters"
"""How many audit dead letters wait, as ``/health`` shows it (dropped whenever it changes)."""
