"""The registry of shared-state keys (gateway_project/state_keys.py): one builder per key family,
each family under a prefix of its own, so two features never count in the same key."""

from __future__ import annotations

from gateway_project import state_keys as keys


def _family(key: str) -> str:
    return key.split(":", 1)[0]


def test_every_family_has_a_prefix_of_its_own() -> None:
    """Keys built for the same ids by different families never share a prefix (an agent named
    "1" and provider 1 once met in ``rl:1:...``)."""
    built = {
        "deployment cooldown": keys.deployment_cooldown_key(1),
        "deployment failures": keys.deployment_failures_key(1),
        "provider health": keys.provider_health_key(1),
        "upstream limits": keys.upstream_limits_key(1, "m"),
        "daily requests": keys.daily_requests_key(1, "20260101"),
        "agent rate": keys.agent_rate_key("1", "requests", 1),
        "budget": keys.budget_key(1, 1, "20260101"),
        "budget alert": keys.budget_alert_key(keys.budget_key(1, 1, "20260101"), 50),
        "response cache": keys.response_cache_key("t", "d"),
        "version": keys.version_key("access"),
        "dead letters": keys.AUDIT_DEAD_LETTERS_KEY,
    }
    assert len(set(built.values())) == len(built)
    # Families that share a prefix do so on purpose (cooldowns of deployments and providers);
    # the limits an agent is held to and what upstreams report never do.
    assert _family(built["agent rate"]) != _family(built["upstream limits"])
    assert _family(built["budget"]) != _family(built["budget alert"])


def test_budget_keys_carry_their_period_and_held_counter() -> None:
    """The held reservations and the alert claims of a budget are derived from its counter's
    key, and the period can be read back from it."""
    counter = keys.budget_key(7, 123, "202601")
    assert keys.budget_period_id(counter) == "202601"
    assert keys.budget_held_key(counter).startswith(counter)
    assert keys.budget_alert_key(counter, 80).endswith(":80")


def test_cached_answers_of_a_task_type_share_a_prefix() -> None:
    """Clearing a task type's answers scans one prefix, within the response cache's."""
    key = keys.response_cache_key("summarize", "abc")
    assert key.startswith(keys.task_type_answers_prefix("summarize"))
    assert key.startswith(keys.RESPONSE_CACHE_PREFIX)
    assert not key.startswith(keys.task_type_answers_prefix("summ"))
