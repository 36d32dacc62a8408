"""Providers (an upstream endpoint and its credentials) and the model deployments they serve."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from .crypto import decrypt_secret, encrypt_secret


class Tier(models.TextChoices):
    """Cost-first tiers, cheapest first (docs/adr/0002-cost-first-tiers.md)."""

    FAST = "fast", "Fast"
    MEDIUM = "medium", "Medium"
    LARGE = "large", "Large"
    EXTERNAL = "external", "External"


TIER_ORDER: tuple[str, ...] = tuple(t.value for t in Tier)


def validate_upstream_url(value: str) -> None:
    """An http(s) URL with a host; unlike URLValidator, single-label hosts (``ollama``) pass."""
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValidationError("Enter an http:// or https:// URL with a host name.")
    if parts.query or parts.fragment:
        raise ValidationError("The base URL cannot carry a query string or fragment.")


class Provider(models.Model):
    """An upstream endpoint speaking one wire protocol."""

    class Kind(models.TextChoices):
        OLLAMA = "ollama", "Ollama"
        OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible"
        ANTHROPIC = "anthropic", "Anthropic"
        GEMINI = "gemini", "Gemini"

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    base_url = models.CharField(
        max_length=500,
        validators=[validate_upstream_url],
        help_text="For OpenAI-compatible providers include the version prefix, e.g. .../v1.",
    )
    api_key_encrypted = models.TextField(blank=True, editable=False)
    api_key_env = models.CharField(
        max_length=100,
        blank=True,
        help_text="Name of an environment variable holding the key (used when no key is stored).",
    )
    connect_timeout_s = models.FloatField(default=5.0, validators=[MinValueValidator(0.1)])
    first_byte_timeout_s = models.FloatField(default=60.0, validators=[MinValueValidator(0.1)])
    total_timeout_s = models.FloatField(default=300.0, validators=[MinValueValidator(0.1)])
    max_concurrent_requests = models.PositiveIntegerField(
        default=0, help_text="Per gateway process; 0 means unlimited."
    )
    # Declared free-tier quotas, counted per UTC day in the shared state (docs/adr/0011).
    daily_request_quota = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Calls per UTC day the provider allows (e.g. a free tier's). Once today's count "
        "reaches it, the provider is skipped until the next UTC day. Empty: no quota.",
    )
    daily_token_quota = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Tokens (in + out) per UTC day the provider allows. A request that would pass it "
        "is not sent; the provider is skipped until the next UTC day. Empty: no quota.",
    )
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_local(self) -> bool:
        return self.kind == self.Kind.OLLAMA

    @property
    def has_daily_quota(self) -> bool:
        return self.daily_request_quota is not None or self.daily_token_quota is not None

    @property
    def has_stored_key(self) -> bool:
        return bool(self.api_key_encrypted)

    def set_api_key(self, raw_key: str) -> None:
        self.api_key_encrypted = encrypt_secret(raw_key)

    def resolve_api_key(self) -> str:
        """The stored key, else the one in the named environment variable, else ""."""
        stored = decrypt_secret(self.api_key_encrypted)
        if stored:
            return stored
        return os.environ.get(self.api_key_env, "") if self.api_key_env else ""

    def clean(self) -> None:
        if self.first_byte_timeout_s > self.total_timeout_s:
            raise ValidationError({"first_byte_timeout_s": "Cannot exceed the total timeout."})


class ModelDeployment(models.Model):
    """One model served by one provider, in one tier, under a public name agents ask for."""

    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="deployments")
    upstream_model = models.CharField(max_length=200, help_text="The provider's own model id.")
    public_name = models.CharField(
        max_length=200,
        db_index=True,
        help_text="The name agents use; several deployments may share one (load balancing).",
    )
    tier = models.CharField(max_length=16, choices=Tier.choices)
    input_cost_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, default=0, help_text="USD per million input tokens."
    )
    output_cost_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, default=0, help_text="USD per million output tokens."
    )
    context_window = models.PositiveIntegerField(default=8192)
    weight = models.PositiveIntegerField(default=1, help_text="Share of traffic within its tier.")
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tier", "public_name"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "upstream_model", "tier"], name="unique_deployment_per_tier"
            )
        ]

    def __str__(self) -> str:
        return f"{self.public_name} ({self.provider.name}, {self.tier})"


class FallbackChainEntry(models.Model):
    """A provider's place in the external fallback chain.

    See docs/adr/0004-external-fallback-chain.md.
    """

    provider = models.OneToOneField(Provider, on_delete=models.CASCADE, related_name="chain_entry")
    position = models.PositiveIntegerField(default=0, db_index=True)

    class Meta:
        ordering = ["position"]
        verbose_name = "fallback chain entry"
        verbose_name_plural = "fallback chain"

    def __str__(self) -> str:
        return f"{self.position}. {self.provider.name}"
