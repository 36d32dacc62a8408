"""Writes of provider configuration. Each one tells every gateway process to reload its routing
snapshot once the transaction commits (docs/adr/0006-config-caching.md)."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction
from django.db.models import Model

from gateway_project.versions import ROUTING_CONFIG_VERSION

from .models import FallbackChainEntry, Provider


def config_changed_on_commit() -> None:
    """Every gateway process reloads its routing snapshot once this transaction commits."""
    ROUTING_CONFIG_VERSION.bump_on_commit()


@transaction.atomic
def config_object_save(*, obj: Model) -> None:
    """Save any routing-relevant object (provider, deployment, route, rule)."""
    obj.save()
    config_changed_on_commit()


@transaction.atomic
def config_object_delete(*, obj: Model) -> None:
    obj.delete()
    config_changed_on_commit()


@transaction.atomic
def provider_save(
    *, provider: Provider, new_api_key: str | None = None, clear_api_key: bool = False
) -> None:
    """Save a provider; a given key replaces the stored one (encrypted), never shown back."""
    if clear_api_key:
        provider.api_key_encrypted = ""
    elif new_api_key:
        provider.set_api_key(new_api_key)
    provider.save()
    config_changed_on_commit()


@transaction.atomic
def fallback_chain_set(*, provider_names: Sequence[str]) -> None:
    """Make the external fallback chain exactly these providers, in this order."""
    providers = {p.name: p for p in Provider.objects.filter(name__in=provider_names)}
    missing = [name for name in provider_names if name not in providers]
    if missing:
        raise ValueError(f"unknown provider(s) in fallback chain: {', '.join(missing)}")
    FallbackChainEntry.objects.exclude(provider__name__in=provider_names).delete()
    for position, name in enumerate(provider_names, start=1):
        FallbackChainEntry.objects.update_or_create(
            provider=providers[name], defaults={"position": position}
        )
    config_changed_on_commit()


@transaction.atomic
def fallback_chain_reorder(*, positions: Sequence[tuple[int, int]]) -> int:
    """Apply (entry id, position) pairs from the admin's drag and drop."""
    entries = FallbackChainEntry.objects.in_bulk([entry_id for entry_id, _ in positions])
    for entry_id, position in positions:
        entries[entry_id].position = position
    updated = FallbackChainEntry.objects.bulk_update(list(entries.values()), ["position"])
    config_changed_on_commit()
    return updated
