"""Naming the task type of an input: admin rules first, then (optionally) a cheap model.

The model is asked by the pipeline (``routing.services``), which bills the call to the request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings

from providers.base import ChatRequest, Message

from .config import Deployment, RoutingSnapshot

_TASK_TYPE = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")


@dataclass(frozen=True, slots=True)
class Classification:
    task_type: str
    method: str  # "given", "rule", "model", "default"
    detail: str = ""


def classify_by_rules(snapshot: RoutingSnapshot, text: str) -> Classification | None:
    for rule in snapshot.rules:
        match = rule.regex.search(text)
        if match:
            return Classification(rule.task_type, "rule", f"matched {match.group(0)!r}")
    return None


def _known_task_types(snapshot: RoutingSnapshot) -> list[str]:
    return sorted(t for t in snapshot.task_routes if t != "default")


def classifier_call(
    snapshot: RoutingSnapshot, text: str
) -> tuple[list[Deployment], ChatRequest] | None:
    """The call that asks the configured classifier model to pick one of the known task types
    (its deployments and the request), or None when no classifier model is configured."""
    model = settings.GATEWAY["CLASSIFIER_MODEL"]
    known = _known_task_types(snapshot)
    if not model or not known or not snapshot.by_public_name.get(model):
        return None
    prompt = (
        "Classify the request below into exactly one of these task types: "
        + ", ".join(known)
        + ". Answer with the task type only.\n\nRequest:\n"
        + text[:4000]
    )
    request = ChatRequest(messages=(Message("user", prompt),), max_tokens=10, temperature=0)
    return list(snapshot.by_public_name[model]), request


def classification_from_answer(snapshot: RoutingSnapshot, answer: str) -> Classification | None:
    """The known task type the classifier model named in its answer, if any."""
    answer = answer.strip().lower()
    model = settings.GATEWAY["CLASSIFIER_MODEL"]
    for task_type in _known_task_types(snapshot):
        if re.search(rf"\b{re.escape(task_type)}\b", answer):
            return Classification(task_type, "model", f"{model} answered {answer[:40]!r}")
    return None


def valid_task_type(value: str) -> bool:
    return bool(_TASK_TYPE.fullmatch(value))
