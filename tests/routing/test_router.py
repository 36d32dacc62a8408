"""Pure parts of the router's plan: when health checks alone would leave a request nothing."""

from __future__ import annotations

from dataclasses import replace

from providers.base import Target
from routing.config import Deployment
from routing.router import _health_panic, _PlanState

NEEDS = {"tokens": 100, "requests": 1}
BASE = Deployment(
    id=1, public_name="fast", upstream_model="fast", tier="fast", provider_id=1,
    provider_name="p1", provider_kind="ollama", is_local=True,
    target=Target(base_url="http://127.0.0.1:9", upstream_model="fast"),
    input_cost_per_token=0.0, output_cost_per_token=0.0, context_window=32768, weight=1,
    max_concurrent=0, has_credentials=True,
)  # fmt: skip
FAST = BASE
MEDIUM = replace(BASE, id=2, public_name="medium", tier="medium", provider_id=2)


def state(*, down: tuple[Deployment, ...] = (), other: dict[int, str] | None = None) -> _PlanState:
    """A plan state where ``down`` are down by health checks and ``other`` skipped otherwise."""
    reasons = {d.id: "provider failed its last 3 health checks" for d in down}
    reasons.update(other or {})
    return _PlanState(
        reasons=reasons,
        down_by_health={d.id for d in down},
        failed_checks={d.provider_id: 3 for d in down},
        back_at={},
        limits={},
        daily={},
    )


def test_no_panic_while_a_candidate_is_free_of_health_marks():
    """A model that health checks say nothing against keeps the down one skipped."""
    assert not _health_panic([FAST, MEDIUM], state(down=(FAST,)), NEEDS, 0.0)
    assert not _health_panic([FAST, MEDIUM], state(), NEEDS, 0.0)


def test_panic_when_every_candidate_is_down_by_health_checks():
    """All down by checks alone: the request tries them."""
    assert _health_panic([FAST, MEDIUM], state(down=(FAST, MEDIUM)), NEEDS, 0.0)


def test_models_ruled_out_otherwise_are_not_candidates():
    """A cooling, key-less or too-small model does not hold the panic back."""
    cooling = state(down=(FAST,), other={MEDIUM.id: "cooling down after failures"})
    assert _health_panic([FAST, MEDIUM], cooling, NEEDS, 0.0)
    keyless = replace(MEDIUM, has_credentials=False)
    assert _health_panic([FAST, keyless], state(down=(FAST,)), NEEDS, 0.0)
    small = replace(MEDIUM, context_window=50)
    assert _health_panic([FAST, small], state(down=(FAST,)), NEEDS, 0.0)
