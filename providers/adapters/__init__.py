"""Provider adapters, one per wire protocol, looked up by ``Provider.kind``."""

from __future__ import annotations

from weakref import WeakKeyDictionary

import aiohttp

from providers.adapters._http import new_session
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
    "new_session",
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


# Adapters are stateless, so one per kind per session is enough; weak keys let a closed session go.
_instances: WeakKeyDictionary[aiohttp.ClientSession, dict[str, ProviderAdapter]] = (
    WeakKeyDictionary()
)


def adapter_for(kind: str, session: aiohttp.ClientSession) -> ProviderAdapter:
    """The adapter for ``kind`` bound to the shared ``session``; raises UnknownProviderKind."""
    per_session = _instances.get(session)
    if per_session is None:
        per_session = _instances[session] = {}
    adapter = per_session.get(kind)
    if adapter is None:
        try:
            cls = ADAPTER_CLASSES[kind]
        except KeyError:
            raise UnknownProviderKind(kind) from None
        adapter = per_session[kind] = cls(session)
    return adapter
