"""Naming the task type of an input: admin rules first, then (optionally) a cheap model."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from django.conf import settings

from providers.base import ChatRequest, Message

from .config import RoutingSnapshot

logger = logging.getLogger(__name__)

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


async def classify_by_model(snapshot: RoutingSnapshot, text: str) -> Classification | None:
    """Ask the configured classifier model to pick one of the known task types."""
    model = settings.GATEWAY["CLASSIFIER_MODEL"]
    known = sorted(t for t in snapshot.task_routes if t != "default")
    if not model or not known or model not in snapshot.by_public_name:
        return None
    from . import router

    prompt = (
        "Classify the request below into exactly one of these task types: "
        + ", ".join(known)
        + ". Answer with the task type only.\n\nRequest:\n"
        + text[:4000]
    )
    request = ChatRequest(messages=(Message("user", prompt),), max_tokens=10, temperature=0)
    plan = list(snapshot.by_public_name[model])
    try:
        done = await router.complete(plan, request, deadline=time.monotonic() + 10)
    except router.RoutingError as exc:
        logger.warning("classifier model %s failed: %s", model, exc.message)
        return None
    answer = done.result.text.strip().lower()
    for task_type in known:
        if re.search(rf"\b{re.escape(task_type)}\b", answer):
            return Classification(task_type, "model", f"{model} answered {answer[:40]!r}")
    return None


async def classify(snapshot: RoutingSnapshot, text: str) -> Classification:
    """The task type for an input that named none."""
    found = classify_by_rules(snapshot, text) or await classify_by_model(snapshot, text)
    return found or Classification(settings.GATEWAY["DEFAULT_TASK_TYPE"], "default")


def valid_task_type(value: str) -> bool:
    return bool(_TASK_TYPE.fullmatch(value))
