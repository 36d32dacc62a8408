"""What routing tells the apps above it (docs/adr/0017-layers.md).

Routing sits below reviews and learning and imports neither; these are the three things it needs
from them, each a typed hook that the upper app fills in its ``AppConfig.ready()``:

- ``AUDIT_ROWS_FOR_REVIEW``: audit rows carrying a ``review_reason`` are being written. Called in
  the audit writer's transaction, so a review item exists exactly when its record does (the
  review queue: ``reviews.services.review_items_create``).
- ``COMPLETION_REVIEW``: the review of a completion, for ``GET /v1/completion/{id}``:
  ``{"review": {...}}``, or None when it was not sent to review.
- ``PROMPT_EXAMPLES``: a task type's latest reviewed answers as (input, output) pairs, newest
  first, for its prompt template's few-shot examples (read when the routing snapshot is built).

With no listener (reviews not installed), nothing is queued, no completion has a review and no
template has examples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway_project.hooks import Hook

AuditRowsListener = Callable[[Sequence[Mapping[str, Any]]], object]
CompletionReviewListener = Callable[[str], dict[str, Any] | None]
PromptExamplesListener = Callable[[str, int], list[tuple[str, str]]]

AUDIT_ROWS_FOR_REVIEW: Hook[AuditRowsListener] = Hook("audit rows for review")
COMPLETION_REVIEW: Hook[CompletionReviewListener] = Hook("completion review")
PROMPT_EXAMPLES: Hook[PromptExamplesListener] = Hook("prompt examples")


def audit_rows_for_review(rows: Sequence[Mapping[str, Any]]) -> None:
    """Tell the listeners about rows to review (call inside the audit writer's transaction)."""
    for listener in AUDIT_ROWS_FOR_REVIEW.listeners:
        listener(rows)


def completion_review(request_id: str) -> dict[str, Any] | None:
    """The first listener's ``{"review": {...}}`` for this request, or None."""
    for listener in COMPLETION_REVIEW.listeners:
        found = listener(request_id)
        if found is not None:
            return found
    return None


def prompt_examples(task_type: str, limit: int) -> list[tuple[str, str]]:
    """Up to ``limit`` reviewed (input, output) pairs of a task type, newest first."""
    examples: list[tuple[str, str]] = []
    for listener in PROMPT_EXAMPLES.listeners:
        examples += listener(task_type, limit - len(examples))
        if len(examples) >= limit:
            break
    return examples[:limit]
