"""The response cache: an approved answer served again to the same question, without upstream calls.

A request's key is the SHA-256 of a canonical encoding of its scope (the agent, or the agent's
project when the request asks for it) and everything that changes the answer: the requested model
or tier, the task type and its prompt template, the messages, the sampling parameters, the stop
sequences, the response format and the language. Entries live in the shared state (Redis with a TTL when configured, a
size-bounded dictionary of the process otherwise) for the task type's TTL. Only answers whose gate
says ``approved`` are stored; a reviewer's rejection or correction removes the entry the answer
created. A hit is answered and audited like any request, at no cost, and is never sampled for
review (its answer was gated, and maybe reviewed, as its source request).

The pipeline (``routing.services``) calls ``lookup`` once the task type is known and before any
upstream call, and ``completed`` with the audit row of every answered request.
See docs/adr/0010-response-cache.md.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import re
import time
from collections.abc import AsyncGenerator, Coroutine, Iterable, Mapping
from typing import Any

import orjson
from django.conf import settings

from gateway_project.api_errors import GatewayError
from gateway_project.shared_state import shared_state
from gateway_project.state_keys import (
    RESPONSE_CACHE_PREFIX,
    response_cache_key,
    task_type_answers_prefix,
)
from providers.base import ChatResult, Message, StreamChunk, Target, Usage
from scoring.gates import APPROVED
from scoring.validators import Confidence
from scoring.validators.base import ValidatorResult

from . import metrics, router
from .config import Deployment, RoutingSnapshot
from .jobs import BYPASS, HIT, MISS, Answer, CompletionJob, Outcome, RequestCache
from .models import AuditRecord

logger = logging.getLogger(__name__)

SCOPE_AGENT, SCOPE_PROJECT = "agent", "project"
# Bumped when the key material or the entry format changes: old entries are then never read.
FORMAT = 1

TTL_HEADER = "X-Gateway-Cache-TTL"
SCOPE_HEADER = "X-Gateway-Cache-Scope"
_SECONDS = re.compile(r"[0-9]{1,10}")


class CacheDirectiveError(GatewayError):
    """A cache header (or body field) the gateway cannot read: 400 ``invalid_field`` naming it."""

    def __init__(self, param: str, problem: str) -> None:
        super().__init__(
            f"Invalid request: {problem}",
            http_status=400,
            code="invalid_field",
            param=param,
            extra={"fields": {param: problem}},
        )


# --- what a request asks for -----------------------------------------------------------------


def _seconds(param: str, text: str, *, maximum: int | None = None) -> int:
    value = int(text) if _SECONDS.fullmatch(text) else -1
    if value < 0 or (maximum is not None and value > maximum):
        bound = f" from 0 to {maximum}" if maximum is not None else ""
        raise CacheDirectiveError(param, f"{param} must be a whole number of seconds{bound}.")
    return value


def request_cache(
    headers: Mapping[str, str], *, ttl_s: int | None = None, scope: str = ""
) -> RequestCache:
    """A request's cache directives: ``Cache-Control`` (``no-cache``, ``no-store``,
    ``max-age=N``), ``X-Gateway-Cache-TTL: N`` and ``X-Gateway-Cache-Scope: agent|project``.
    ``ttl_s`` and ``scope`` (the native body's ``cache_ttl`` and ``cache_scope``, already
    validated) win over the headers. Other ``Cache-Control`` directives are ignored, as HTTP
    caches ignore the ones they do not implement. Raises ``CacheDirectiveError``."""
    use = RequestCache()
    for directive in headers.get("Cache-Control", "").split(","):
        name, _, value = directive.partition("=")
        name = name.strip().lower()
        if name == "no-store":
            use.read = use.store = False
        elif name == "no-cache":
            use.read = False
        elif name == "max-age":
            use.max_age_s = _seconds("Cache-Control", value.strip().strip('"'))
    header_ttl = headers.get(TTL_HEADER)
    if header_ttl is not None:
        header_ttl_s = _seconds(
            TTL_HEADER, header_ttl.strip(), maximum=settings.GATEWAY["CACHE_MAX_TTL_S"]
        )
        use.ttl_s = header_ttl_s if ttl_s is None else ttl_s
    else:
        use.ttl_s = ttl_s
    header_scope = headers.get(SCOPE_HEADER)
    if header_scope is not None and header_scope.strip().lower() not in (
        SCOPE_AGENT,
        SCOPE_PROJECT,
    ):
        raise CacheDirectiveError(SCOPE_HEADER, f"{SCOPE_HEADER} must be agent or project.")
    use.project_scope = (scope or (header_scope or "").strip().lower()) == SCOPE_PROJECT
    return use


# --- keys and lookups --------------------------------------------------------------------------


def _number(value: float | None) -> float | None:
    return None if value is None else float(value)  # 1 and 1.0 are one temperature


@functools.lru_cache(maxsize=256)
def _prompt_digest(prefix: tuple[Message, ...]) -> str:
    """A task type's prompt template (system prompt, few-shot examples), hashed once per version."""
    return hashlib.sha256(orjson.dumps([[m.role, m.content] for m in prefix])).hexdigest()


def cache_key(
    job: CompletionJob, *, scope: str, model: str, tier: str, prefix: tuple[Message, ...] = ()
) -> str:
    """The shared-state key of a request's answer (``model`` and ``tier`` as routing read them:
    an alias in ``model`` is a tier, ``auto`` is neither; ``prefix`` is the task type's prompt
    template, put before the messages upstream)."""
    chat = job.chat
    material = {
        "format": FORMAT,
        "scope": scope,
        "model": model,
        "tier": tier,
        "task_type": job.task_type,
        "prompt": _prompt_digest(prefix) if prefix else "",
        "messages": [[m.role, m.content] for m in chat.messages],
        "temperature": _number(chat.temperature),
        "top_p": _number(chat.top_p),
        "max_tokens": chat.max_tokens,
        "stop": list(chat.stop),
        "response_format": chat.response_format,
        # What the language validator checks the answer against (the native API's language also
        # adds a system message, which the messages carry).
        "language": str(job.metadata.get("language") or "").strip().lower(),
    }
    digest = hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return response_cache_key(job.task_type, digest)


def _scope(job: CompletionJob) -> str:
    """``agent:<name>``; ``project:<name>`` when asked for and the agent belongs to a project
    (an agent without one keeps its own scope: nothing is shared by accident)."""
    if job.cache.project_scope:
        project = str(getattr(job.caller, "project", "") or "")
        if project:
            job.cache.scope = SCOPE_PROJECT
            return f"{SCOPE_PROJECT}:{project}"
    job.cache.scope = SCOPE_AGENT
    return f"{SCOPE_AGENT}:{job.caller.agent}"


def _counted(use: RequestCache, state: str) -> None:
    use.state = state
    metrics.CACHE_LOOKUPS.labels(state).inc()


async def lookup(
    job: CompletionJob, snapshot: RoutingSnapshot, *, model: str, tier: str
) -> Outcome | None:
    """The cached outcome of this request, or None (then ``job.cache`` says whether and how long
    its answer may be stored). At most one shared-state read; none when the cache is bypassed."""
    use = job.cache
    ttl = snapshot.cache_ttl_for(job.task_type) if settings.GATEWAY["CACHE_ENABLED"] else 0
    if ttl <= 0 or not (use.read or use.store):
        _counted(use, BYPASS)
        return None
    try:
        use.key = cache_key(
            job,
            scope=_scope(job),
            model=model,
            tier=tier,
            prefix=snapshot.prompt_prefixes.get(job.task_type, ()),
        )
    except orjson.JSONEncodeError:  # a response_format orjson cannot encode: not cacheable
        _counted(use, BYPASS)
        return None
    use.store_ttl_s = ttl if use.ttl_s is None else use.ttl_s
    if not use.read or use.max_age_s == 0:
        _counted(use, BYPASS)
        return None
    entry = _entry(await shared_state().aget_value(use.key))
    outcome = _outcome(entry) if entry is not None else None
    # An agent limited to some tiers gets no answer of another tier (a project scope shares).
    allowed_tiers = getattr(job.caller, "allowed_tiers", None)
    if (
        entry is None
        or outcome is None
        or (use.max_age_s is not None and time.time() - entry["at"] > use.max_age_s)
        or (allowed_tiers and outcome.best.deployment.tier not in allowed_tiers)
    ):
        _counted(use, MISS)
        return None
    use.hit, use.hit_from = outcome, entry["id"]
    _counted(use, HIT)
    return outcome


def _entry(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        entry = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if (
        not isinstance(entry, dict)
        or entry.get("format") != FORMAT
        or entry.get("status") != APPROVED
        or not isinstance(entry.get("id"), str)
        or not isinstance(entry.get("at"), int | float)
    ):
        return None
    return entry


def _served_by(entry: Mapping[str, Any]) -> Deployment:
    """A stand-in for the deployment that gave the answer: its names, and no price (a hit costs
    nothing; the deployment may even be gone from the configuration by now)."""
    return Deployment(
        id=0,
        public_name=str(entry["model"]),
        upstream_model="",
        tier=str(entry["tier"]),
        provider_id=0,
        provider_name=str(entry["provider"]),
        provider_kind="",
        is_local=False,
        target=Target(base_url="", upstream_model=""),
        input_cost_per_token=0.0,
        output_cost_per_token=0.0,
        context_window=0,
        weight=0,
        max_concurrent=0,
        has_credentials=False,
    )


def _outcome(entry: Mapping[str, Any]) -> Outcome | None:
    try:
        usage = Usage(int(entry["tokens_in"]), int(entry["tokens_out"]))
        confidence = Confidence(
            score=float(entry["confidence"]),
            results=[ValidatorResult(**result) for result in entry["validation"]],
        )
        answer = Answer(
            ChatResult(str(entry["text"]), str(entry["finish_reason"]), usage),
            _served_by(entry),
            usage,
            confidence,
        )
        return Outcome(
            best=answer,
            status=str(entry["status"]),
            attempts=[],
            cost_usd=0.0,
            tokens_in=usage.input_tokens,
            tokens_out=usage.output_tokens,
            escalations=0,
            review_reason="",  # gated (and maybe reviewed) as its source request
        )
    except (KeyError, TypeError, ValueError):
        return None  # not an entry this version wrote


def replay(outcome: Outcome) -> router.OpenStream:
    """A cached answer as a stream: the text in one chunk, then the finish reason and usage."""
    best = outcome.best

    async def rest() -> AsyncGenerator[StreamChunk, None]:
        yield StreamChunk(finish_reason=best.result.finish_reason or "stop", usage=best.usage)

    return router.OpenStream(
        deployment=best.deployment,
        first=StreamChunk(text=best.result.text),
        chunks=rest(),
        attempts=[],
    )


# --- after the answer ------------------------------------------------------------------------

_writes: set[asyncio.Task[None]] = set()


def _in_background(write: Coroutine[Any, Any, None]) -> None:
    """Run a write after the response is on its way; the request does not wait for it."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        write.close()  # no event loop (sync code): caching is for the request path only
        return
    task = loop.create_task(write)
    _writes.add(task)
    task.add_done_callback(_write_done)


def _write_done(task: asyncio.Task[None]) -> None:
    _writes.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.warning("response cache: write failed: %r", task.exception())


def completed(job: CompletionJob, outcome: Outcome, status: str, row: dict[str, Any]) -> None:
    """With the audit row of an answered request (before it is queued): mark a hit's record, or
    store an approved answer and note its key in the record, so a reviewer's rejection finds it."""
    use = job.cache
    metadata: dict[str, Any] = row["metadata"]
    if use.hit is not None:
        # What this request did: it tried no tier, used no model's tokens and scored nothing (its
        # source did). The learning cycles, which measure gates and tiers on answered records with
        # a confidence, and the token counts of rollups and limits leave it out. (The response
        # still reports the answer's usage, confidence and tier.)
        row.update(tier="", confidence=None, validation=[], tokens_in=0, tokens_out=0)
        metadata["cache"] = {"hit": True, "from": use.hit_from}
        return
    metadata.pop("cache", None)  # the gateway's own key: never what a caller sent
    if status != APPROVED or not use.store or not use.key or use.store_ttl_s <= 0:
        return
    best = outcome.best
    entry = orjson.dumps(
        {
            "format": FORMAT,
            "id": job.request_id,
            "at": time.time(),
            "text": best.result.text,
            "finish_reason": best.result.finish_reason,
            "tokens_in": best.usage.input_tokens,
            "tokens_out": best.usage.output_tokens,
            "model": best.deployment.public_name,
            "provider": best.deployment.provider_name,
            "tier": best.deployment.tier,
            "confidence": best.confidence.score,
            "status": status,
            "validation": [result.as_dict() for result in best.confidence.results],
        }
    )
    if len(entry) > settings.GATEWAY["CACHE_MAX_ENTRY_BYTES"]:
        metrics.CACHE_WRITES.labels("too_large").inc()
        return
    metadata["cache"] = {"key": use.key, "ttl_s": use.store_ttl_s, "scope": use.scope}
    _in_background(shared_state().aset_value(use.key, entry.decode(), use.store_ttl_s))
    metrics.CACHE_WRITES.labels("stored").inc()


# --- eviction ------------------------------------------------------------------------------------


def evict_answer(request_id: str) -> bool:
    """Remove the cached answer ``request_id`` created, if it is still the one cached under its
    key (a reviewer rejected or corrected it). Sync: called after a review decision commits."""
    metadata = (
        AuditRecord.objects.filter(request_id=request_id).values_list("metadata", flat=True).first()
    )
    info = metadata.get("cache") if isinstance(metadata, dict) else None
    key = info.get("key") if isinstance(info, dict) else None
    if not isinstance(key, str) or not key.startswith(RESPONSE_CACHE_PREFIX):
        return False
    state = shared_state()
    entry = _entry(state.get_value(key))
    if entry is None or entry.get("id") != request_id:
        return False  # expired, or a newer answer took the key: that one stays
    state.delete_values(key)
    metrics.CACHE_WRITES.labels("evicted").inc()
    logger.info("response cache: removed the answer of %s after its review", request_id)
    return True


def clear(task_types: Iterable[str] | None = None) -> int:
    """Remove the cached answers of these task types (all when None); returns how many."""
    prefixes = (
        [RESPONSE_CACHE_PREFIX]
        if task_types is None
        else [task_type_answers_prefix(t) for t in task_types]
    )
    state = shared_state()
    removed = sum(state.delete_values_matching(prefix) for prefix in prefixes)
    metrics.CACHE_WRITES.labels("cleared").inc(removed)
    return removed
