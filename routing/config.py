"""The routing configuration as the hot path sees it: an immutable snapshot, cached per process.

A snapshot is built from the database once and reused for every request until the config version
changes (an admin edit, an import, a learning cycle). Each process asks for the version at most every
``CONFIG_CHECK_INTERVAL_S`` seconds, so no request reads configuration from the database.

The version lives in the shared state when Redis is configured. On the embedded defaults (no
``REDIS_URL``) the shared state is per process, so the version is kept in a small file under
``DATA_DIR`` instead, which every process on the host (gateway, Celery worker, commands) reads and
writes. See docs/adr/0006-config-caching.md.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.conf import settings

from gateway_project.versions import ROUTING_CONFIG_VERSION
from providers.base import Message, Target
from providers.models import TIER_ORDER, FallbackChainEntry, ModelDeployment, Provider, Tier
from scoring.gates import GateConfig
from scoring.selectors import (
    caller_gate_configs,
    caller_validator_settings,
    gate_configs,
    validator_settings,
)
from scoring.validators import DEFAULT_SETTINGS
from scoring.validators.base import ValidatorSetting

from .hooks import prompt_examples
from .models import CallerPreference, ClassificationRule, PromptTemplate, TaskRoute

# Without Redis the version lives in a file under settings.DATA_DIR (gateway_project/versions.py).
CONFIG_VERSION_FILE = ROUTING_CONFIG_VERSION.file_name


def read_version_file() -> str:
    return ROUTING_CONFIG_VERSION.read_file()


def bump_version_file() -> None:
    ROUTING_CONFIG_VERSION.bump_file()


@dataclass(frozen=True, slots=True)
class Deployment:
    """A deployment with everything needed to call it, resolved once per snapshot."""

    id: int
    public_name: str
    upstream_model: str
    tier: str
    provider_id: int
    provider_name: str
    provider_kind: str
    is_local: bool
    target: Target
    input_cost_per_token: float
    output_cost_per_token: float
    context_window: int
    weight: int
    max_concurrent: int
    has_credentials: bool
    # The provider's declared quotas per UTC day (docs/adr/0011-upstream-quotas.md); None: none.
    daily_request_quota: int | None = None
    daily_token_quota: int | None = None

    def cost_usd(self, tokens_in: int, tokens_out: int) -> float:
        return tokens_in * self.input_cost_per_token + tokens_out * self.output_cost_per_token


@dataclass(frozen=True, slots=True)
class RouteChoice:
    """Where a request starts: a tier, or a pinned public model name."""

    start_tier: str = ""
    pinned_model: str = ""


@dataclass(frozen=True, slots=True)
class Rule:
    task_type: str
    regex: re.Pattern[str]


@dataclass(frozen=True)
class RoutingSnapshot:
    version: str
    deployments: tuple[Deployment, ...]
    by_tier: dict[str, tuple[Deployment, ...]]
    by_public_name: dict[str, tuple[Deployment, ...]]
    task_routes: dict[str, RouteChoice]
    caller_preferences: dict[tuple[str, str], RouteChoice]
    rules: tuple[Rule, ...]
    providers: dict[int, str] = field(default_factory=dict)
    default_gate: GateConfig = field(default_factory=GateConfig)
    gates: dict[str, GateConfig] = field(default_factory=dict)
    # (caller, task type) → the gate of a caller with tunables of its own; "" task: its default.
    caller_gates: dict[tuple[str, str], GateConfig] = field(default_factory=dict)
    default_validators: tuple[ValidatorSetting, ...] = ()
    validators: dict[str, tuple[ValidatorSetting, ...]] = field(default_factory=dict)
    caller_validators: dict[tuple[str, str], tuple[ValidatorSetting, ...]] = field(
        default_factory=dict
    )
    # Task type → messages put before the caller's (system prompt, reviewed few-shot examples).
    prompt_prefixes: dict[str, tuple[Message, ...]] = field(default_factory=dict)
    # Task type → response cache TTL in seconds, for the task routes that set one.
    cache_ttls: dict[str, int] = field(default_factory=dict)

    def gate_for(self, task_type: str, caller: str = "") -> GateConfig:
        if caller and self.caller_gates:
            gate = self.caller_gates.get((caller, task_type)) or self.caller_gates.get((caller, ""))
            if gate is not None:
                return gate
        return self.gates.get(task_type, self.default_gate)

    def validators_for(self, task_type: str, caller: str = "") -> tuple[ValidatorSetting, ...]:
        if caller and self.caller_validators:
            found = self.caller_validators.get((caller, task_type)) or self.caller_validators.get(
                (caller, "")
            )
            if found is not None:
                return found
        return self.validators.get(task_type, self.default_validators)

    def cache_ttl_for(self, task_type: str) -> int:
        """How long a task type's answers are cached: its route's TTL, else the default route's,
        else ``CACHE_TTL_S``; 0 means never (docs/adr/0010-response-cache.md)."""
        ttl = self.cache_ttls.get(task_type)
        if ttl is None:
            ttl = self.cache_ttls.get("default", settings.GATEWAY["CACHE_TTL_S"])
        return ttl

    @property
    def public_names(self) -> list[str]:
        return sorted(self.by_public_name)


def _compile_rule(match_type: str, pattern: str) -> re.Pattern[str] | None:
    if match_type == "regex":
        try:
            return re.compile(pattern, re.IGNORECASE)
        except re.error:
            return None  # rejected by the admin's validation; never let a bad row break routing
    words = [re.escape(w.strip()) for w in pattern.split(",") if w.strip()]
    return re.compile(r"\b(?:" + "|".join(words) + r")\b", re.IGNORECASE) if words else None


def _last_user_text(prompt: str) -> str:
    """The last user message of an audited prompt (stored as ``role: content`` lines)."""
    head, marker, tail = prompt.rpartition("user: ")
    return tail if marker and (not head or head.endswith("\n")) else prompt


def _prompt_prefixes() -> dict[str, tuple[Message, ...]]:
    """Each task type's prompt template: its system prompt, then approved and corrected
    answers from the review queue as example exchanges (docs/adr/0003; the review queue gives
    them through ``routing.hooks.PROMPT_EXAMPLES``)."""
    prefixes: dict[str, tuple[Message, ...]] = {}
    for template in PromptTemplate.objects.all():
        messages: list[Message] = []
        if template.system_prompt:
            messages.append(Message("system", template.system_prompt))
        if template.include_examples:
            # Oldest first, so the newest example is the one closest to the question.
            for prompt, answer in reversed(
                prompt_examples(template.task_type, template.max_examples)
            ):
                messages += [Message("user", _last_user_text(prompt)), Message("assistant", answer)]
        if messages:
            prefixes[template.task_type] = tuple(messages)
    return prefixes


def build_snapshot(version: str) -> RoutingSnapshot:
    """Read the whole routing configuration from the database (a handful of queries)."""
    chain_position = {
        entry.provider_id: entry.position for entry in FallbackChainEntry.objects.all()
    }
    providers = {p.id: p for p in Provider.objects.filter(enabled=True)}
    deployments: list[Deployment] = []
    for row in ModelDeployment.objects.filter(enabled=True, provider__enabled=True).order_by("id"):
        provider = providers[row.provider_id]
        api_key = provider.resolve_api_key()
        deployments.append(
            Deployment(
                id=row.id,
                public_name=row.public_name,
                upstream_model=row.upstream_model,
                tier=row.tier,
                provider_id=provider.id,
                provider_name=provider.name,
                provider_kind=provider.kind,
                is_local=provider.is_local,
                target=Target(
                    base_url=provider.base_url.rstrip("/"),
                    upstream_model=row.upstream_model,
                    api_key=api_key,
                    connect_timeout=provider.connect_timeout_s,
                    first_byte_timeout=provider.first_byte_timeout_s,
                    total_timeout=provider.total_timeout_s,
                ),
                input_cost_per_token=float(row.input_cost_per_mtok) / 1_000_000,
                output_cost_per_token=float(row.output_cost_per_mtok) / 1_000_000,
                context_window=row.context_window,
                weight=row.weight,
                max_concurrent=provider.max_concurrent_requests,
                # Local and keyless endpoints need no key; hosted ones say so by naming one.
                has_credentials=bool(api_key)
                or not (provider.api_key_env or provider.api_key_encrypted),
                daily_request_quota=provider.daily_request_quota,
                daily_token_quota=provider.daily_token_quota,
            )
        )

    def external_order(d: Deployment) -> tuple[int, int]:
        return (chain_position.get(d.provider_id, 1_000_000), d.id)

    by_tier: dict[str, tuple[Deployment, ...]] = {}
    for tier in TIER_ORDER:
        in_tier = [d for d in deployments if d.tier == tier]
        if tier == Tier.EXTERNAL:
            in_tier.sort(key=external_order)
        by_tier[tier] = tuple(in_tier)
    by_public_name: dict[str, list[Deployment]] = {}
    for d in deployments:
        by_public_name.setdefault(d.public_name, []).append(d)

    rules = []
    for rule in ClassificationRule.objects.filter(enabled=True).order_by("priority", "id"):
        compiled = _compile_rule(rule.match_type, rule.pattern)
        if compiled is not None:
            rules.append(Rule(task_type=rule.task_type, regex=compiled))

    default_gate, gates = gate_configs()
    caller_gates = caller_gate_configs()
    prompt_prefixes = _prompt_prefixes()
    default_validators, validators = validator_settings(DEFAULT_SETTINGS)
    caller_validators = caller_validator_settings(DEFAULT_SETTINGS)
    routes = list(TaskRoute.objects.all())
    return RoutingSnapshot(
        version=version,
        deployments=tuple(deployments),
        by_tier=by_tier,
        by_public_name={k: tuple(v) for k, v in by_public_name.items()},
        task_routes={r.task_type: RouteChoice(r.start_tier, r.pinned_model) for r in routes},
        cache_ttls={r.task_type: r.cache_ttl_s for r in routes if r.cache_ttl_s is not None},
        caller_preferences={
            (p.caller, p.task_type): RouteChoice(p.start_tier, p.pinned_model)
            for p in CallerPreference.objects.all()
        },
        rules=tuple(rules),
        providers={p.id: p.name for p in providers.values()},
        default_gate=default_gate,
        gates=gates,
        caller_gates=caller_gates,
        default_validators=default_validators,
        validators=validators,
        caller_validators=caller_validators,
        prompt_prefixes=prompt_prefixes,
    )


class SnapshotCache:
    """Per-process holder of the current snapshot."""

    def __init__(self) -> None:
        self._snapshot: RoutingSnapshot | None = None
        self._checked_at = 0.0

    async def get(self) -> RoutingSnapshot:
        now = time.monotonic()
        snapshot = self._snapshot
        if (
            snapshot is not None
            and now - self._checked_at < settings.GATEWAY["CONFIG_CHECK_INTERVAL_S"]
        ):
            return snapshot
        version = await ROUTING_CONFIG_VERSION.aget()
        self._checked_at = now
        if snapshot is not None and snapshot.version == version:
            return snapshot
        # Concurrent reloads after a change are harmless (same result), so no lock is held.
        fresh = await sync_to_async(build_snapshot, thread_sensitive=False)(version)
        self._snapshot = fresh
        return fresh

    def clear(self) -> None:
        self._snapshot = None
        self._checked_at = 0.0


snapshot_cache = SnapshotCache()


async def current_snapshot() -> RoutingSnapshot:
    return await snapshot_cache.get()


async def providers_to_probe() -> list[Deployment]:
    """What the background health checks probe (``providers.health``): per provider routing may
    use, its first enabled deployment that has credentials."""
    snapshot = await current_snapshot()
    first_per_provider: dict[int, Deployment] = {}
    for deployment in snapshot.deployments:
        if deployment.has_credentials:
            first_per_provider.setdefault(deployment.provider_id, deployment)
    return list(first_per_provider.values())


def routing_config_changed() -> None:
    """Tell every gateway process to reload its snapshot (call after a config write commits);
    this process's is dropped at once (``snapshot_cache.clear`` listens: routing/apps.py)."""
    ROUTING_CONFIG_VERSION.bump()
