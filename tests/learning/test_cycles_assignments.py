"""The assignments cycle: reviewers' acceptance per tier moves a task type's start tier."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from learning.cycles import (
    learning_change_apply,
    learning_change_revert,
    learning_cycle_run,
    wilson_lower,
)
from learning.models import LearningChange
from reviews.models import ReviewItem
from routing.models import AuditRecord, TaskRoute

COST = {"fast": Decimal("0.0001"), "medium": Decimal("0.001"), "large": Decimal("0.01")}
LATENCY = {"fast": 200, "medium": 500, "large": 1500}


def reviewed(
    tier: str, approved: int, rejected: int = 0, task_type: str = "invoice", agent: str = ""
) -> None:
    """Answers of a tier, reviewed: ``approved`` accepted as they were, ``rejected`` not."""
    now = timezone.now()
    statuses = ["approved"] * approved + ["rejected"] * rejected
    records = AuditRecord.objects.bulk_create(
        AuditRecord(
            request_id="call-" + uuid.uuid4().hex,
            endpoint="completion",
            caller="agent-a",
            agent=agent,
            task_type=task_type,
            status="warning",
            http_status=200,
            tier=tier,
            model=f"{tier}-model",
            cost_usd=COST.get(tier, Decimal("0.05")),
            latency_ms=LATENCY.get(tier, 3000),
            confidence=5.0,
            created_at=now,
            finished_at=now,
        )
        for _ in statuses
    )
    ReviewItem.objects.bulk_create(
        ReviewItem(
            audit_record=record,
            task_type=task_type,
            caller="agent-a",
            tier=tier,
            model=record.model,
            confidence=5.0,
            gate_status="warning",
            reason="sampled",
            status=status,
            decided_at=now - timedelta(hours=1),
        )
        for record, status in zip(records, statuses, strict=True)
    )


def route(task_type: str, tier: str = "", pinned: str = "") -> TaskRoute:
    return TaskRoute.objects.update_or_create(
        task_type=task_type, defaults={"start_tier": tier, "pinned_model": pinned}
    )[0]


def start_tier(task_type: str = "invoice") -> str | None:
    found = TaskRoute.objects.filter(task_type=task_type).first()
    return found.start_tier if found else None


def test_wilson_lower_bound():
    """The 95 % Wilson lower bound: 20/20 is not enough for 0.9, 40/40 is; none without data."""
    assert wilson_lower(20, 20) == pytest.approx(0.8389, abs=1e-4)
    assert wilson_lower(40, 40) == pytest.approx(0.9124, abs=1e-4)
    assert wilson_lower(0, 0) is None


@pytest.mark.django_db
def test_moves_down_one_tier_to_a_cheaper_tier_that_meets_the_target():
    """Large start, fast and medium both on target: one tier down (to medium), cost estimated."""
    route("invoice", "large")
    reviewed("fast", 40)
    reviewed("medium", 40)
    reviewed("large", 40)
    run = learning_cycle_run(kind="assignments")
    change = run.changes.get()
    assert (change.target_kind, change.task_type, change.before, change.after) == (
        "task_route", "invoice", 2.0, 1.0
    )  # fmt: skip
    assert change.state == "applied" and change.before_overridden
    assert (change.evidence["tier_before"], change.evidence["tier_after"]) == ("large", "medium")
    assert change.evidence["best_tier"] == "fast"
    assert change.evidence["cost_change_usd"] == pytest.approx(-0.009)
    assert "move down one tier" in change.expected_effect
    assert start_tier() == "medium"
    assert "start tier[invoice] large -> medium" in run.outcome


@pytest.mark.django_db
def test_the_admin_shows_a_change_by_tier_names_with_its_evidence_read_only(client):
    """What an admin reads: large → medium (not 2.0 → 1.0), the reviews per tier, no Save."""
    from django.contrib.auth.models import User
    from django.urls import reverse

    route("invoice", "large")
    reviewed("fast", 40)
    reviewed("medium", 38, 2)
    reviewed("large", 40)
    change = learning_cycle_run(kind="assignments").changes.get()
    client.force_login(User.objects.create_superuser(username="boss", password="pw"))

    listing = client.get(reverse("admin:learning_learningchange_changelist")).content.decode()
    assert '<td class="field-before_value">large</td>' in listing
    assert '<td class="field-after_value">medium</td>' in listing
    page = client.get(reverse("admin:learning_learningchange_change", args=[change.pk]))
    text = page.content.decode()
    assert "<th>medium</th><td>38 of 40 (95.0%)</td>" in text
    assert "&quot;best_tier&quot;: &quot;fast&quot;" in text  # the evidence, indented JSON
    assert 'name="_save"' not in text and 'name="_continue"' not in text


@pytest.mark.django_db
def test_moves_up_when_the_current_tier_falls_short():
    """Fast start accepted 30/40, medium 40/40: one tier up, creating the task type's route."""
    reviewed("fast", 30, rejected=10)
    reviewed("medium", 40)
    run = learning_cycle_run(kind="assignments")
    change = run.changes.get()
    assert (change.before, change.after, change.before_overridden) == (0.0, 1.0, False)
    assert change.evidence["created_route"] is True
    assert start_tier() == "medium" and start_tier("default") == "fast"


@pytest.mark.django_db
def test_no_change_below_the_minimum_sample():
    """19 perfect reviews of a cheaper tier are fewer than 20 decided items: no change."""
    route("invoice", "medium")
    reviewed("fast", 19)
    reviewed("medium", 40)
    run = learning_cycle_run(kind="assignments")
    assert run.status == "succeeded" and not run.changes.exists()
    assert start_tier() == "medium"
    assert run.data_used["estimates"]["invoice"]["fast"]["n"] == 19


@pytest.mark.django_db
def test_a_route_pinning_a_model_is_left_alone():
    """A task route that pins a model is not moved, whatever the reviews say."""
    route("invoice", "large", pinned="big-model")
    reviewed("fast", 40)
    run = learning_cycle_run(kind="assignments")
    assert not run.changes.exists()
    assert "invoice: the route pins big-model; left alone" in run.outcome
    assert TaskRoute.objects.get(task_type="invoice").start_tier == "large"


@pytest.mark.django_db
def test_propose_mode_records_without_applying():
    """Propose mode records the change; applying it later moves the tier; stale ones refuse."""
    route("invoice", "medium")
    reviewed("fast", 40)
    run = learning_cycle_run(kind="assignments", mode="propose")
    change = run.changes.get()
    assert change.state == "proposed" and start_tier() == "medium"
    learning_change_apply(change=change, actor=None)
    assert start_tier() == "fast"
    change.refresh_from_db()
    assert change.state == "applied"
    again = learning_cycle_run(kind="assignments", mode="propose")
    assert not again.changes.exists()


@pytest.mark.django_db
def test_dry_run_writes_nothing():
    """A dry run lists the change it would make and saves nothing."""
    route("invoice", "medium")
    reviewed("fast", 40)
    run = learning_cycle_run(kind="assignments", dry_run=True)
    assert run.pk is None and "start tier[invoice] medium -> fast" in run.outcome
    assert not LearningChange.objects.exists() and start_tier() == "medium"


@pytest.mark.django_db
def test_revert_restores_the_tier_and_deletes_a_created_route():
    """Revert puts an existing route's tier back, and deletes a route the cycle created."""
    route("invoice", "medium")
    reviewed("fast", 40)
    reviewed("fast", 40, task_type="billing")
    TaskRoute.objects.filter(task_type="default").update(start_tier="medium")
    run = learning_cycle_run(kind="assignments")
    moved = run.changes.get(task_type="invoice")
    created = run.changes.get(task_type="billing")
    assert (start_tier(), start_tier("billing")) == ("fast", "fast")
    assert not created.before_overridden
    learning_change_revert(change=moved, actor=None)
    learning_change_revert(change=created, actor=None)
    assert start_tier() == "medium" and start_tier("billing") is None
    assert set(run.changes.values_list("state", flat=True)) == {"reverted"}


@pytest.mark.django_db
def test_the_run_records_per_tier_estimates():
    """data_used and the outcome report each tier's n, acceptance, bound, cost and latency."""
    route("invoice", "medium")
    reviewed("fast", 30, rejected=10)
    reviewed("medium", 40)
    run = learning_cycle_run(kind="assignments")
    assert not run.changes.exists()
    estimates = run.data_used["estimates"]["invoice"]
    assert set(estimates) == {"fast", "medium"}
    assert estimates["fast"] == {
        "n": 40,
        "accepted": 30,
        "acceptance": 0.75,
        "wilson_lower": pytest.approx(0.5981, abs=1e-4),
        "requests": 40,
        "mean_cost_usd": 0.0001,
        "mean_latency_ms": 200.0,
    }
    assert estimates["medium"]["wilson_lower"] == pytest.approx(0.9124, abs=1e-4)
    assert "invoice: fast n=40 acceptance 75% lower 60%" in run.outcome


@pytest.mark.django_db
def test_an_agent_whose_own_reviews_differ_gets_a_start_tier_of_its_own():
    """Most agents need the large tier for invoices, but one agent's requests are answered well
    by the fast tier (its own 45 reviews say so): it gets a caller preference one tier down, the
    task type's route stays, and a revert removes the preference."""
    from routing.models import CallerPreference

    route("invoice", "large")
    reviewed("fast", 30, 20, agent="bulk-agent")  # most agents: fast is poor
    reviewed("large", 60, agent="bulk-agent")
    reviewed("fast", 45, agent="tidy-agent")  # this agent's invoices: fast is fine
    run = learning_cycle_run(kind="assignments")
    change = run.changes.get(target_kind="caller_route")
    assert (change.caller, change.task_type, change.before, change.after) == (
        "tidy-agent", "invoice", 2.0, 1.0
    )  # fmt: skip
    assert str(change) == "start tier of tidy-agent[invoice]: large → medium"
    preference = CallerPreference.objects.get(caller="tidy-agent", task_type="invoice")
    assert preference.start_tier == "medium"
    assert start_tier() == "large"
    assert run.data_used["callers"]["tidy-agent"]["invoice"]["fast"]["n"] == 45
    learning_change_revert(change=change, actor=None)
    assert not CallerPreference.objects.filter(caller="tidy-agent").exists()


@pytest.mark.django_db
def test_no_caller_preference_without_enough_of_its_own_reviews():
    route("invoice", "large")
    reviewed("fast", 30, 20, agent="bulk-agent")
    reviewed("fast", 10, agent="tidy-agent")  # too few to tell
    run = learning_cycle_run(kind="assignments")
    assert not run.changes.filter(target_kind="caller_route").exists()
