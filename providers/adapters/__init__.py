"""Provider adapters, one per wire protocol, looked up by ``Provider.kind``."""

from __future__ import annotations

from weakref import WeakKeyDictionary

import httpx

from providers.adapters.anthropic import AnthropicAdapter
from providers.adapters.gemini import GeminiAdapter
from providers.adapters.ollama import OllamaAdapter
from providers.adapters.openai_compatible import OpenAICompatibleAdapter
from providers.base import ProviderAdapter

__all__ = [
    "ADAPTER_CLASSES",
    "AnthropicAdapter",
    "GeminiAdapter",
    "OllamaAdapter",
    "OpenAICompatibleAdapter",
    "UnknownProviderKind",
    "adapter_for",
]

ADAPTER_CLASSES: dict[str, type[ProviderAdapter]] = {
    "ollama": OllamaAdapter,
    "openai_compatible": OpenAICompatibleAdapter,
    "anthropic": AnthropicAdapter,
    "gemini": GeminiAdapter,
}
"""Adapter class for each ``Provider.kind``."""


class UnknownProviderKind(KeyError):
    """No adapter is registered for a provider kind."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind

    def __str__(self) -> str:
        # KeyError would print the repr of its argument only.
        known = ", ".join(sorted(ADAPTER_CLASSES))
        return f"unknown provider kind {self.kind!r} (known: {known})"


# Adapters are stateless, so one per kind per client is enough; weak keys let a closed client go.
_instances: WeakKeyDictionary[httpx.AsyncClient, dict[str, ProviderAdapter]] = WeakKeyDictionary()


def adapter_for(kind: str, client: httpx.AsyncClient) -> ProviderAdapter:
    """The adapter for ``kind`` bound to the shared ``client``; raises UnknownProviderKind."""
    per_client = _instances.get(client)
    if per_client is None:
        per_client = _instances[client] = {}
    adapter = per_client.get(kind)
    if adapter is None:
        try:
            cls = ADAPTER_CLASSES[kind]
        except KeyError:
            raise UnknownProviderKind(kind) from None
        adapter = per_client[kind] = cls(client)
    return adapter
