"""Every upstream call made for a request is its caller's spend: second opinions, classifications
and escalations are costed, reserved against budgets, audited as attempts and rolled up per model,
over real HTTP against the simulator (which counts what a real upstream would bill)."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest
from factories import sim_setup

from agents.models import Agent, Budget, SpendRollup
from agents.services import api_key_create
from routing import metrics
from routing.models import AuditRecord

# USD per million input and output tokens of the standard simulator setup (tests/factories.py).
PRICES = {
    "sim-fast": (Decimal(0), Decimal(0)),
    "sim-medium": (Decimal(1), Decimal(2)),
    "sim-large": (Decimal(3), Decimal(15)),
    "sim-external": (Decimal("0.5"), Decimal("1.5")),
}
CENT_OF_A_MICRODOLLAR = Decimal("0.00000005")  # rounding of per-call costs to 8 decimals


@pytest.fixture
def sim(gateway, simulator):
    sim_setup(simulator.url)
    return simulator


def agent_key(name: str = "coder") -> tuple[Agent, str]:
    agent = Agent.objects.create(name=name)
    return agent, api_key_create(agent_name=name)[1]


def ask(gateway, key: str, **body: Any) -> httpx.Response:
    payload = {"input": "Explain how tides work", **body}
    return httpx.post(
        f"{gateway.url}/v1/completion",
        json=payload,
        headers={"Authorization": f"Bearer {key}", "Cache-Control": "no-store"},
        timeout=20,
    )


def upstream_bill(simulator) -> dict[str, Decimal]:
    """What each simulated upstream would have charged for the answers it served."""
    bill = {}
    for model, tokens in simulator.stats()["tokens"].items():
        price_in, price_out = PRICES[model]
        bill[model] = (tokens["in"] * price_in + tokens["out"] * price_out) / 1_000_000
    return bill


def record(gateway, request_id: str) -> AuditRecord:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        gateway.flush_audit()
        found = AuditRecord.objects.filter(request_id=request_id).first()
        if found is not None:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no audit record for {request_id}")


def rollups(agent: str) -> dict[str, SpendRollup]:
    return {r.model: r for r in SpendRollup.objects.filter(agent=agent)}


def ask_for_second_opinions(task_type: str = "legal", model: str = "sim-large") -> None:
    from scoring.models import ValidatorConfig
    from scoring.services import validator_config_save

    validator_config_save(
        config=ValidatorConfig(task_type=task_type, validator="agreement", params={"model": model})
    )


def test_a_second_opinion_is_billed_audited_and_rolled_up(gateway, sim, admin_client):
    """The agreement validator's call to its partner model is in the response's cost_usd and
    tokens, in the audit record as an attempt marked second_opinion with its own tokens and cost,
    and in the rollups of the partner model: the gateway reports what the upstreams were paid."""
    ask_for_second_opinions()
    _, key = agent_key()
    response = ask(gateway, key, task_type="legal", model="medium")
    assert response.status_code == 200, response.text
    body = response.json()
    paid = upstream_bill(sim)
    assert set(paid) == {"sim-medium", "sim-large"}
    assert abs(Decimal(str(body["cost_usd"])) - sum(paid.values())) <= CENT_OF_A_MICRODOLLAR
    tokens = sim.stats()["tokens"]
    assert body["tokens"] == {
        "in": tokens["sim-medium"]["in"] + tokens["sim-large"]["in"],
        "out": tokens["sim-medium"]["out"] + tokens["sim-large"]["out"],
    }
    opinion = next(a for a in body["attempts"] if a.get("purpose") == "second_opinion")
    assert opinion["model"] == "sim-large" and opinion["outcome"] == "ok"
    assert opinion["tokens_in"] == tokens["sim-large"]["in"]
    assert opinion["tokens_out"] == tokens["sim-large"]["out"]
    assert abs(Decimal(str(opinion["cost_usd"])) - paid["sim-large"]) <= CENT_OF_A_MICRODOLLAR
    answer = next(a for a in body["attempts"] if "confidence" in a)
    assert answer["model"] == "sim-medium" and "purpose" not in answer

    stored = record(gateway, body["id"])
    assert stored.cost_usd == Decimal(str(body["cost_usd"]))
    assert (stored.tokens_in, stored.tokens_out) == (body["tokens"]["in"], body["tokens"]["out"])
    assert stored.attempts == body["attempts"]
    rows = rollups("coder")
    assert rows["sim-medium"].requests == 1
    assert rows["sim-medium"].cost_usd == Decimal(str(answer["cost_usd"]))
    assert rows["sim-large"].requests == 0  # the request counts once, on the answering model
    assert rows["sim-large"].cost_usd == Decimal(str(opinion["cost_usd"]))
    assert rows["sim-large"].tokens_out == tokens["sim-large"]["out"]
    assert sum(r.cost_usd for r in rows.values()) == stored.cost_usd
    listed = admin_client.get("/admin/routing/auditrecord/").content.decode()
    assert "sim-large [second opinion] ✓" in listed and "sim-medium ✓" in listed
    detail = admin_client.get(f"/admin/routing/auditrecord/{stored.pk}/change/").content.decode()
    assert "<td>second_opinion</td>" in detail and f"<td>{opinion['cost_usd']}</td>" in detail


def test_a_budget_that_covers_the_answer_but_not_the_second_opinion_refuses(gateway, sim):
    """The second opinion's worst case is reserved with the answer's, in the one admission step:
    a budget that covers only the answer refuses the request before any upstream call, and under
    a larger one the requests stop before what the upstreams were paid passes the cap."""
    ask_for_second_opinions()
    agent, key = agent_key()
    budget = Budget.objects.create(
        scope="agent", agent=agent, period="day", limit_usd=Decimal("0.001")
    )
    # The answer on medium may cost up to ~$0.0002, the second opinion on large ~$0.0016.
    refused = ask(gateway, key, task_type="legal", model="medium", max_tokens=100)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "budget_exceeded"
    assert sim.calls("sim-medium") == 0 and sim.calls("sim-large") == 0

    budget.limit_usd = Decimal("0.005")
    budget.save()
    statuses = [
        ask(gateway, key, task_type="legal", model="medium", max_tokens=100).status_code
        for _ in range(8)
    ]
    assert statuses[0] == 200 and statuses[-1] == 429, statuses
    paid = sum(upstream_bill(sim).values(), Decimal(0))
    assert paid <= budget.limit_usd
    gateway.flush_audit()
    spent = sum(r.cost_usd for r in AuditRecord.objects.filter(agent="coder"))
    assert abs(spent - paid) <= CENT_OF_A_MICRODOLLAR * statuses.count(200) * 2
    assert sum(r.cost_usd for r in SpendRollup.objects.filter(agent="coder")) == spent


def test_escalation_attempts_are_charged_to_the_models_that_served_them(gateway, sim):
    """After an escalation from fast to medium and large, each model's rollup (and cost and token
    metrics) holds what its own call used; the free fast model costs nothing, and the request
    counts once, on the model whose answer was returned."""
    for model in ("sim-fast", "sim-medium", "sim-large"):
        sim.configure(model, quality="bad")
    cost_before = {m: metrics.COST.labels(m)._value.get() for m in PRICES}
    tokens_before = {m: metrics.TOKENS.labels(m, "out")._value.get() for m in PRICES}
    _, key = agent_key()
    response = ask(gateway, key, task_type="analysis")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["escalations"] == 2
    paid = upstream_bill(sim)
    tokens = sim.stats()["tokens"]
    stored = record(gateway, body["id"])
    rows = rollups("coder")
    assert set(rows) == {"sim-fast", "sim-medium", "sim-large"}
    assert rows["sim-fast"].cost_usd == 0  # $0 per token, however the request ended
    for model in ("sim-fast", "sim-medium", "sim-large"):
        row = rows[model]
        assert abs(row.cost_usd - paid[model]) <= CENT_OF_A_MICRODOLLAR, model
        assert (row.tokens_in, row.tokens_out) == (tokens[model]["in"], tokens[model]["out"])
        assert row.requests == (1 if model == body["model"] else 0)
        assert (
            metrics.TOKENS.labels(model, "out")._value.get() - tokens_before[model]
            == (tokens[model]["out"])
        )
        spent = metrics.COST.labels(model)._value.get() - cost_before[model]
        assert abs(Decimal(str(spent)) - paid[model]) <= CENT_OF_A_MICRODOLLAR
    assert sum(r.cost_usd for r in rows.values()) == stored.cost_usd
    assert stored.cost_usd == Decimal(str(body["cost_usd"]))


@pytest.fixture
def classifier(sim, settings):
    """Unmatched inputs are classified by asking sim-medium (a priced model)."""
    from routing.config import routing_config_changed
    from routing.models import TaskRoute

    settings.GATEWAY = {**settings.GATEWAY, "CLASSIFIER_MODEL": "sim-medium"}
    TaskRoute.objects.create(task_type="review", start_tier="fast")
    routing_config_changed()
    sim.configure("sim-medium", reply="review")
    return sim


def test_classification_by_a_model_is_billed_audited_and_rolled_up(gateway, classifier):
    """The classifier's call is the request's spend: in cost_usd, audited as an attempt marked
    classification, rolled up on the classifier model; a stream's record carries it too."""
    _, key = agent_key()
    response = ask(gateway, key, input="please look over my change")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task_type"] == "review" and body["model"] == "sim-fast"
    paid = upstream_bill(classifier)
    assert paid["sim-medium"] > 0
    assert abs(Decimal(str(body["cost_usd"])) - paid["sim-medium"]) <= CENT_OF_A_MICRODOLLAR
    first = body["attempts"][0]
    assert (first["purpose"], first["model"], first["outcome"]) == (
        "classification",
        "sim-medium",
        "ok",
    )
    assert first["tokens_in"] == classifier.stats()["tokens"]["sim-medium"]["in"]
    stored = record(gateway, body["id"])
    assert stored.cost_usd == Decimal(str(body["cost_usd"]))
    rows = rollups("coder")
    assert rows["sim-medium"].requests == 0 and rows["sim-fast"].requests == 1
    assert rows["sim-medium"].cost_usd == stored.cost_usd

    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json={
            "model": "auto",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "please look over my change"}],
        },
        headers={"Authorization": f"Bearer {key}"},
        timeout=20,
    ) as streamed:
        assert streamed.status_code == 200
        events = [line[6:] for line in streamed.iter_lines() if line.startswith("data: {")]
        request_id = streamed.headers["x-gateway-request-id"]
    usage = next(json.loads(e)["usage"] for e in events if '"usage"' in e)
    streamed_record = record(gateway, request_id)
    assert streamed_record.attempts[0]["purpose"] == "classification"
    assert streamed_record.cost_usd == Decimal(str(streamed_record.attempts[0]["cost_usd"]))
    assert streamed_record.cost_usd > 0
    # The stream's usage counts the classifier's tokens too, as the record does.
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (
        streamed_record.tokens_in,
        streamed_record.tokens_out,
    )


def test_a_budget_that_cannot_cover_the_classification_refuses_before_calling(gateway, classifier):
    """The classifier's call is reserved before it is made: a budget too small for it refuses
    the request (429) and no upstream is called."""
    agent, key = agent_key()
    Budget.objects.create(scope="agent", agent=agent, period="day", limit_usd=Decimal("0.0001"))
    refused = ask(gateway, key, input="please look over my change")
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "budget_exceeded"
    assert classifier.calls("sim-medium") == 0 and classifier.calls("sim-fast") == 0


def test_the_classify_endpoint_bills_the_classifier_model(gateway, classifier):
    """POST /v1/classify asks the classifier model on the caller's behalf: the call is audited
    (endpoint classify) and rolled up, and a budget that cannot cover it refuses before calling."""
    agent, key = agent_key()

    def classify() -> httpx.Response:
        return httpx.post(
            f"{gateway.url}/v1/classify",
            json={"input": "please look over my change"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=20,
        )

    found = classify()
    assert found.status_code == 200, found.text
    assert (found.json()["task_type"], found.json()["method"]) == ("review", "model")
    paid = upstream_bill(classifier)["sim-medium"]
    gateway.flush_audit()
    stored = AuditRecord.objects.get(agent="coder", endpoint="classify")
    assert abs(stored.cost_usd - paid) <= CENT_OF_A_MICRODOLLAR and stored.cost_usd > 0
    assert (stored.model, stored.task_type) == ("sim-medium", "review")
    assert stored.attempts[0]["purpose"] == "classification"
    assert rollups("coder")["sim-medium"].cost_usd == stored.cost_usd

    Budget.objects.create(scope="agent", agent=agent, period="day", limit_usd=Decimal("0.0001"))
    refused = classify()
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
    assert classifier.calls("sim-medium") == 1
