"""Learning benchmark: does the gateway learn to answer as well as its large tier, for less?

Method
------
Three upstream models in the simulator (``simulator/``) stand for the fast, medium and
large tiers. They differ in price and, per task type, in how often they give a *plausibly wrong*
answer (the simulator's ``wrong_rate``: an answer the validators cannot tell from a right one,
with one confidently false sentence). The truth is known: ``simulator.answers.is_wrong``
tells from the text alone whether an answer is wrong. Three task types, each with its own word in
the prompt (the simulator's topic), in a fixed mix:

=========  =====  =============  ===============  ==============  ===============
task type  share  fast wrong     medium wrong     large wrong     cheapest enough
=========  =====  =============  ===============  ==============  ===============
summarize  40 %   1 %            1 %              1 %             fast
extract    40 %   25 %           2 %              1 %             medium
code       20 %   45 %           25 %             2 %             large
=========  =====  =============  ===============  ==============  ===============

Prices (USD per million tokens, input and output alike): fast 0.10, medium 0.60, large 5.00.

The run, against an isolated gateway (a fresh data directory, ``.bench/learning/`` by default, the
embedded defaults: SQLite, in-process state, the config version file; one uvicorn worker, as
``make run`` starts it without Redis):

1. **Baselines**: the same traffic asked of one tier by name (``"model": "large"``, then
   ``"fast"``; such requests are never explored). Their audit records and review items are then
   deleted, so the learning starts without evidence.
2. **Start**: every task type's route starts on the large tier (an operator's safe default), with
   exploration on and two tunables an operator would set while the routes are being learnt:
   ``exploration_share`` 0.2 (a fifth of routed requests start one tier up or down) and
   ``sample_explored`` 1.0 (every explored answer is reviewed). Everything else is the default.
3. **Rounds**: each round sends the traffic (``--requests``, ``--concurrency`` at a time, through
   ``POST /v1/completion`` with the task type given) and records, for every answer, the tier that
   answered, its ``cost_usd`` and whether it is right (``is_wrong``); each prompt carries its own
   number, so no request repeats another. Once every audit record and review item of the round is
   written, a synthetic reviewer decides every pending review item from the truth (approve a right
   answer, reject a wrong one with the reason), and the three learning cycles run once each in
   beat's order (validators, thresholds, assignments; mode apply): a round stands for a day,
   compressed. The bench then waits until the gateway routes by the new config
   (``POST /v1/classify``) before the next round.

Per round it prints the start tier per task type, the approval rate (share of requests whose
answer is right: what the agents got), cost per 1000 requests and per 1000 approved answers, the
review load (share of requests that went to the review queue) and the ratios to always-large.
The target, checked on the last round: approval >= 95 % of always-large's, and cost per approved
answer <= 40 % of always-large's. The traffic (prompts, mix, order) is fixed by ``--seed``; the
simulator's wrong answers and the gateway's exploration are random draws, so runs vary a little.

Usage (``make learning-bench``): ``python bench/learning_bench.py [--rounds N] [--requests N]
[--concurrency N] [--seed N] [--exploration-share X] [--sample-explored X] [--dir DIR]
[--json FILE] [--quick] [--verbose]``. ``--quick`` (2 rounds of 150) is a smoke run of the
harness, too short to learn anything. The exit code is 0 whether or not the target is met (it is
reported); it is non-zero only when the harness itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import random
import secrets
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import run as load_bench  # bench/run.py: the process handling of the load benchmark
from run import HarnessError, Server, free_port, log_problems, say

REPO = Path(__file__).resolve().parent.parent
WORK_DIR = REPO / ".bench" / "learning"  # data/, logs/ and results.json (--dir)
VENV_BIN = REPO / ".venv" / "bin"
HOST = "127.0.0.1"

PROVIDER_NAME = "learning-sim"
SIMULATOR_LOG = "learning-simulator"
GATEWAY_LOG = "learning-gateway"
REVIEWER = "bench-reviewer"

# Target, checked on the last round against always-large.
MIN_APPROVAL_RATIO = 0.95
MAX_COST_RATIO = 0.40

# Tunables an operator would set while the routes are being learnt (globally).
BENCH_TUNABLES = {"exploration_share": 0.2, "sample_explored": 1.0}
CYCLES = ("validators", "thresholds", "assignments")  # beat's order: 6 h, 12 h, 24 h


@dataclass(frozen=True)
class TierModel:
    """One simulator model serving one tier: its price and its wrong-answer rate per task type."""

    tier: str
    name: str
    price_per_mtok: float  # USD, input and output alike
    wrong_rate: dict[str, float]

    def spec(self) -> str:
        """The simulator's ``--model`` option: ``NAME:wrong_rate=topic:rate/...``."""
        rates = "/".join(f"{topic}:{rate:g}" for topic, rate in self.wrong_rate.items())
        return f"{self.name}:wrong_rate={rates}"


MODELS = (
    TierModel("fast", "bench-fast", 0.10, {"summarize": 0.01, "extract": 0.25, "code": 0.45}),
    TierModel("medium", "bench-medium", 0.60, {"summarize": 0.01, "extract": 0.02, "code": 0.25}),
    TierModel("large", "bench-large", 5.00, {"summarize": 0.01, "extract": 0.01, "code": 0.02}),
)
TIERS = tuple(m.tier for m in MODELS)

# Task type -> share of the traffic. The task type's name is also the simulator's topic word,
# found in every prompt of that task type and in no other.
MIX = {"summarize": 0.4, "extract": 0.4, "code": 0.2}
SUBJECTS = (
    "the billing migration", "warehouse staffing", "the spring release", "supplier contracts",
    "the onboarding survey", "fleet maintenance", "the data retention policy", "store openings",
    "the pricing experiment", "customer churn", "the office move", "the security audit",
    "delivery delays", "the partner programme", "energy usage", "the hiring plan",
)  # fmt: skip
TEMPLATES = {
    "summarize": (
        "Summarize the meeting notes on {s} in three sentences.",
        "Summarize this incident report about {s} for the weekly newsletter.",
        "Please summarize the customer feedback on {s} for the management team.",
        "Summarize the main risks of {s} for a new team member.",
    ),
    "extract": (
        "Extract the dates, owners and amounts mentioned in the memo on {s}.",
        "Extract every deadline from the project plan for {s} as a list.",
        "From the email thread on {s}, extract the names of the people who agreed.",
        "Extract the invoice totals and their currencies from the report on {s}.",
    ),
    "code": (
        "Write Python code that validates the input records for {s}.",
        "Review this code and fix the bug in the retry loop used for {s}.",
        "Write the code of a small command line tool that reports on {s}.",
        "Refactor the code that computes the weekly figures for {s}.",
    ),
}


@dataclass(frozen=True)
class Request:
    task_type: str
    prompt: str


def make_traffic(n: int, seed: int) -> list[Request]:
    """``n`` requests in the fixed mix (exact counts), prompts and order drawn from ``seed``."""
    rng = random.Random(seed)
    counts = {task: round(n * share) for task, share in MIX.items()}
    counts[next(iter(MIX))] += n - sum(counts.values())
    traffic = [
        Request(task, rng.choice(TEMPLATES[task]).format(s=rng.choice(SUBJECTS)))
        for task, count in counts.items()
        for _ in range(count)
    ]
    rng.shuffle(traffic)
    for request in traffic:  # the simulator picks the wrong rate by the topic word in the prompt
        found = [task for task in MIX if task in request.prompt.lower()]
        if found != [request.task_type]:
            raise HarnessError(f"prompt {request.prompt!r} holds the topic words {found}")
    return traffic


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class Answer:
    task_type: str
    request_id: str
    tier: str
    cost_usd: float
    right: bool
    status: str
    explored: bool = False


@dataclass
class Round:
    """One round of traffic: what the agents got, what it cost, what went to review."""

    label: str
    start_tiers: dict[str, str]
    requests: int
    answers: list[Answer] = field(default_factory=list)
    failed: int = 0
    reviewed: dict[str, int] = field(default_factory=dict)  # review reason -> items
    rejected: int = 0
    changes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def right(self) -> int:
        return sum(a.right for a in self.answers)

    @property
    def approval(self) -> float:
        """Share of requests whose answer is right (a failed request is not approved)."""
        return self.right / self.requests if self.requests else 0.0

    @property
    def cost_usd(self) -> float:
        return sum(a.cost_usd for a in self.answers)

    @property
    def cost_per_1k(self) -> float:
        return 1000 * self.cost_usd / self.requests if self.requests else 0.0

    @property
    def cost_per_1k_approved(self) -> float:
        return 1000 * self.cost_usd / self.right if self.right else float("inf")

    @property
    def review_load(self) -> float:
        return sum(self.reviewed.values()) / self.requests if self.requests else 0.0

    def answered_by(self) -> dict[str, dict[str, int]]:
        """Task type -> tier -> answers."""
        out: dict[str, Counter[str]] = {task: Counter() for task in MIX}
        for answer in self.answers:
            out[answer.task_type][answer.tier] += 1
        return {
            task: dict(sorted(c.items(), key=lambda i: TIERS.index(i[0])))
            for task, c in out.items()
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "start_tiers": self.start_tiers,
            "requests": self.requests,
            "failed": self.failed,
            "right": self.right,
            "approval_rate": round(self.approval, 4),
            "cost_usd": round(self.cost_usd, 8),
            "cost_per_1k_requests_usd": round(self.cost_per_1k, 6),
            "cost_per_1k_approved_usd": round(self.cost_per_1k_approved, 6),
            "review_load": round(self.review_load, 4),
            "reviewed": self.reviewed,
            "rejected_in_review": self.rejected,
            "answered_by": self.answered_by(),
            "explored": sum(a.explored for a in self.answers),
            "changes": self.changes,
            "seconds": round(self.seconds, 1),
        }


# --------------------------------------------------------------------------------------------
# Setting up: environment, Django in this process, simulator, configuration, gateway
# --------------------------------------------------------------------------------------------


def isolated_env(data_dir: Path) -> dict[str, str]:
    """The environment of the gateway and of this process: embedded defaults in a fresh dir."""
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    # Nothing of the caller's gateway configuration may leak in (bench/run.py does the same).
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GATEWAY_") and k not in {"DATABASE_URL", "REDIS_URL", "DEBUG"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="gateway_project.settings",
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(48),
        GATEWAY_ENCRYPTION_KEY=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SECURE_SSL_REDIRECT="0",
        GATEWAY_DATA_DIR=str(data_dir),
        GATEWAY_HEALTH_CHECK_INTERVAL_S="0",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return env


def django_setup(env: dict[str, str]) -> None:
    """Django in this process, on the gateway's database and config version file; migrated."""
    for key in [k for k in os.environ if k.startswith("GATEWAY_")]:
        del os.environ[key]
    for key in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(key, None)
    os.environ.update(env)
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", "--noinput", verbosity=0)
    # The cycles' drift alerts are printed with the round they belong to (from the run's outcome).
    logging.getLogger("learning.cycles").setLevel(logging.CRITICAL)


def start_simulator(env: dict[str, str]) -> Server:
    port = free_port()
    models = [m.spec() for m in MODELS]
    argv = [
        str(VENV_BIN / "python"), "-m", "simulator",
        "--host", HOST, "--port", str(port), "--model", *models,
    ]  # fmt: skip
    server = Server(SIMULATOR_LOG, argv, env, port)
    server.wait_ready(f"http://{HOST}:{port}/_sim/health", timeout_s=30)
    return server


def configure(simulator_port: int, tunables: dict[str, float]) -> str:
    """Provider, deployments, routes (all on large), tunables, a reviewer; returns an API key.

    Written through the apps' services, as the admin would, so the config version changes.
    """
    from django.contrib.auth import get_user_model

    from agents.services import api_key_create
    from providers.models import ModelDeployment, Provider
    from providers.services import config_object_save, provider_save
    from routing.models import ClassificationRule, TaskRoute
    from scoring.services import tunable_set

    provider = Provider(
        name=PROVIDER_NAME,
        kind=Provider.Kind.OPENAI_COMPATIBLE,
        base_url=f"http://{HOST}:{simulator_port}/v1",
        enabled=True,
    )
    provider.full_clean()
    provider_save(provider=provider)
    for model in MODELS:
        price = Decimal(str(model.price_per_mtok))
        deployment = ModelDeployment(
            provider=provider,
            upstream_model=model.name,
            public_name=model.name,
            tier=model.tier,
            input_cost_per_mtok=price,
            output_cost_per_mtok=price,
            context_window=32768,
        )
        deployment.full_clean()
        config_object_save(obj=deployment)
    for task in (TaskRoute.DEFAULT, *MIX):
        route = TaskRoute.objects.filter(task_type=task).first() or TaskRoute(task_type=task)
        route.start_tier = "large"
        route.description = "Learning benchmark: start on the large tier."
        config_object_save(obj=route)
    # Only so that POST /v1/classify tells where the gateway starts each task type; the
    # benchmark's requests name their task type.
    for task in MIX:
        rule = ClassificationRule(task_type=task, match_type="keywords", pattern=task, priority=10)
        config_object_save(obj=rule)
    for name, value in tunables.items():
        tunable_set(name=name, value=value, source="bench", reason="learning benchmark")
    get_user_model().objects.create_user(username=REVIEWER, password=secrets.token_urlsafe(16))
    return api_key_create(agent_name="learning-bench")[1]


def start_gateway(env: dict[str, str]) -> Server:
    port = free_port()
    argv = [
        str(VENV_BIN / "uvicorn"), "gateway_project.asgi:application",
        "--host", HOST, "--port", str(port), "--workers", "1", "--loop", "uvloop",
        "--http", "httptools", "--no-access-log", "--lifespan", "on", "--log-level", "warning",
    ]  # fmt: skip
    server = Server(GATEWAY_LOG, argv, env, port)
    took = server.wait_ready(f"http://{HOST}:{port}/health", timeout_s=60)
    say(f"gateway up after {took:.1f} s (one uvicorn worker, SQLite)")
    return server


# --------------------------------------------------------------------------------------------
# A round: traffic, waiting for the audit writer, reviews, cycles
# --------------------------------------------------------------------------------------------


@dataclass
class Gateway:
    base_url: str
    key: str
    concurrency: int


async def send_all(
    gw: Gateway, traffic: Sequence[Request], *, caller: str, model: str, tag: str
) -> tuple[list[Answer], list[str]]:
    """Send every request (``gw.concurrency`` at a time); the answers, and the errors as text.

    Each prompt starts with its own number (``tag`` and the request's index), so no two requests
    of a run are the same: a response cache would have nothing to serve, and what is measured is
    the routing.
    """
    from simulator.answers import is_wrong

    semaphore = asyncio.Semaphore(gw.concurrency)
    answers: list[Answer] = []
    errors: list[str] = []
    client = httpx.AsyncClient(
        base_url=gw.base_url,
        headers={"Authorization": f"Bearer {gw.key}"},
        timeout=60.0,
        limits=httpx.Limits(max_connections=gw.concurrency),
        trust_env=False,
    )

    async def one(index: int, request: Request) -> None:
        payload: dict[str, Any] = {
            "caller": caller,
            "task_type": request.task_type,
            "input": f"Request {tag}-{index}: {request.prompt}",
            "language": "en",
            "max_tokens": 256,  # room for the whole answer: a cut-off one is another matter
        }
        if model:
            payload["model"] = model
        async with semaphore:
            try:
                response = await client.post("/v1/completion", json=payload)
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
        if response.status_code != 200:
            errors.append(f"HTTP {response.status_code}: {response.text[:300]}")
            return
        data = response.json()
        answers.append(
            Answer(
                task_type=request.task_type,
                request_id=str(data["id"]),
                tier=str(data["tier"]),
                cost_usd=float(data["cost_usd"]),
                right=not is_wrong(str(data["output"])),
                status=str(data["status"]),
            )
        )

    async with client:
        await asyncio.gather(*(one(i, r) for i, r in enumerate(traffic, start=1)))
    return answers, errors


def wait_for_audit(caller: str, expected: int, timeout_s: float = 60.0) -> None:
    """Until the gateway's batched audit writer has written the record of every answer to
    ``caller`` (it writes the review items in the same transaction)."""
    from routing.models import AuditRecord

    answered = AuditRecord.objects.filter(caller=caller, http_status=200)
    deadline = time.monotonic() + timeout_s
    written = 0
    while time.monotonic() < deadline:
        written = answered.count()
        if written >= expected:
            return
        time.sleep(0.2)
    raise HarnessError(f"only {written} of {expected} audit records of {caller} were written")


def play_round(
    gw: Gateway, traffic: Sequence[Request], *, label: str, caller: str, tag: str, model: str = ""
) -> Round:
    """Send the traffic and wait for its records; what went to review (undecided yet)."""
    from reviews.models import ReviewItem
    from routing.models import AuditRecord

    started = time.monotonic()
    tiers = dict.fromkeys(MIX, model) if model else start_tiers()
    result = Round(label=label, start_tiers=tiers, requests=len(traffic))
    answers, errors = asyncio.run(send_all(gw, traffic, caller=caller, model=model, tag=tag))
    if not answers:
        raise HarnessError(f"{label}: not one answer; first error: {errors[:1]}")
    if errors:
        say(f"  {len(errors)} of {len(traffic)} requests failed, e.g. {errors[0]}")
    result.answers, result.failed = answers, len(errors)
    wait_for_audit(caller, len(answers))
    explored = set(
        AuditRecord.objects.filter(caller=caller, metadata__has_key="exploration").values_list(
            "request_id", flat=True
        )
    )
    for answer in answers:
        answer.explored = answer.request_id in explored
    reasons = ReviewItem.objects.filter(caller=caller).values_list("reason", flat=True)
    result.reviewed = dict(Counter(reasons))
    result.seconds = time.monotonic() - started
    return result


def forget(caller: str) -> None:
    """Delete a baseline's audit records, and with them its review items: no evidence."""
    from routing.models import AuditRecord

    AuditRecord.objects.filter(caller=caller).delete()


def review_all(actor: Any) -> tuple[int, int]:
    """The synthetic reviewer decides every pending item from the truth: (approved, rejected)."""
    from reviews.models import ReviewItem
    from reviews.services import review_item_decide
    from simulator.answers import is_wrong

    approved = rejected = 0
    pending = ReviewItem.objects.filter(status=ReviewItem.Status.PENDING).select_related(
        "audit_record"
    )
    for item in pending:
        if is_wrong(item.audit_record.output):
            review_item_decide(
                item_id=item.pk,
                actor=actor,
                decision="reject",
                reason="states something false with confidence",
            )
            rejected += 1
        else:
            review_item_decide(item_id=item.pk, actor=actor, decision="approve")
            approved += 1
    return approved, rejected


def run_cycles(verbose: bool) -> list[str]:
    """One run of each cycle, in beat's order; a line per change (the validators' weights
    summed up in one unless ``verbose``) and per drift alert."""
    from learning.cycles import learning_cycle_run
    from learning.models import LearningRun

    lines = []
    for kind in CYCLES:
        run = learning_cycle_run(kind=kind, mode=LearningRun.Mode.APPLY)
        if run.status != LearningRun.Status.SUCCEEDED:
            raise HarnessError(f"the {kind} cycle ended {run.status}: {run.outcome}")
        changes = list(run.changes.order_by("id"))
        if kind == "validators" and changes and not verbose:
            moved = ", ".join(
                f"{c.validator}[{c.task_type}] {c.before:g}->{c.after:g}" for c in changes
            )
            lines.append(f"{kind}: {len(changes)} weight(s) moved: {moved}")
        else:
            for change in changes:
                before, after = change.value_label(change.before), change.value_label(change.after)
                line = (
                    f"{kind}: {change.target}[{change.task_type}] {before} -> {after}: "
                    f"{change.expected_effect}"
                )
                lines.append(line if verbose or len(line) <= 200 else line[:197] + "...")
        lines += [f"{kind}: {a}" for a in run.outcome.splitlines() if a.startswith("ALERT")]
    return lines


def start_tiers() -> dict[str, str]:
    """Each task type's start tier, as its route in the database says."""
    from routing.models import TaskRoute

    routes = TaskRoute.objects.filter(task_type__in=list(MIX))
    tiers = dict(routes.values_list("task_type", "start_tier"))
    return {task: tiers.get(task, "?") for task in MIX}


def wait_for_routes(gw: Gateway, wanted: dict[str, str], timeout_s: float = 15.0) -> None:
    """Until the gateway starts every task type where ``wanted`` says (the config reload)."""
    samples = {task: TEMPLATES[task][0].format(s=SUBJECTS[0]) for task in MIX}
    deadline = time.monotonic() + timeout_s
    seen: dict[str, str] = {}
    headers = {"Authorization": f"Bearer {gw.key}"}
    with httpx.Client(base_url=gw.base_url, headers=headers, trust_env=False) as client:
        while time.monotonic() < deadline:
            for task, prompt in samples.items():
                data = client.post("/v1/classify", json={"input": prompt}).json()
                seen[task] = f"{data.get('task_type')}:{data.get('tier')}"
            if all(seen[task] == f"{task}:{tier}" for task, tier in wanted.items()):
                return
            time.sleep(0.2)
    raise HarnessError(f"the gateway did not pick up the routes {wanted}: it has {seen}")


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.0%}" if base else "n/a"


def table(rounds: Sequence[Round], large: Round) -> list[str]:
    """The Markdown table: one row per round, with the ratios to always-large."""
    headers = [
        "round",
        *(f"{task} starts on" for task in MIX),
        "approval",
        "USD / 1k requests",
        "USD / 1k approved",
        "review load",
        "approval vs large",
        "cost / approved vs large",
    ]
    rows = [
        [
            r.label,
            *(r.start_tiers[task] for task in MIX),
            f"{r.approval:.1%}",
            f"{r.cost_per_1k:.4f}",
            f"{r.cost_per_1k_approved:.4f}",
            f"{r.review_load:.1%}",
            _ratio(r.approval, large.approval),
            _ratio(r.cost_per_1k_approved, large.cost_per_1k_approved),
        ]
        for r in rounds
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    names = 1 + len(MIX)  # left-aligned; the numbers right-aligned

    def line(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return (
            "| " + " | ".join(c.ljust(w) if i < names else c.rjust(w) for i, (c, w) in pairs) + " |"
        )

    return [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]


def target_check(last: Round, large: Round) -> tuple[bool, str]:
    approval = last.approval / large.approval if large.approval else 0.0
    cost = last.cost_per_1k_approved / large.cost_per_1k_approved
    ok = approval >= MIN_APPROVAL_RATIO and cost <= MAX_COST_RATIO
    detail = (
        f"{last.label}: approval {last.approval:.1%} = {approval:.1%} of always-large's "
        f"{large.approval:.1%} (>= {MIN_APPROVAL_RATIO:.0%} wanted); cost per approved answer "
        f"{cost:.1%} of always-large's (<= {MAX_COST_RATIO:.0%} wanted)"
    )
    return ok, detail


def final_evidence() -> list[str]:
    """The evidence of the last assignments run: reviews per task type and tier."""
    from learning.models import LearningRun

    run = LearningRun.objects.filter(kind=LearningRun.Kind.ASSIGNMENTS).order_by("-id").first()
    estimates: dict[str, dict[str, Any]] = (run.data_used or {}).get("estimates", {}) if run else {}
    lines = []
    for task, tiers in estimates.items():
        parts = []
        for tier, e in tiers.items():
            bound = "n/a" if e["wilson_lower"] is None else f"{e['wilson_lower']:.0%}"
            parts.append(f"{tier} {e['accepted']}/{e['n']} accepted (lower bound {bound})")
        lines.append(f"  {task}: " + "; ".join(parts))
    return lines


def print_round(result: Round, large: Round, approved: int, rejected: int) -> None:
    tiers = ", ".join(f"{task} {tier}" for task, tier in result.start_tiers.items())
    answered = "; ".join(
        f"{task} " + ", ".join(f"{tier} {n}" for tier, n in by.items())
        for task, by in result.answered_by().items()
    )
    explored = sum(a.explored for a in result.answers)
    say(
        f"\n{result.label} (starts: {tiers}; {result.seconds:.0f} s)\n"
        f"  approval {result.approval:.1%} ({_ratio(result.approval, large.approval)} of "
        f"always-large's), {result.cost_per_1k_approved:.4f} USD / 1k approved "
        f"({_ratio(result.cost_per_1k_approved, large.cost_per_1k_approved)}), review load "
        f"{result.review_load:.1%}: {approved} approved, {rejected} rejected\n"
        f"  answered by: {answered} ({explored} explored)"
    )
    for line in result.changes:
        say(f"  {line}")
    if not any(line.startswith("assignments:") for line in result.changes):
        say("  assignments: no change of start tier")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=None, help="learning rounds (6)")
    parser.add_argument("--requests", type=int, default=None, help="requests per round (600)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (16)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the traffic (1)")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 150: a smoke run")
    parser.add_argument("--verbose", action="store_true", help="print the changes in full")
    parser.add_argument(
        "--dir", type=Path, default=WORK_DIR, help="for data/ and logs/ (.bench/learning)"
    )
    parser.add_argument("--json", type=Path, default=None, help="results (DIR/results.json)")
    for name, value in BENCH_TUNABLES.items():
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=float, default=value, help=f"tunable ({value:g})")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 2 if args.quick else 6
    if args.requests is None:
        args.requests = 150 if args.quick else 600
    if args.rounds < 1 or args.requests < 10 or args.concurrency < 1:
        parser.error("--rounds must be >= 1, --requests >= 10 and --concurrency >= 1")
    args.dir = args.dir.resolve()
    args.json = args.json or args.dir / "results.json"
    args.tunables = {name: getattr(args, name) for name in BENCH_TUNABLES}
    return args


def benchmark(args: argparse.Namespace) -> None:
    # The servers' logs: bench/run.py's Server writes them, and log_problems reads them, there.
    load_bench.LOG_DIR = log_dir = args.dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = isolated_env(args.dir / "data")
    say(f"data and logs in {args.dir}/")
    django_setup(env)
    from django.contrib.auth import get_user_model

    simulator = start_simulator(env)
    key = configure(simulator.port, args.tunables)
    reviewer = get_user_model().objects.get(username=REVIEWER)
    gateway = start_gateway(env)
    gw = Gateway(f"http://{HOST}:{gateway.port}", key, args.concurrency)
    traffic = make_traffic(args.requests, args.seed)

    say("\nmodels (USD per million tokens, in and out; share of plausibly wrong answers):")
    for m in MODELS:
        rates = ", ".join(f"{task} {rate:.0%}" for task, rate in m.wrong_rate.items())
        say(f"  {m.tier:<6} {m.name:<12} {m.price_per_mtok:5.2f}  {rates}")
    mix = ", ".join(f"{task} {share:.0%}" for task, share in MIX.items())
    say(
        f"traffic: {mix}; {args.requests} requests a round, {args.concurrency} at a time, "
        f"seed {args.seed}"
    )
    tunables = ", ".join(f"{name} {value:g}" for name, value in args.tunables.items())
    say(f"tunables: {tunables}, the others default; every task type starts on large")

    baselines = []
    for tier in ("large", "fast"):
        caller = f"baseline-{tier}"
        result = play_round(
            gw, traffic, label=f"always {tier}", caller=caller, tag=tier[0].upper(), model=tier
        )
        forget(caller)
        baselines.append(result)
        say(
            f"\n{result.label}: approval {result.approval:.1%}, {result.cost_per_1k:.4f} USD / "
            f"1k requests, {result.cost_per_1k_approved:.4f} USD / 1k approved"
        )
    large = baselines[0]

    rounds: list[Round] = []
    for number in range(1, args.rounds + 1):
        result = play_round(
            gw, traffic, label=f"round {number}", caller=f"round-{number}", tag=f"R{number}"
        )
        approved, result.rejected = review_all(reviewer)
        result.changes = run_cycles(args.verbose)
        rounds.append(result)
        print_round(result, large, approved, result.rejected)
        wait_for_routes(gw, start_tiers())

    say("\nevidence of the last assignments cycle (reviews per task type and tier):")
    for line in final_evidence():
        say(line)
    rows = table([*baselines, *rounds], large)
    say("\n" + "\n".join(rows))
    ok, detail = target_check(rounds[-1], large)
    say(
        f"\n{'PASS' if ok else 'FAIL'}  target: approval >= {MIN_APPROVAL_RATIO:.0%} of "
        f"always-large's at <= {MAX_COST_RATIO:.0%} of its cost per approved answer\n      {detail}"
    )

    gateway.stop()
    simulator.stop()
    problems = {name: log_problems(name) for name in (GATEWAY_LOG, SIMULATOR_LOG)}
    for name, found in problems.items():
        if found:
            say(f"\n{name}: warnings/errors logged (in {log_dir}/):")
            for text in found:
                say(f"  {text}")
    report = {
        "settings": {
            "rounds": args.rounds,
            "requests": args.requests,
            "concurrency": args.concurrency,
            "seed": args.seed,
            "mix": MIX,
            "models": [asdict(m) for m in MODELS],
            "tunables": args.tunables,
        },
        "baselines": [b.as_dict() for b in baselines],
        "rounds": [r.as_dict() for r in rounds],
        "target": {"met": ok, "detail": detail},
        "table": rows,
        "log_problems": problems,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    say(f"\nresults written to {args.json}")


def main(argv: Sequence[str] | None = None) -> int:
    return load_bench.run_harness(benchmark, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
