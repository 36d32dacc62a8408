"""Routing's upward news goes through typed hooks (routing/hooks.py) that the review queue fills
in its AppConfig.ready(): routing itself never imports reviews (docs/adr/0017-layers.md)."""

from __future__ import annotations

import pytest

from gateway_project.hooks import Hook
from reviews import listeners
from routing import hooks


def test_the_review_queue_listens_once_started():
    """Once the apps are loaded, each hook has the review queue's listener, registered once."""
    assert hooks.AUDIT_ROWS_FOR_REVIEW.listeners == (listeners.queue_for_review,)
    assert hooks.COMPLETION_REVIEW.listeners == (listeners.completion_review,)
    assert hooks.PROMPT_EXAMPLES.listeners == (listeners.prompt_examples,)
    listeners.register()  # a second registration changes nothing
    assert len(hooks.PROMPT_EXAMPLES.listeners) == 1


def test_without_listeners_routing_goes_on_alone(monkeypatch: pytest.MonkeyPatch):
    """No review queue: nothing to queue, no completion has a review, no template examples."""
    monkeypatch.setattr(hooks, "AUDIT_ROWS_FOR_REVIEW", Hook("audit rows for review"))
    monkeypatch.setattr(hooks, "COMPLETION_REVIEW", Hook("completion review"))
    monkeypatch.setattr(hooks, "PROMPT_EXAMPLES", Hook("prompt examples"))
    hooks.audit_rows_for_review([{"request_id": "call-1", "review_reason": "sampled"}])
    assert hooks.completion_review("call-1") is None
    assert hooks.prompt_examples("code", 3) == []


def test_examples_stop_at_the_limit(monkeypatch: pytest.MonkeyPatch):
    """Several sources of examples together never give more than the template's maximum, and
    each is asked only for what is still missing."""
    asked: list[int] = []

    def two(task_type: str, limit: int) -> list[tuple[str, str]]:
        asked.append(limit)
        return [("q1", "a1"), ("q2", "a2")][:limit]

    def one(task_type: str, limit: int) -> list[tuple[str, str]]:
        asked.append(limit)
        return [("q3", "a3")]

    hook: Hook[hooks.PromptExamplesListener] = Hook("prompt examples")
    hook.register(two)
    hook.register(one)
    monkeypatch.setattr(hooks, "PROMPT_EXAMPLES", hook)
    assert hooks.prompt_examples("code", 3) == [("q1", "a1"), ("q2", "a2"), ("q3", "a3")]
    assert asked == [3, 1]
    asked.clear()
    assert hooks.prompt_examples("code", 2) == [("q1", "a1"), ("q2", "a2")]
    assert asked == [2]
