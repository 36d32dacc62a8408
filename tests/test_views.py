"""The gateway's own pages: ``/`` says what runs there (the admin's "View site" leads to it) and
``/readme`` shows the README with the anchor the landing page links to."""

from __future__ import annotations

import httpx
import pytest

from gateway_project.views import readme_blocks


@pytest.mark.django_db
def test_view_site_in_the_admin_leads_to_a_landing_page(admin_client):
    """The admin header's "View site" link is ``/``, which answers with links to the admin,
    /health, /metrics, /v1/models and the README's API section."""
    admin_page = admin_client.get("/admin/")
    assert b'<a href="/">View site</a>' in admin_page.content
    page = admin_client.get("/")
    assert page.status_code == 200
    assert page["Content-Type"] == "text/html; charset=utf-8"
    for link in (
        "/admin/",
        "/health",
        "/health/ready",
        "/metrics",
        "/v1/models",
        "/readme#the-api",
    ):
        assert f'href="{link}"'.encode() in page.content, link


def test_the_landing_page_needs_no_login_and_is_served_by_the_gateway(gateway):
    """Over real HTTP, ``/`` answers 200 to anyone (not the API handler's 404)."""
    response = httpx.get(f"{gateway.url}/")
    assert response.status_code == 200
    assert "An LLM gateway for teams of AI agents runs here" in response.text


def test_the_readme_page_has_the_api_section_the_landing_page_links_to(client):
    """``/readme`` renders the README with its headings as anchors: the API section is there."""
    page = client.get("/readme")
    assert page.status_code == 200
    assert b'<h2 id="the-api">The API</h2>' in page.content
    assert b"POST /v1/chat/completions" in page.content


def test_readme_headings_inside_code_blocks_stay_code():
    """A "# comment" line in a fenced block is text, not a heading; headings get GitHub's anchors."""
    blocks = readme_blocks("# Title\n\n## The API: v1\n```sh\n# a comment\nmake run\n```\nmore")
    assert [(b.level, b.anchor) for b in blocks if b.level] == [(1, "title"), (2, "the-api-v1")]
    assert blocks[-1].text == "```sh\n# a comment\nmake run\n```\nmore"
