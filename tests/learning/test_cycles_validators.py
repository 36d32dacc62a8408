"""The validators cycle: each validator's agreement with reviewers moves its weight, revertibly."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from learning.cycles import auc, learning_change_apply, learning_change_revert, learning_cycle_run
from learning.models import LearningChange
from reviews.models import ReviewItem
from routing.models import AuditRecord
from scoring.models import ValidatorConfig


def reviewed(
    status: str, scores: dict[str, float], count: int, task_type: str = "invoice", agent: str = ""
) -> None:
    """Reviewed answers whose breakdown gave each validator the score in ``scores``."""
    now = timezone.now()
    validation: list[dict[str, Any]] = [
        {"name": name, "score": score, "weight": 1.0, "reason": "-"}
        for name, score in scores.items()
    ]
    records = AuditRecord.objects.bulk_create(
        AuditRecord(
            request_id="call-" + uuid.uuid4().hex,
            endpoint="completion",
            caller="agent-a",
            agent=agent,
            task_type=task_type,
            status="warning",
            http_status=200,
            confidence=5.0,
            validation=validation,
            created_at=now,
            finished_at=now,
        )
        for _ in range(count)
    )
    ReviewItem.objects.bulk_create(
        ReviewItem(
            audit_record=record,
            task_type=task_type,
            caller="agent-a",
            confidence=5.0,
            gate_status="warning",
            reason="sampled",
            status=status,
            decided_at=now - timedelta(hours=1),
        )
        for record in records
    )


def verdicts(accepted: int = 20, rejected: int = 6, corrected: int = 6) -> None:
    """json separates the verdicts; language scores high or low whatever the verdict (chance);
    refusal passes every answer (only ties: no evidence about it)."""
    for status, count, json_score, unknown in (
        ("approved", accepted, 9.0, 9),
        ("rejected", rejected, 2.0, 1),
        ("corrected", corrected, 3.0, 1),
    ):
        for language, share in ((8.0, count - count // 2), (4.0, count // 2)):
            scores = {"json": json_score, "language": language, "refusal": 10, "unknown": unknown}
            reviewed(status, scores, share)


def weight(validator: str, task_type: str = "invoice") -> float | None:
    row = ValidatorConfig.objects.filter(validator=validator, task_type=task_type).first()
    return row.weight if row else None


def changes(run: Any) -> dict[str, tuple[float, float]]:
    return {c.validator: (c.before, c.after) for c in run.changes.all()}


def test_auc_is_the_mann_whitney_rank_statistic():
    """AUC is 1 for perfect separation, 0.5 for ties, and undefined with an empty side."""
    assert auc([9, 8], [1, 2]) == 1.0
    assert auc([5, 5], [5]) == 0.5
    assert auc([3, 9], [5]) == 0.5
    assert auc([9], []) is None


@pytest.mark.django_db
def test_a_validator_that_separates_the_verdicts_gains_weight():
    """AUC 1 raises json's weight x1.25 on a task-type row created from the default."""
    verdicts()
    run = learning_cycle_run(kind="validators")
    assert run.status == "succeeded"
    change = run.changes.get(validator="json")
    assert (change.target_kind, change.task_type, change.before, change.after) == (
        "validator_weight", "invoice", 1.0, 1.25
    )  # fmt: skip
    assert change.state == "applied" and not change.before_overridden
    assert change.evidence["auc"] == 1.0 and change.evidence["created_row"] is True
    assert weight("json") == 1.25


@pytest.mark.django_db
def test_a_validator_at_chance_loses_weight_and_falls_to_shadow():
    """AUC 0.5 lowers language x0.8; a weight falling under 0.2 becomes 0 (shadow)."""
    ValidatorConfig.objects.create(task_type="", validator="language", weight=0.24, params={})
    verdicts()
    run = learning_cycle_run(kind="validators")
    assert changes(run)["language"] == (0.24, 0.0)
    assert weight("language") == 0.0 and weight("language", "") == 0.24
    assert "shadow" in run.changes.get(validator="language").expected_effect
    ValidatorConfig.objects.filter(task_type="invoice", validator="language").update(weight=1.0)
    rerun = learning_cycle_run(kind="validators")
    assert changes(rerun)["language"] == (1.0, 0.8)


@pytest.mark.django_db
def test_a_shadow_validator_is_measured_and_comes_back_when_it_predicts():
    """A shadow validator (weight 0) that predicts the verdict comes back at the minimum weight;
    one already in shadow at chance stays there."""
    ValidatorConfig.objects.create(task_type="invoice", validator="json", weight=0.0)
    ValidatorConfig.objects.create(task_type="invoice", validator="language", weight=0.0)
    verdicts()
    run = learning_cycle_run(kind="validators")
    # refusal passed every answer: only ties, no evidence, so its weight stays.
    assert changes(run) == {"json": (0.0, 0.2)}
    assert (weight("json"), weight("language")) == (0.2, 0.0)


@pytest.mark.django_db
def test_no_change_below_the_minimum_sample():
    """29 decided items of a task type are not enough: no change, the run says why."""
    verdicts(accepted=17)
    run = learning_cycle_run(kind="validators")
    assert run.status == "succeeded" and not run.changes.exists()
    assert run.data_used["reviewed"] == {"invoice": 29}
    assert "invoice: 29 reviewed items, fewer than 30" in run.outcome
    assert not ValidatorConfig.objects.exists()


@pytest.mark.django_db
def test_propose_mode_records_without_applying():
    """Propose mode records the changes; applying one later writes the weight."""
    verdicts()
    run = learning_cycle_run(kind="validators", mode="propose")
    change = run.changes.get(validator="json")
    assert change.state == "proposed" and not ValidatorConfig.objects.exists()
    learning_change_apply(change=change, actor=None)
    assert weight("json") == 1.25
    change.refresh_from_db()
    assert change.state == "applied"


@pytest.mark.django_db
def test_dry_run_writes_nothing():
    """A dry run lists the changes it would make and saves nothing."""
    verdicts()
    run = learning_cycle_run(kind="validators", dry_run=True)
    assert run.pk is None and "weight of json[invoice] 1 -> 1.25" in run.outcome
    assert not LearningChange.objects.exists() and not ValidatorConfig.objects.exists()


@pytest.mark.django_db
def test_revert_restores_the_weight_and_removes_a_created_row():
    """Revert puts an existing row's weight back, and deletes a row the cycle created."""
    ValidatorConfig.objects.create(task_type="invoice", validator="json", weight=2.0)
    verdicts()
    run = learning_cycle_run(kind="validators")
    raised = run.changes.get(validator="json")
    lowered = run.changes.get(validator="language")
    assert (raised.before_overridden, weight("json")) == (True, 2.5)
    assert (lowered.before_overridden, weight("language")) == (False, 0.8)
    learning_change_revert(change=raised, actor=None)
    learning_change_revert(change=lowered, actor=None)
    assert weight("json") == 2.0 and weight("language") is None
    raised.refresh_from_db()
    lowered.refresh_from_db()
    assert (raised.state, lowered.state) == ("reverted", "reverted")


@pytest.mark.django_db
def test_the_run_records_each_validators_agreement():
    """data_used and the outcome report every validator's AUC and counts per task type."""
    verdicts()
    run = learning_cycle_run(kind="validators")
    agreement = run.data_used["agreement"]["invoice"]
    assert set(agreement) == {"json", "language", "refusal", "unknown"}
    assert agreement["refusal"]["auc"] == 0.5 and agreement["unknown"]["auc"] == 1.0
    assert agreement["refusal"]["untied_pairs"] == 0.0  # kept: its AUC is only ties
    assert set(changes(run)) == {"json", "language"}  # unknown: no config to move
    assert agreement["json"] == {
        "n": 32, "accepted": 20, "not_accepted": 12, "auc": 1.0, "untied_pairs": 1.0,
        "weight": 1.0,
    }  # fmt: skip
    assert agreement["language"]["auc"] == 0.5
    assert "invoice/language: AUC 0.50 on 32 reviewed (20 accepted, 12 not), weight 1" in (
        run.outcome
    )


@pytest.mark.django_db
def test_validator_weights_move_per_caller_where_its_reviews_differ():
    """Overall json's scores only half predict the verdicts (no change for the task type), but
    for one agent they predict them perfectly and for another not at all: each agent gets a
    weight of its own, used by the gate for its requests; a revert removes it."""
    from routing.config import build_snapshot

    reviewed("approved", {"json": 9.0}, 30, agent="tidy-agent")
    reviewed("rejected", {"json": 2.0}, 10, agent="tidy-agent")
    for status in ("approved", "rejected"):
        reviewed(status, {"json": 9.0}, 15, agent="noisy-agent")
        reviewed(status, {"json": 2.0}, 15, agent="noisy-agent")
    run = learning_cycle_run(kind="validators")
    moved = {(c.caller, c.validator): (c.before, c.after) for c in run.changes.all()}
    assert moved == {("noisy-agent", "json"): (1.0, 0.8), ("tidy-agent", "json"): (1.0, 1.25)}
    assert run.data_used["agreement"]["invoice"]["json"]["auc"] == 0.6875
    assert run.data_used["agreement"]["invoice/tidy-agent"]["json"]["auc"] == 1.0
    snapshot = build_snapshot("test")
    weights = {
        caller: {s.name: s.weight for s in snapshot.validators_for("invoice", caller)}["json"]
        for caller in ("tidy-agent", "noisy-agent", "someone-else")
    }
    assert weights == {"tidy-agent": 1.25, "noisy-agent": 0.8, "someone-else": 1.0}
    change = run.changes.get(caller="tidy-agent")
    learning_change_revert(change=change, actor=None)
    assert not ValidatorConfig.objects.filter(caller="tidy-agent").exists()
