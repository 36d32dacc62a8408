"""Any committed change to who may call and within what limits tells every gateway process to
drop its cached callers (``gateway_project.versions.ACCESS_VERSION``)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save

from gateway_project.versions import ACCESS_VERSION

from .models import Agent, ApiKey, Budget, Project
from .selectors import forget_cached_keys


def access_changed() -> None:
    ACCESS_VERSION.bump()
    forget_cached_keys()


def _on_change(sender: Any, **kwargs: Any) -> None:
    transaction.on_commit(access_changed)


def connect() -> None:
    for model in (Agent, ApiKey, Budget, Project):
        post_save.connect(_on_change, sender=model, dispatch_uid=f"access-{model.__name__}")
        post_delete.connect(_on_change, sender=model, dispatch_uid=f"access-del-{model.__name__}")
