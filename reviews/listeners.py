"""What the review queue listens to in routing (routing/hooks.py), registered at start
(``ReviewsConfig.ready``): reviews sits above routing, which never imports it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from routing.hooks import AUDIT_ROWS_FOR_REVIEW, COMPLETION_REVIEW, PROMPT_EXAMPLES

from .selectors import examples_for, verdict_for_request
from .services import review_items_create


def queue_for_review(rows: Sequence[Mapping[str, Any]]) -> int:
    """Audit rows with a ``review_reason`` get their review item, in the writer's transaction."""
    return review_items_create(rows=rows)


def completion_review(request_id: str) -> dict[str, Any] | None:
    """A completion's review for ``GET /v1/completion/{id}``."""
    return verdict_for_request(request_id=request_id)


def prompt_examples(task_type: str, limit: int) -> list[tuple[str, str]]:
    """Reviewed answers as few-shot examples of a task type's prompt template."""
    return examples_for(task_type=task_type, limit=limit)


def register() -> None:
    AUDIT_ROWS_FOR_REVIEW.register(queue_for_review)
    COMPLETION_REVIEW.register(completion_review)
    PROMPT_EXAMPLES.register(prompt_examples)
