"""`manage.py create_reviewer`: a staff user in the reviewers group, a password, maybe an API key."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from agents.models import ApiKey
from agents.services import api_key_hash

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("create_reviewer", *args, stdout=out)
    return out.getvalue()


def test_creates_a_staff_reviewer_who_can_log_in():
    """The user is staff, not superuser, in the reviewers group, and the printed password works."""
    output = run("rita", "--email", "rita@example.com")
    password = re.search(r"Password \(shown once\): (\S+)", output)
    assert password is not None
    user = User.objects.get(username="rita")
    assert (user.is_staff, user.is_superuser, user.email) == (True, False, "rita@example.com")
    assert [g.name for g in user.groups.all()] == ["reviewers"]
    client = Client()
    assert client.login(username="rita", password=password.group(1))
    assert client.get(reverse("admin:reviews_reviewitem_changelist")).status_code == 200
    assert "API key" not in output and not ApiKey.objects.exists()


def test_group_has_exactly_the_reviewer_permissions_and_is_created_once():
    """The reviewers group may view and decide review items, nothing else; a second run reuses it."""
    run("rita")
    run("sam")
    group = Group.objects.get(name="reviewers")
    assert sorted(group.permissions.values_list("codename", flat=True)) == [
        "decide_reviewitem",
        "view_reviewitem",
    ]
    assert group.user_set.count() == 2


def test_api_key_option_prints_a_reviewer_scoped_key():
    """--api-key also creates a reviewer-scoped key, printed once and stored as a hash."""
    output = run("rita", "--api-key")
    raw_key = re.search(r"API key \(shown once\): (\S+)", output)
    assert raw_key is not None
    key = ApiKey.objects.get(key_hash=api_key_hash(raw_key.group(1)))
    assert key.scope == ApiKey.Scope.REVIEWER
    assert key.agent.name == "reviewer-rita"


def test_existing_user_is_an_error():
    """Creating a reviewer whose name is taken fails and changes nothing."""
    User.objects.create_user("rita")
    with pytest.raises(CommandError, match="already exists"):
        run("rita")
    assert not User.objects.get(username="rita").is_staff
