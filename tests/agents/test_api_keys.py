"""API keys: created by command, stored hashed, shown once."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from agents.models import ApiKey
from agents.services import API_KEY_PREFIX, api_key_create, api_key_hash
from reviews.services import reviewer_api_key_create

pytestmark = pytest.mark.django_db


def test_create_api_key_prints_a_key_stored_only_as_hash():
    """The command prints a new key; the database holds its hash and prefix, never the key."""
    out = StringIO()
    call_command("create_api_key", "--agent", "claude-code", stdout=out)
    raw = out.getvalue().strip()
    key = ApiKey.objects.get(agent__name="claude-code")
    assert raw.startswith("gwk-") and len(raw) > 40
    assert key.key_hash == api_key_hash(raw)
    assert raw not in (key.key_hash, key.prefix)
    assert raw.startswith(key.prefix)


def test_admin_issues_a_key_once(admin_client):
    """The agent admin action shows a new key in a message, once."""
    from agents.models import Agent

    agent = Agent.objects.create(name="codex")
    response = admin_client.post(
        "/admin/agents/agent/", {"action": "issue_key", "_selected_action": [agent.id]}, follow=True
    )
    assert b"gwk-" in response.content
    assert ApiKey.objects.filter(agent=agent).count() == 1


def test_reviewer_keys_are_minted_like_agent_keys():
    """A reviewer's key comes from the same minting as an agent's: the same marker and length,
    stored only as its hash, its first characters as the prefix, and the reviewer scope."""
    agent_key, agent_raw = api_key_create(agent_name="codex")
    reviewer_key, reviewer_raw = reviewer_api_key_create(username="rita")
    for key, raw in ((agent_key, agent_raw), (reviewer_key, reviewer_raw)):
        assert raw.startswith(API_KEY_PREFIX) and len(raw) == len(agent_raw)
        assert key.key_hash == api_key_hash(raw) and raw.startswith(key.prefix)
    assert (agent_key.scope, reviewer_key.scope) == (ApiKey.Scope.AGENT, ApiKey.Scope.REVIEWER)
    assert reviewer_key.agent.name == "reviewer-rita"
