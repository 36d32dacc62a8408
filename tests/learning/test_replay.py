"""Replay estimates: the effect of a proposed change on recent traffic, as stored on the change."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from learning.cycles import learning_cycle_run
from learning.replay import replay_start_tier, replay_thresholds, rescore
from scoring.gates import GateConfig
from scoring.validators import score_answer
from scoring.validators.base import AnswerContext, ValidatorSetting

sys.path.insert(0, str(Path(__file__).parent))
from test_cycles import answers, reviewed


def test_rescore_matches_the_scoring_formula():
    """Rescoring a stored breakdown with a weight doubled gives what scoring with that weight
    gives: the replay uses the gate's own formula."""
    context = AnswerContext(
        task_type="t", prompt="Write a haiku about rain", output="rain rain rain rain " * 20,
        finish_reason="stop", language="", response_format=None,
    )  # fmt: skip
    settings = (ValidatorSetting("repetition", 1.0), ValidatorSetting("length", 1.0))
    doubled = (ValidatorSetting("repetition", 2.0), ValidatorSetting("length", 1.0))
    base = score_answer(context, settings)
    assert rescore(base.breakdown(), "repetition", 2.0) == score_answer(context, doubled).score
    assert rescore(base.breakdown(), "nope", 2.0) == base.score
    assert rescore("not a list", "repetition", 2.0) is None


@pytest.mark.django_db
def test_threshold_replay_counts_what_would_be_approved_and_reviewed():
    answers(3.0, 10)
    answers(6.0, 30)
    answers(7.2, 20)
    answers(9.0, 40)
    reviewed(7.2, "rejected", 5)
    reviewed(9.0, "approved", 5)
    since = timezone.now() - timedelta(days=1)
    replay = replay_thresholds(
        task_type="invoice", since=since, gate=GateConfig(), review_below=4.0, approve_at=7.5
    )
    assert replay.requests == 110 and replay.reviewed == 10
    assert replay.before.approval_rate == pytest.approx(70 / 110)  # 7.2 and 9.0 (with reviewed)
    assert replay.after.approval_rate == pytest.approx(45 / 110)
    assert replay.before.review_load == replay.after.review_load == pytest.approx(10 / 110)
    assert replay.before.approved_acceptance == pytest.approx(0.5)
    assert replay.after.approved_acceptance == pytest.approx(1.0)


@pytest.mark.django_db
def test_start_tier_replay_compares_the_two_tiers_answers():
    from routing.models import AuditRecord

    medium = answers(8.0, 10)
    large = answers(9.0, 10)
    AuditRecord.objects.filter(pk__in=[r.pk for r in medium]).update(tier="medium", cost_usd=0.001)
    AuditRecord.objects.filter(pk__in=[r.pk for r in large]).update(tier="large", cost_usd=0.01)
    since = timezone.now() - timedelta(days=1)
    replay = replay_start_tier(
        task_type="invoice", since=since, gate=GateConfig(), tier_before="large",
        tier_after="medium",
    )  # fmt: skip
    assert replay.requests == 20
    assert replay.before.cost_usd == pytest.approx(0.01)
    assert replay.after.cost_usd == pytest.approx(0.001)
    assert "cost/request $0.010000 -> $0.001000" in replay.summary()


@pytest.mark.django_db
def test_a_proposed_threshold_change_carries_its_replay():
    """Propose mode: the pending change says what it would do to recent traffic."""
    answers(9.0, 60)
    reviewed(7.2, "approved", 8)
    reviewed(7.2, "rejected", 6)
    reviewed(9.5, "approved", 30)
    run = learning_cycle_run(kind="thresholds", mode="propose")
    (change,) = run.changes.filter(tunable="approve_at")
    assert change.after == 7.3  # the smallest step past the rejected 7.2s
    replay = change.evidence["replay"]
    assert replay["requests"] == 104 and replay["reviewed"] == 44
    assert replay["before"]["approval_rate"] == 1.0
    assert replay["after"]["approval_rate"] == pytest.approx(90 / 104, abs=1e-4)
    assert replay["before"]["approved_acceptance"] == pytest.approx(38 / 44, abs=1e-4)
    assert replay["after"]["approved_acceptance"] == 1.0
    assert "replayed on 104 requests (44 reviewed)" in change.expected_effect
