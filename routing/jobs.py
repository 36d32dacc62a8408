"""A completion request on its way through the pipeline, and what it ends with.

The views build a :class:`CompletionJob`; the pipeline (``routing.services``) and the response
cache (``routing.cache``) both work on it, so it lives here, below both of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone

from agents.limits import Admission
from agents.selectors import Caller
from providers.base import ChatRequest, ChatResult, Usage
from scoring.validators import Confidence

from .billing import Bill
from .classify import Classification
from .config import Deployment

# What the response cache's use by a request can be (``RequestCache.state``).
HIT, MISS, BYPASS = "hit", "miss", "bypass"


@dataclass(slots=True)
class Answer:
    """One answer and how good the validators found it."""

    result: ChatResult
    deployment: Deployment
    usage: Usage
    confidence: Confidence


@dataclass(slots=True)
class Outcome:
    """What a request ends with: the best answer, its gate, and everything it took."""

    best: Answer
    status: str
    attempts: list[dict[str, Any]]
    cost_usd: float
    tokens_in: int
    tokens_out: int
    escalations: int
    review_reason: str


@dataclass(slots=True)
class RequestCache:
    """One request's use of the cache: what it asked for, then what the pipeline did."""

    read: bool = True  # Cache-Control: no-cache / no-store turn it off
    store: bool = True  # no-store turns it off
    max_age_s: int | None = None  # accept only an entry at most this old
    ttl_s: int | None = None  # keep this answer this long (instead of the task type's TTL)
    project_scope: bool = False
    # Set by the pipeline.
    state: str = BYPASS
    key: str = ""
    scope: str = ""
    store_ttl_s: int = 0
    hit: Outcome | None = None
    hit_from: str = ""


@dataclass
class CompletionJob:
    """One request, validated and normalised, on its way through the router."""

    endpoint: str
    request_id: str
    caller: Caller
    declared_caller: str
    chat: ChatRequest
    deadline: float
    requested_model: str = ""
    tier: str = ""
    task_type: str = ""
    stream: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    started_at: datetime = field(default_factory=timezone.now)
    started: float = field(default_factory=time.monotonic)
    classification: Classification | None = None
    # What is sent upstream: the caller's messages, after the task type's prompt template.
    upstream_chat: ChatRequest | None = None
    # The request's place in its caller's rate limits and budgets, settled when it ends (None
    # for a caller without limits; ``admitted`` says whether admission has happened).
    admission: Admission | None = None
    admitted: bool = False
    # Every upstream call made for the request, with its tokens and cost (routing/billing.py).
    bill: Bill = field(default_factory=Bill)
    # The deployments the agreement validator's second opinion may come from (none: no opinion).
    second_opinion_plan: list[Deployment] = field(default_factory=list)
    # What the request asked of the response cache, and what came of it (routing/cache.py).
    cache: RequestCache = field(default_factory=RequestCache)

    @property
    def request(self) -> ChatRequest:
        return self.upstream_chat or self.chat

    @property
    def prompt_text(self) -> str:
        return "\n".join(f"{m.role}: {m.content}" for m in self.chat.messages)

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.chat.messages):
            if message.role == "user":
                return message.content
        return self.chat.messages[-1].content if self.chat.messages else ""
