"""The dead letters' admin: read-only, and an action that writes the selected rows again."""

from __future__ import annotations

from typing import Any

import pytest
from audit_helpers import audit_row
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from agents.models import SpendRollup
from gateway_project.shared_state import shared_state
from gateway_project.state_keys import AUDIT_DEAD_LETTERS_KEY
from reviews.models import ReviewItem
from routing.audit import AuditWriter
from routing.models import AuditDeadLetter, AuditRecord
from routing.storable import json_text

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "admin:routing_auditdeadletter_changelist"


@pytest.fixture
def admin_client() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def parked(**fields) -> AuditDeadLetter:
    """A row the writer parks: no reduced form fits it (its creation time is not a time)."""
    writer = AuditWriter()
    writer.submit(audit_row(created_at="not a time", **fields))
    writer.flush_sync()
    return AuditDeadLetter.objects.get(request_id=fields["request_id"])


def writable(request_id: str) -> tuple[AuditDeadLetter, dict[str, Any]]:
    """A dead letter whose row the database takes now (what an admin retries after a fix)."""
    row = audit_row(request_id=request_id, output="fixed\x00")
    letter = AuditDeadLetter.objects.create(
        request_id=request_id,
        row=json_text(row),
        error="DataError [22003]: integer out of range",
        created_at=row["created_at"],
    )
    return letter, row


def test_the_list_and_a_dead_letter_render_read_only(admin_client):
    """The list shows each dead letter's request id and error; its page shows the row as JSON,
    with no way to add, change or delete one."""
    letter = parked(request_id="call-parked", prompt="<b>raw</b>")
    response = admin_client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    html = response.content.decode()
    assert "call-parked" in html and "ValueError: the row has no creation time" in html
    assert reverse("admin:routing_auditdeadletter_add") not in html
    page = admin_client.get(reverse("admin:routing_auditdeadletter_change", args=[letter.pk]))
    assert page.status_code == 200
    body = page.content.decode()
    assert "&quot;prompt&quot;: &quot;&lt;b&gt;raw&lt;/b&gt;&quot;" in body  # escaped, indented
    assert 'name="_save"' not in body
    delete = admin_client.post(reverse("admin:routing_auditdeadletter_delete", args=[letter.pk]))
    assert delete.status_code == 403 and AuditDeadLetter.objects.filter(pk=letter.pk).exists()


def test_writing_again_removes_what_is_written_and_keeps_what_is_still_refused(admin_client):
    """The action writes each selected row (record, rollup and review item together) and removes
    its dead letter; a row still refused stays with its error and one more retry counted."""
    shared_state().set(AUDIT_DEAD_LETTERS_KEY, "2")
    (good, row), bad = writable("call-fixed"), parked(request_id="call-still-bad")
    response = admin_client.post(
        reverse(CHANGELIST),
        {"action": "write_again", "_selected_action": [good.pk, bad.pk]},
        follow=True,
    )
    assert response.status_code == 200
    messages = [str(m) for m in response.context["messages"]]
    assert "Wrote 1 record(s); they are removed here." in messages
    assert "1 record(s) were refused again; see their error." in messages
    record = AuditRecord.objects.get(request_id="call-fixed")
    assert record.output == "fixed\ufffd" and record.created_at == row["created_at"]
    assert ReviewItem.objects.filter(audit_record__request_id="call-fixed").exists()
    assert SpendRollup.objects.get().requests == 1
    assert list(AuditDeadLetter.objects.values_list("request_id", flat=True)) == ["call-still-bad"]
    bad.refresh_from_db()
    assert bad.retries == 1 and bad.last_retry_at is not None
    assert bad.error.startswith("ValidationError")
    assert shared_state().get(AUDIT_DEAD_LETTERS_KEY) is None  # /health counts again


def test_only_those_allowed_to_change_dead_letters_may_write_them_again():
    """A staff user who may only view dead letters sees them but not the action."""
    viewer = User.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_auditdeadletter"))
    client = Client()
    client.force_login(viewer)
    parked(request_id="call-viewed")
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 200 and "call-viewed" in response.content.decode()
    assert "write_again" not in response.content.decode()
