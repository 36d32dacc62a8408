"""Hooks: how a lower app tells an app above it that something happened, without importing it.

Apps form a one-way graph (docs/adr/0017-layers.md): an app imports only the apps below it. When
news must travel up (audit rows an upper app keeps items for were written; a completion's verdict
is asked for), the lower app declares a :class:`Hook` and calls its listeners; the upper app
registers a listener in its ``AppConfig.ready()``. The listener's type is the hook's parameter, so
mypy checks both ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

Listener = TypeVar("Listener", bound=Callable[..., Any])


class Hook(Generic[Listener]):
    """One piece of news a lower app gives, and the listeners of the apps above it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._listeners: list[Listener] = []

    def register(self, listener: Listener) -> None:
        """Listen from now on (once: a second registration of the same listener is ignored)."""
        if listener not in self._listeners:
            self._listeners.append(listener)

    @property
    def listeners(self) -> tuple[Listener, ...]:
        """The registered listeners, in the order they registered."""
        return tuple(self._listeners)

    def __repr__(self) -> str:
        return f"<Hook {self.name}: {len(self._listeners)} listener(s)>"
