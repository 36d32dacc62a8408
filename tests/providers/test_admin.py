"""The providers admin: write-only encrypted keys and the drag-and-drop fallback chain."""

from __future__ import annotations

import orjson
import pytest

from gateway_project.state_keys import provider_cooldown_key
from providers.models import FallbackChainEntry, Provider

pytestmark = pytest.mark.django_db


def test_api_key_is_write_only_and_encrypted(admin_client):
    """A key typed in the admin is stored encrypted and never rendered back."""
    provider = Provider.objects.get(name="groq")
    page = admin_client.get(f"/admin/providers/provider/{provider.id}/change/")
    data = {
        "name": "groq", "kind": "openai_compatible", "base_url": provider.base_url,
        "api_key": "gsk-secret-value-123", "api_key_env": "GROQ_API_KEY",
        "connect_timeout_s": 5, "first_byte_timeout_s": 60, "total_timeout_s": 300,
        "max_concurrent_requests": 0, "enabled": "on",
        "deployments-TOTAL_FORMS": 0, "deployments-INITIAL_FORMS": 0,
    }  # fmt: skip
    response = admin_client.post(f"/admin/providers/provider/{provider.id}/change/", data)
    assert response.status_code == 302, response.content[:2000]
    provider.refresh_from_db()
    assert provider.resolve_api_key() == "gsk-secret-value-123"
    assert "gsk-secret-value-123" not in provider.api_key_encrypted
    page = admin_client.get(f"/admin/providers/provider/{provider.id}/change/")
    assert b"gsk-secret-value-123" not in page.content
    listing = admin_client.get("/admin/providers/provider/")
    assert b"stored (encrypted)" in listing.content

    # Saving again with the field empty keeps the stored key.
    data["api_key"] = ""
    admin_client.post(f"/admin/providers/provider/{provider.id}/change/", data)
    provider.refresh_from_db()
    assert provider.resolve_api_key() == "gsk-secret-value-123"


def test_default_chain_follows_seed_order():
    """The external chain starts as Cerebras → Groq → Mistral → NVIDIA NIM → Cloudflare."""
    names = [e.provider.name for e in FallbackChainEntry.objects.order_by("position")]
    assert names == ["cerebras", "groq", "mistral", "nvidia-nim", "cloudflare"]


def test_drag_and_drop_reorders_the_chain(admin_client):
    """The sortable changelist's reorder call changes the chain order."""
    entries = {e.provider.name: e for e in FallbackChainEntry.objects.all()}
    moves = [[entries["groq"].id, 1], [entries["cerebras"].id, 2]]
    response = admin_client.post(
        "/admin/providers/fallbackchainentry/adminsortable2_update/",
        orjson.dumps({"updatedItems": moves}),
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    names = [e.provider.name for e in FallbackChainEntry.objects.order_by("position")]
    assert names[:2] == ["groq", "cerebras"]


def test_admin_pages_render(admin_client):
    """Every gateway model has a working changelist in the admin."""
    for url in (
        "/admin/providers/provider/", "/admin/providers/modeldeployment/",
        "/admin/providers/fallbackchainentry/", "/admin/routing/taskroute/",
        "/admin/routing/callerpreference/", "/admin/routing/classificationrule/",
        "/admin/routing/auditrecord/", "/admin/agents/agent/", "/admin/agents/apikey/",
    ):  # fmt: skip
        assert admin_client.get(url).status_code == 200, url


def test_audit_records_are_read_only(admin_client):
    """Nobody can add, change or delete audit records in the admin."""
    from django.utils import timezone

    from routing.models import AuditRecord

    now = timezone.now()
    record = AuditRecord.objects.create(
        request_id="call-x", endpoint="completion", caller="a", status="approved",
        http_status=200, created_at=now, finished_at=now,
    )  # fmt: skip
    assert admin_client.get("/admin/routing/auditrecord/add/").status_code == 403
    page = admin_client.get(f"/admin/routing/auditrecord/{record.id}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert admin_client.get(f"/admin/routing/auditrecord/{record.id}/delete/").status_code == 403


def test_rejected_key_shows_in_the_provider_list(admin_client):
    """After an upstream rejects a provider's key, the admin's provider list says so."""
    from gateway_project.shared_state import shared_state

    provider = Provider.objects.get(name="local-ollama")
    shared_state().set(provider_cooldown_key(provider.id), "API key rejected (HTTP 401)", 60)
    try:
        listing = admin_client.get("/admin/providers/provider/")
        assert b"API key rejected (HTTP 401)" in listing.content
    finally:
        shared_state().delete(provider_cooldown_key(provider.id))
