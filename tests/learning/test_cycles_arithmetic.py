"""The learning cycles' arithmetic, without HTTP or a database: verdicts in, thresholds, weights
and tiers out. (No test here is marked ``django_db``: a query would fail it.)"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from learning.cycles.assignments import (
    caller_tier_estimates,
    cheapest_meeting,
    cost_change,
    estimates_line,
    one_tier_toward,
    tier_estimates,
    wilson_lower,
)
from learning.cycles.evidence import counted_scores
from learning.cycles.plans import Verdict
from learning.cycles.runs import drift_line
from learning.cycles.thresholds import (
    STEPS,
    acceptance,
    approve_at_next,
    band_from,
    raising_helps,
    review_below_next,
    warning_band_kept,
)
from learning.cycles.validators import agreement, auc, next_weight, untied_share


def verdicts(score: float, accepted: int, rejected: int = 0) -> list[Verdict]:
    """``accepted`` + ``rejected`` reviewed answers, all scoring ``score``."""
    return [(score, True)] * accepted + [(score, False)] * rejected


def no_load(threshold: float) -> float | None:
    """A review load that must not be asked for."""
    raise AssertionError(f"the load at {threshold} was not needed")


# --- thresholds -----------------------------------------------------------------------------------


def test_steps_go_by_tenths_up_to_half_a_point():
    """One cycle moves a threshold by 0.1 to 0.5, on the grid."""
    assert STEPS == (0.1, 0.2, 0.3, 0.4, 0.5)


def test_acceptance_is_the_accepted_share_and_none_without_verdicts():
    """Acceptance counts approved-as-is answers over all decided, and says nothing on none."""
    assert acceptance(verdicts(8.0, 3, 1)) == 0.75
    assert acceptance([]) is None
    assert band_from([(6.9, True), (7.0, False), (7.5, True)], 7.0) == [(7.0, False), (7.5, True)]


def test_approve_at_rises_to_the_smallest_step_that_reaches_the_target():
    """Rejected answers just above approve_at: the threshold rises just past them."""
    reviewed = verdicts(7.05, 0, 5) + verdicts(7.3, 20)
    assert approve_at_next(reviewed, approve_at=7.0, review_below=4.0, load=0.1) == 7.1


def test_approve_at_rises_by_the_largest_step_when_no_step_reaches_the_target():
    """Higher scores do better but none reaches 95 % within reach: the most one cycle allows."""
    reviewed = verdicts(7.0, 0, 10) + verdicts(8.0, 18, 2)
    assert raising_helps(reviewed, 7.0, acceptance(reviewed) or 0.0)
    assert approve_at_next(reviewed, approve_at=7.0, review_below=4.0, load=0.1) == 7.5


def test_approve_at_never_rises_past_ten():
    """The top of the scale caps a rise."""
    reviewed = verdicts(9.85, 0, 5) + verdicts(10.0, 20)
    assert approve_at_next(reviewed, approve_at=9.8, review_below=4.0, load=0.1) == 9.9
    short_everywhere = verdicts(9.8, 0, 5) + verdicts(10.0, 18, 2)
    assert approve_at_next(short_everywhere, approve_at=9.8, review_below=4.0, load=0.1) == 10.0


def test_approve_at_is_left_alone_when_no_higher_score_does_better():
    """Reviewers reject as often at every higher score: None, the validators cannot tell."""
    reviewed = verdicts(7.5, 16, 4) + verdicts(9.0, 16, 4)
    assert not raising_helps(reviewed, 7.0, 0.8)
    assert approve_at_next(reviewed, approve_at=7.0, review_below=4.0, load=0.1) is None


def test_approve_at_needs_a_band_of_ten_reviewed_answers():
    """Nine rejected answers in the approved band are not enough to move it."""
    reviewed = verdicts(7.5, 0, 9) + verdicts(5.0, 30)
    assert approve_at_next(reviewed, approve_at=7.0, review_below=4.0, load=0.5) == 7.0


def test_approve_at_comes_down_when_clean_and_the_review_load_is_over_target():
    """A clean band and too many reviews: down as far as the band stays on target, but above
    review_below."""
    reviewed = verdicts(6.6, 30) + verdicts(7.5, 20)
    assert approve_at_next(reviewed, approve_at=7.0, review_below=4.0, load=0.3) == 6.5
    assert approve_at_next(reviewed, approve_at=7.0, review_below=6.6, load=0.3) == 6.7


def test_approve_at_stays_when_clean_but_the_review_load_is_on_target():
    """A clean band alone is no reason to approve more on its own."""
    reviewed = verdicts(6.6, 30) + verdicts(7.5, 20)
    assert approve_at_next(reviewed, approve_at=7.0, review_below=4.0, load=0.2) == 7.0
    assert approve_at_next(reviewed, approve_at=7.0, review_below=4.0, load=None) == 7.0


def test_review_below_comes_down_when_reviews_just_below_it_are_wasted():
    """Load over target and the answers just under review_below were accepted: down to the
    largest step that still has ten of them on target."""
    reviewed = verdicts(3.75, 12) + verdicts(3.55, 0, 5) + verdicts(8.0, 30)
    assert review_below_next(reviewed, review_below=4.0, load=0.3, load_at=no_load) == 3.6
    assert review_below_next(verdicts(3.5, 12), review_below=4.0, load=0.3, load_at=no_load) == 3.5


def test_review_below_stays_when_the_answers_below_it_are_rejected():
    """Load over target, but reviewers reject what scores just under it: the reviews help."""
    reviewed = verdicts(3.6, 2, 10)
    assert review_below_next(reviewed, review_below=4.0, load=0.3, load_at=no_load) == 4.0


def test_review_below_rises_as_far_as_the_load_stays_on_target():
    """Load under target and answers just above it fall short: up to the largest step whose
    load is still at most 20 %."""
    asked: list[float] = []

    def load_at(threshold: float) -> float | None:
        asked.append(threshold)
        return 0.1 if threshold <= 4.3 else 0.3

    reviewed = verdicts(4.2, 0, 10)
    assert review_below_next(reviewed, review_below=4.0, load=0.05, load_at=load_at) == 4.3
    assert asked == [4.5, 4.4, 4.3]


def test_review_below_stays_when_the_answers_above_it_are_fine_or_nothing_was_answered():
    """No reason to review more, or no load to measure: it stays."""
    fine = verdicts(4.2, 10)
    assert review_below_next(fine, review_below=4.0, load=0.05, load_at=no_load) == 4.0
    short = verdicts(4.2, 0, 10)
    assert review_below_next(short, review_below=4.0, load=None, load_at=no_load) == 4.0


def test_the_warning_band_stays_between_the_thresholds():
    """review_below is kept a tenth under approve_at, and never below 0."""
    assert warning_band_kept(7.0, 7.0) == 6.9
    assert warning_band_kept(4.0, 7.0) == 4.0
    assert warning_band_kept(0.5, 0.0) == 0.0


def test_drift_over_half_a_point_is_an_alert():
    """Half a point in the window is allowed; more is an alert line naming the move."""
    assert drift_line(tunable="approve_at", task_type="invoice", origin=7.0, after=7.5) == ""
    assert drift_line(tunable="approve_at", task_type="invoice", origin=7.0, after=8.0) == (
        "ALERT threshold drift: approve_at[invoice] moved 1.00 (7 -> 8) within 24 h"
    )


# --- validators -----------------------------------------------------------------------------------


def test_auc_is_the_mann_whitney_share_with_ties_counting_half():
    """Perfect separation is 1, reversed is 0, all ties 0.5; a worked example; None on an empty
    side."""
    assert auc([8, 9], [1, 2]) == 1.0
    assert auc([1, 2], [8, 9]) == 0.0
    assert auc([5, 5], [5]) == 0.5
    assert auc([3, 4], [1, 3]) == 0.875  # 1 + 0.5 + 1 + 1 over 4 pairs
    assert auc([], [1]) is None and auc([1], []) is None


def test_untied_share_counts_the_pairs_scored_differently():
    """Ties carry no evidence: the share of pairs that differ, 0 on an empty side."""
    assert untied_share([3, 4], [1, 3]) == 0.75
    assert untied_share([5, 5], [5]) == 0.0
    assert untied_share([], [1]) == 0.0


@pytest.mark.parametrize(
    ("weight", "score", "expected"),
    [
        (1.0, 0.75, 1.25),  # predicts the verdict: x1.25
        (2.8, 0.9, 3.0),  # capped at 3
        (0.0, 0.8, 0.2),  # a shadow validator comes back at the minimum
        (1.0, 0.55, 0.8),  # near chance: x0.8
        (0.24, 0.5, 0.0),  # under the minimum: shadow
        (0.0, 0.5, 0.0),  # a shadow stays one
        (1.0, 0.65, 1.0),  # in between: no evidence either way
        (0.5, 0.8, 0.625),
        (1.0 / 3, 0.8, 0.417),  # rounded to three places
    ],
)
def test_next_weight(weight, score, expected):
    """A validator's weight after a cycle, from its AUC."""
    assert next_weight(weight, score) == expected


def test_agreement_is_the_evidence_kept_per_validator():
    """Counts, the AUC and the untied share rounded to four places, and the weight."""
    assert agreement([3, 4, 5], [1, 3], score=auc([3, 4, 5], [1, 3]), weight=1.0) == {
        "n": 5,
        "accepted": 3,
        "not_accepted": 2,
        "auc": 0.9167,
        "untied_pairs": 0.8333,
        "weight": 1.0,
    }


def test_counted_scores_leave_out_failed_validators_and_junk():
    """Only named, numeric, counted results of a stored breakdown are evidence."""
    breakdown = [
        {"name": "json", "score": 10, "reason": "-"},
        {"name": "length", "score": 4.5},
        {"name": "schema", "score": 0, "reason": "not counted: the validator failed"},
        {"name": "lang", "score": "high"},
        {"score": 3},
        "junk",
    ]
    assert counted_scores(breakdown) == [("json", 10.0), ("length", 4.5)]
    assert counted_scores(None) == [] and counted_scores({"name": "json"}) == []


# --- assignments ----------------------------------------------------------------------------------


def test_wilson_lower_bound():
    """The 95 % lower bound: a perfect record needs 35 reviews to reach 90 %; a textbook case."""
    assert wilson_lower(0, 0) is None
    assert wilson_lower(35, 35) == pytest.approx(0.9011, abs=1e-4)
    assert (wilson_lower(34, 34) or 0.0) < 0.9
    assert wilson_lower(8, 10) == pytest.approx(0.4902, abs=1e-4)


def test_tier_estimates_join_reviews_and_usage_cheapest_first():
    """Per tier: acceptance and its bound from reviews, cost and latency from audit records;
    a tier with neither is left out, one with only requests has no acceptance."""
    counts = {"large": [35, 35], "fast": [10, 20]}
    usage: dict[str, dict[str, Any]] = {
        "fast": {"requests": 40, "cost": Decimal("0.000012345678"), "latency": 201.26},
        "medium": {"requests": 3, "cost": None, "latency": 480.0},
    }
    estimates = tier_estimates(counts, usage)
    assert list(estimates) == ["fast", "medium", "large"]
    assert estimates["fast"] == {
        "n": 20,
        "accepted": 10,
        "acceptance": 0.5,
        "wilson_lower": round(wilson_lower(10, 20) or 0.0, 4),
        "requests": 40,
        "mean_cost_usd": 0.00001235,
        "mean_latency_ms": 201.3,
    }
    assert estimates["medium"]["acceptance"] is None and estimates["medium"]["n"] == 0
    assert estimates["large"]["requests"] == 0 and estimates["large"]["mean_cost_usd"] is None


def test_the_cheapest_tier_meeting_the_target_is_chosen():
    """Twenty reviews and a lower bound of 90 % qualify; the cheapest such tier wins."""
    estimates = {
        "large": {"n": 40, "wilson_lower": 0.95},
        "medium": {"n": 36, "wilson_lower": 0.9},
        "fast": {"n": 19, "wilson_lower": 0.99},
    }
    assert cheapest_meeting(estimates) == "medium"
    assert cheapest_meeting({"fast": {"n": 50, "wilson_lower": None}}) is None
    assert cheapest_meeting({}) is None


def test_a_cycle_moves_one_tier_toward_the_best():
    """Never two tiers at once, up or down."""
    assert one_tier_toward("large", "fast") == "medium"
    assert one_tier_toward("fast", "large") == "medium"
    assert one_tier_toward("medium", "fast") == "fast"


def test_cost_change_between_tiers():
    """The mean cost before and after and their difference; None where a tier has no records."""
    per_tier = {"large": {"mean_cost_usd": 0.01}, "medium": {"mean_cost_usd": 0.001}}
    before, after, delta = cost_change(per_tier, "large", "medium")
    assert (before, after) == (0.01, 0.001) and delta == pytest.approx(-0.009)
    assert cost_change(per_tier, "medium", "fast") == (0.001, None, None)


def test_caller_estimates_count_a_missing_bound_as_zero():
    """An agent's own evidence per tier, its bound rounded (0 without reviews)."""
    assert caller_tier_estimates({"fast": [35, 35], "large": [0, 0]}) == {
        "fast": {"n": 35, "accepted": 35, "wilson_lower": 0.9011},
        "large": {"n": 0, "accepted": 0, "wilson_lower": 0.0},
    }


def test_estimates_line_lists_every_tier():
    """One note per task type with every tier's estimates."""
    per_tier = tier_estimates({"fast": [19, 20]}, {"fast": {"requests": 20, "cost": 0.0001}})
    assert estimates_line("invoice", per_tier) == (
        "invoice: fast n=20 acceptance 95% lower 76% cost 0.0001 latency None ms"
    )
