"""Factories for the gateway's models, and the standard simulator-backed routing setup."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import factory
from django.utils import timezone

from agents.services import api_key_create
from providers.models import ModelDeployment, Provider
from reviews.models import ReviewItem
from reviews.services import review_items_create
from routing.config import routing_config_changed
from routing.models import AuditRecord, TaskRoute


class ProviderFactory(factory.django.DjangoModelFactory[Provider]):
    class Meta:
        model = Provider
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"provider-{n}")
    kind = Provider.Kind.OPENAI_COMPATIBLE
    base_url = "http://127.0.0.1:9/v1"
    connect_timeout_s = 2.0
    first_byte_timeout_s = 10.0
    total_timeout_s = 20.0
    enabled = True


class DeploymentFactory(factory.django.DjangoModelFactory[ModelDeployment]):
    class Meta:
        model = ModelDeployment

    provider = factory.SubFactory(ProviderFactory)
    upstream_model = factory.Sequence(lambda n: f"model-{n}")
    public_name = factory.LazyAttribute(lambda o: o.upstream_model)
    tier = "fast"
    context_window = 32768


@dataclass
class SimSetup:
    """Handles on the standard setup: one deployment per tier, each on another wire protocol."""

    ollama: Provider
    openai: Provider
    anthropic: Provider
    gemini: Provider
    fast: ModelDeployment
    medium: ModelDeployment
    large: ModelDeployment
    external: ModelDeployment


def sim_setup(simulator_url: str) -> SimSetup:
    """fast → Ollama protocol, medium → OpenAI, large → Anthropic, external → Gemini."""
    ollama = ProviderFactory.create(
        name="sim-ollama", kind=Provider.Kind.OLLAMA, base_url=simulator_url
    )
    openai = ProviderFactory.create(name="sim-openai", base_url=f"{simulator_url}/v1")
    anthropic = ProviderFactory.create(
        name="sim-anthropic", kind=Provider.Kind.ANTHROPIC, base_url=simulator_url
    )
    gemini = ProviderFactory.create(
        name="sim-gemini", kind=Provider.Kind.GEMINI, base_url=simulator_url
    )
    setup = SimSetup(
        ollama=ollama,
        openai=openai,
        anthropic=anthropic,
        gemini=gemini,
        fast=DeploymentFactory.create(provider=ollama, upstream_model="sim-fast", tier="fast"),
        medium=DeploymentFactory.create(
            provider=openai,
            upstream_model="sim-medium",
            tier="medium",
            input_cost_per_mtok=1,
            output_cost_per_mtok=2,
        ),
        large=DeploymentFactory.create(
            provider=anthropic,
            upstream_model="sim-large",
            tier="large",
            input_cost_per_mtok=3,
            output_cost_per_mtok=15,
        ),
        external=DeploymentFactory.create(
            provider=gemini,
            upstream_model="sim-external",
            tier="external",
            input_cost_per_mtok=0.5,
            output_cost_per_mtok=1.5,
        ),
    )
    TaskRoute.objects.update_or_create(task_type="default", defaults={"start_tier": "fast"})
    routing_config_changed()
    return setup


def new_api_key(agent: str = "test-agent") -> str:
    return api_key_create(agent_name=agent)[1]


def queued_review_item() -> int:
    """An audit record waiting for review, as the audit writer leaves it; returns the item id."""
    now = timezone.now()
    row = {"request_id": f"call-{uuid.uuid4().hex}", "endpoint": "completion", "caller": "a",
           "agent": "a", "task_type": "general", "status": "pending_review", "http_status": 200,
           "prompt": "user: hi", "output": "?", "metadata": {}, "created_at": now,
           "finished_at": now}  # fmt: skip
    AuditRecord.objects.create(**row)
    review_items_create(rows=[{**row, "review_reason": "low_confidence"}])
    return ReviewItem.objects.get(audit_record__request_id=row["request_id"]).pk
