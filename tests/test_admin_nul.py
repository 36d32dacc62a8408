"""A NUL character in what a browser sends to the admin is a 400 page, never a 500 (PostgreSQL
cannot hold NUL in text: the filter reached the database and failed). Django test client; run on
PostgreSQL to see the failure it guards against (docs/adr/0014-hostile-input.md)."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db

FILTERS = [
    ("reviews", "reviewitem", "status=%00"),
    ("reviews", "reviewitem", "caller=%00"),
    ("reviews", "reviewitem", "task_type=%00"),
    ("reviews", "reviewitem", "model__exact=%00"),
    ("reviews", "reviewitem", "q=%00"),
    ("routing", "auditrecord", "status=%00"),
    ("routing", "auditrecord", "status__exact=%00"),
    ("routing", "auditrecord", "caller=%00"),
    ("routing", "auditrecord", "task_type=%00"),
    ("routing", "auditrecord", "q=ab%00cd"),
    ("agents", "spendrollup", "model__exact=%00"),
    ("agents", "spendrollup", "task_type=%00"),
    ("agents", "spendrollup", "agent__exact=%00"),
    ("agents", "spendrollup", "q=%00"),
    ("agents", "spendrollup", "%00=1"),
]


@pytest.fixture
def admin_client() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def assert_nul_page(response) -> None:
    assert response.status_code == 400, response.status_code
    assert b"NUL character" in response.content


@pytest.mark.parametrize(("app", "model", "query"), FILTERS, ids=[f[2] for f in FILTERS])
def test_nul_in_a_changelist_filter_is_a_400(admin_client, app, model, query):
    """The review queue, audit records and spend rollups answer a NUL filter or search with 400."""
    url = reverse(f"admin:{app}_{model}_changelist")
    assert admin_client.get(url).status_code == 200
    assert_nul_page(admin_client.get(f"{url}?{query}"))


def test_every_changelist_refuses_a_nul_search_and_filter(admin_client):
    """No admin changelist is reachable with a NUL in its query string."""
    for model in admin.site._registry:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        assert_nul_page(admin_client.get(f"{url}?q=%00"))
        assert_nul_page(admin_client.get(f"{url}?o=1&x=%00"))


def test_nul_in_an_object_id_or_a_form_is_a_400(admin_client):
    """A NUL in an object id of the path and in a posted form field are refused the same way."""
    assert_nul_page(admin_client.get("/admin/agents/spendrollup/%00/change/"))
    assert_nul_page(admin_client.get("/admin/auth/user/1%00/change/"))
    url = reverse("admin:routing_taskroute_add")
    assert_nul_page(admin_client.post(url, {"task_type": "a\x00b", "start_tier": "fast"}))


def test_nul_in_the_session_cookie_is_a_400():
    """A session cookie holding NULs (quoted octal escapes) never reaches the session table."""
    cookie = 'sessionid="' + "\\000" * 8 + '"'
    assert_nul_page(Client().get("/admin/", HTTP_COOKIE=cookie))


def test_ordinary_admin_requests_pass(admin_client):
    """Queries and forms without a NUL are untouched (a filtered list, a posted form)."""
    url = reverse("admin:routing_auditrecord_changelist")
    assert admin_client.get(f"{url}?status=failed&q=abc%20def").status_code == 200
    add = reverse("admin:routing_taskroute_add")
    response = admin_client.post(add, {"task_type": "ok-type", "start_tier": "fast"})
    assert response.status_code in {200, 302}
