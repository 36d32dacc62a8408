"""DRF authentication by bearer API key, for the synchronous control-plane endpoints.

The completion path authenticates with the cached async lookup in ``agents.selectors``; the
control plane (e.g. the review decision API) is low-volume and reads the key from the database
on every call, so a revoked key stops working at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework import authentication, exceptions, permissions

from .models import ApiKey
from .services import api_key_hash

if TYPE_CHECKING:
    from rest_framework.request import Request
    from rest_framework.views import APIView

    from .models import Agent


def bearer_key(request: Request) -> str:
    """The raw key from ``Authorization: Bearer <key>`` (or ``x-api-key``), or ``""``."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return str(request.headers.get("x-api-key", "")).strip()


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Any active key of an active agent; ``request.user`` is the agent, ``request.auth`` the key.

    What a key may do is its scope's business: pair this with a scope permission such as
    ``HasReviewerScope``.
    """

    def authenticate(self, request: Request) -> tuple[Agent, ApiKey] | None:
        raw_key = bearer_key(request)
        if not raw_key:
            return None  # no credentials: DRF answers 401 with the header below
        key = (
            ApiKey.objects.select_related("agent")
            .filter(key_hash=api_key_hash(raw_key), revoked_at__isnull=True, agent__is_active=True)
            .first()
        )
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.", "invalid_api_key")
        return key.agent, key

    def authenticate_header(self, request: Request) -> str:
        return "Bearer"


class ReviewerKeyAuthentication(ApiKeyAuthentication):
    """Bearer keys for the review decision API (use with ``HasReviewerScope``)."""


class HasReviewerScope(permissions.BasePermission):
    """The request carries a key whose scope is ``reviewer``; an agent-scoped key gets 403."""

    message = "This endpoint needs a reviewer-scoped API key (manage.py create_reviewer --api-key)."
    code = "insufficient_scope"

    def has_permission(self, request: Request, view: APIView) -> bool:
        key = request.auth
        return isinstance(key, ApiKey) and key.scope == ApiKey.Scope.REVIEWER
