"""The agents admin as an admin meets it: database constraints surface as form errors in words,
never by a constraint's name."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.db import models

from agents.models import Agent, Budget

pytestmark = pytest.mark.django_db

# The project's check constraints, each with a test below showing its form error.
CHECKED_IN_THE_ADMIN = {"budget_limit_not_negative"}
OUR_APPS = ("agents", "providers", "routing", "learning", "reviews")


def budget_data(**changes: str) -> dict[str, str]:
    data = {"scope": "global", "period": "day", "limit_usd": "5", "is_active": "on"}
    data.update(changes)
    return data


def test_a_negative_budget_is_a_form_error_not_a_constraint_name(admin_client):
    """Budgets → Add with a limit of -1 shows the error on the limit field, in words."""
    Budget.objects.all().delete()
    response = admin_client.post("/admin/agents/budget/add/", budget_data(limit_usd="-1"))
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert form.errors == {"limit_usd": ["A budget cannot be negative: enter 0 or more (USD)."]}
    assert b"budget_limit_not_negative" not in response.content
    assert not Budget.objects.exists()


def test_a_negative_budget_on_the_agent_page_is_a_form_error(admin_client):
    """The agent page's budget inline refuses a negative limit the same way."""
    agent = Agent.objects.create(name="coder")
    page = f"/admin/agents/agent/{agent.pk}/change/"
    data = {
        "name": "coder", "kind": "custom", "allowed_models": "[]", "allowed_tiers": "[]",
        "is_active": "on",
        "budgets-TOTAL_FORMS": "1", "budgets-INITIAL_FORMS": "0",
        "budgets-0-period": "day", "budgets-0-limit_usd": "-0.01", "budgets-0-is_active": "on",
        "api_keys-TOTAL_FORMS": "0", "api_keys-INITIAL_FORMS": "0",
    }  # fmt: skip
    response = admin_client.post(page, data)
    assert response.status_code == 200
    budget_forms = response.context["inline_admin_formsets"][0].formset.forms
    assert budget_forms[0].errors == {
        "limit_usd": ["A budget cannot be negative: enter 0 or more (USD)."]
    }
    assert b"budget_limit_not_negative" not in response.content
    assert not Budget.objects.filter(agent=agent).exists()


def test_a_second_budget_for_the_same_target_and_period_is_refused_in_words(admin_client):
    """A duplicate global daily budget is refused without naming the unique constraint."""
    Budget.objects.all().delete()
    assert admin_client.post("/admin/agents/budget/add/", budget_data()).status_code == 302
    response = admin_client.post("/admin/agents/budget/add/", budget_data(limit_usd="7"))
    assert response.status_code == 200
    assert b"one_budget_per_target_and_period" not in response.content
    assert response.context["adminform"].form.errors == {
        "__all__": ["Budget with this Scope, Project, Agent, Api key and Period already exists."]
    }
    assert Budget.objects.count() == 1


def test_every_check_constraint_has_its_form_error():
    """A new check constraint on our models fails this test until the admin refuses what it
    forbids as a form error (and a test here shows it): otherwise admins see its name."""
    names = {
        constraint.name
        for app in OUR_APPS
        for model in apps.get_app_config(app).get_models()
        for constraint in model._meta.constraints
        if isinstance(constraint, models.CheckConstraint)
    }
    assert names == CHECKED_IN_THE_ADMIN
