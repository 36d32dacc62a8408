"""Agents (the gateway's callers) and the API keys they authenticate with."""

from __future__ import annotations

from django.db import models


class Agent(models.Model):
    """A caller of the gateway: Claude Code, Codex, a home-made agent, a script."""

    name = models.SlugField(
        max_length=100, unique=True, help_text="The caller name audited with every request."
    )
    description = models.CharField(max_length=300, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ApiKey(models.Model):
    """A bearer key of an agent. Only its SHA-256 is stored; the key is shown once, at creation."""

    class Scope(models.TextChoices):
        """What a key may call: the completion API (agents) or the review decision API."""

        AGENT = "agent", "Agent (completion API)"
        REVIEWER = "reviewer", "Reviewer (review decision API)"

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="api_keys")
    label = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, help_text="The first characters, to recognise a key.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.AGENT)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.agent.name})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
