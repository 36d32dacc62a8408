"""Version tokens every process watches to know when to drop a cache: the routing configuration,
the agents' keys and limits.

With Redis configured a version is a counter in the shared state, seen by every process on every
host. On the embedded defaults the shared state is per process, so the version is a small file under
``DATA_DIR`` that every process on the host (gateway, Celery worker, commands) reads and writes
(docs/adr/0006-config-caching.md).

The versions live here, below every app, so that any app can say "the routing configuration
changed" (providers, scoring, reviews, learning write parts of it) without importing the app that
caches it; that app registers, in its ``AppConfig.ready()``, what to drop in this process at once
(``on_bump``). See docs/adr/0017-layers.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import transaction

from .shared_state import shared_state
from .state_keys import version_key

logger = logging.getLogger(__name__)

_WARN_EVERY_S = 60.0


class SharedVersion:
    """One named version: ``aget`` on the request path, ``bump`` after a committed change."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.redis_key = version_key(name)
        self.file_name = f"{name}.version"
        self._last_warning = 0.0
        self._on_bump: list[Callable[[], None]] = []

    def on_bump(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` in this process after each bump (e.g. to drop a cached copy at once,
        rather than when the next version check sees the change). Registered once, at start."""
        if listener not in self._on_bump:
            self._on_bump.append(listener)

    @property
    def path(self) -> Path:
        return Path(settings.DATA_DIR) / self.file_name

    @staticmethod
    def uses_file() -> bool:
        """Without Redis configured, the shared state is per process: the version is a file."""
        return not shared_state().redis_url

    async def aget(self) -> str:
        if self.uses_file():
            return self.read_file()
        return await shared_state().aget(self.redis_key) or "0"

    def bump(self) -> None:
        """Give the version a new value every process will see; then tell this process's
        listeners. Call it after the change has committed (``bump_on_commit``)."""
        if self.uses_file():
            self.bump_file()
        else:
            shared_state().incr(self.redis_key)
        for listener in self._on_bump:
            listener()

    def bump_on_commit(self) -> None:
        """Bump once the current transaction commits (at once outside a transaction)."""
        transaction.on_commit(self.bump)

    def _warn(self, action: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_warning > _WARN_EVERY_S:
            self._last_warning = now
            logger.warning("%s version file: cannot %s %s: %s", self.name, action, self.path, exc)

    def read_file(self) -> str:
        """The host-wide version: the file's token, "0" while it does not exist.

        A read of a few bytes; cheap enough for the event loop once per check interval.
        """
        try:
            return self.path.read_text(encoding="ascii").strip() or "0"
        except FileNotFoundError:
            return "0"
        except (OSError, UnicodeDecodeError) as exc:
            # Unreadable: stay on one version (at worst one extra reload) rather than fail requests.
            self._warn("read", exc)
            return "0"

    def bump_file(self) -> None:
        """Give the host-wide version a value no process has seen.

        A unique token rather than a counter (the version only has to change), written to a
        temporary file and renamed over the old one: readers see the old or the new token, never a
        torn write, and concurrent bumps need no lock (whichever rename lands last wins).
        """
        path = self.path
        token = f"{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="ascii") as tmp_file:
                    tmp_file.write(token + "\n")
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            # The change is committed already; this process still reloads (its caller clears).
            self._warn("write", exc)


ROUTING_CONFIG_VERSION = SharedVersion("routing-config")
"""The routing configuration: providers, deployments, routes, rules, gates, validators, prompt
templates. Every write of any of them bumps it on commit; every process then rebuilds its routing
snapshot (``routing.config``)."""

ACCESS_VERSION = SharedVersion("access")
"""Who may call and within what limits: agents, keys, projects, budgets (``agents.signals``); every
process then drops its cached callers (``agents.selectors``)."""
