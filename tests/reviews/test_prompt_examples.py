"""Reviewed answers become few-shot examples of their task type's prompt template."""

from __future__ import annotations

import httpx
from factories import new_api_key, sim_setup
from review_helpers import queued_item, reviewer

from reviews.services import review_item_decide
from routing.config import build_snapshot, routing_config_changed
from routing.models import PromptTemplate


def test_template_puts_system_prompt_and_reviewed_examples_first(transactional_db):
    """Corrected and approved answers (not rejected ones) follow the system prompt, oldest first."""
    PromptTemplate.objects.create(
        task_type="invoice",
        system_prompt="Answer with JSON.",
        include_examples=True,
        max_examples=2,
    )
    first = queued_item(prompt="user: Total of invoice 1?", output='{"total": 1}')
    second = queued_item(prompt="system: Be brief.\nuser: Total of invoice 2?", output="bad")
    third = queued_item(prompt="user: Total of invoice 3?", output="worse")
    rita = reviewer()
    review_item_decide(item_id=first.pk, actor=rita, decision="approve")
    review_item_decide(
        item_id=second.pk, actor=rita, decision="correct", corrected_output='{"total": 2}'
    )
    review_item_decide(item_id=third.pk, actor=rita, decision="reject", reason="wrong")
    prefix = build_snapshot("test").prompt_prefixes["invoice"]
    assert [(m.role, m.content) for m in prefix] == [
        ("system", "Answer with JSON."),
        ("user", "Total of invoice 1?"),
        ("assistant", '{"total": 1}'),
        ("user", "Total of invoice 2?"),
        ("assistant", '{"total": 2}'),
    ]


def test_template_reaches_the_upstream(gateway, simulator):
    """With a template, the upstream receives the longer prompt (more input tokens)."""
    sim_setup(simulator.url)
    key = new_api_key()

    def tokens_in(task_type: str) -> int:
        body = httpx.post(
            f"{gateway.url}/v1/completion",
            json={"input": "Explain tides", "task_type": task_type},
            headers={"Authorization": f"Bearer {key}"},
        ).json()
        return int(body["tokens"]["in"])

    plain = tokens_in("notes")
    PromptTemplate.objects.create(task_type="notes", system_prompt="Write short notes. " * 20)
    routing_config_changed()
    assert tokens_in("notes") > plain + 50
