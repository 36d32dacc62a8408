"""Writes for agents and their keys."""

from __future__ import annotations

import hashlib
import secrets

from django.db import transaction
from django.utils import timezone

from .models import Agent, ApiKey

KEY_PREFIX = "gwk-"


def api_key_hash(raw_key: str) -> str:
    """Keys carry 256 random bits, so a plain SHA-256 is enough to store them safely."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


@transaction.atomic
def api_key_create(*, agent_name: str, label: str = "") -> tuple[ApiKey, str]:
    """Create a key for the agent (created if new); returns the record and the raw key, once."""
    agent, _ = Agent.objects.get_or_create(name=agent_name)
    raw_key = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        agent=agent, label=label, prefix=raw_key[:12], key_hash=api_key_hash(raw_key)
    )
    return key, raw_key


def api_key_revoke(*, key: ApiKey) -> None:
    """Revoke a key; processes stop accepting it when their key cache expires (seconds)."""
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
