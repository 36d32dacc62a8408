"""Learning cycles: the thresholds cycle moves the gates from reviewers' verdicts, audited and
revertible; one run of a kind at a time; scheduled by beat and run by a real Celery worker."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from learning import cycles
from learning.cycles import learning_change_apply, learning_change_revert, learning_cycle_run
from learning.models import LearningRun
from reviews.models import ReviewItem
from routing.models import AuditRecord
from scoring.models import TunableChange, TunableOverride
from scoring.services import tunable_set

ROOT = Path(__file__).resolve().parents[2]
# The review tests' builders (the tests have no packages; see pyproject.toml).
if str(ROOT / "tests" / "reviews") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests" / "reviews"))

from review_helpers import worker_database_url  # noqa: E402


def answers(
    confidence: float, count: int, task_type: str = "invoice", agent: str = ""
) -> list[AuditRecord]:
    """Answered requests as the gateway records them (not reviewed)."""
    now = timezone.now()
    return AuditRecord.objects.bulk_create(
        AuditRecord(
            request_id="call-" + uuid.uuid4().hex,
            endpoint="completion",
            caller="agent-a",
            agent=agent,
            task_type=task_type,
            status="approved" if confidence >= 7 else "warning" if confidence >= 4 else
            "pending_review",
            http_status=200,
            confidence=confidence,
            created_at=now,
            finished_at=now,
        )
        for _ in range(count)
    )  # fmt: skip


def reviewed(
    confidence: float, status: str, count: int, task_type: str = "invoice", agent: str = ""
) -> None:
    """Answered requests that a reviewer decided (``status``: approved, rejected, corrected)."""
    now = timezone.now()
    ReviewItem.objects.bulk_create(
        ReviewItem(
            audit_record=record,
            task_type=task_type,
            caller="agent-a",
            confidence=confidence,
            gate_status=record.status,
            reason="low_confidence" if record.status == "pending_review" else "sampled",
            status=status,
            decided_at=now - timedelta(hours=1),
        )
        for record in answers(confidence, count, task_type, agent)
    )


def override(name: str, task_type: str = "invoice", caller: str = "") -> float | None:
    row = TunableOverride.objects.filter(name=name, task_type=task_type, caller=caller).first()
    return row.value if row else None


def rejected_approvals() -> None:
    """Reviewers reject a fifth of the approved answers at 8, none at 9.5: a higher threshold
    helps, but no step within reach gets there, so approve_at moves by the largest step."""
    reviewed(8.0, "approved", 21)
    reviewed(8.0, "rejected", 6)
    reviewed(9.5, "approved", 10)


@pytest.mark.django_db
def test_approve_at_moves_up_when_reviewers_reject_approved_answers():
    """An approved band under 95 % accepted raises approve_at by one bounded step, audited."""
    rejected_approvals()
    run = learning_cycle_run(kind="thresholds")
    assert run.status == "succeeded" and run.data_used["reviewed"] == {"invoice": 37}
    (change,) = run.changes.all()
    assert (change.tunable, change.task_type, change.before, change.after) == (
        "approve_at", "invoice", 7.0, 7.5
    )  # fmt: skip
    assert change.state == "applied" and change.applied_at is not None
    assert change.evidence["approved_band"] == 37
    assert change.evidence["approved_band_acceptance"] == pytest.approx(31 / 37)
    assert override("approve_at") == 7.5
    history = TunableChange.objects.get(name="approve_at", task_type="invoice")
    assert (history.old_value, history.new_value, history.source) == (
        None, 7.5, "learning:thresholds"
    )  # fmt: skip


@pytest.mark.django_db
def test_approve_at_stays_when_no_higher_score_is_accepted_more_often():
    """Reviewers reject a fifth of the approved answers at every score (the validators cannot
    see what is wrong with them): raising approve_at would only add reviews, so it stays."""
    reviewed(8.0, "approved", 21)
    reviewed(8.0, "rejected", 6)
    reviewed(10.0, "approved", 16)
    reviewed(10.0, "rejected", 4)
    run = learning_cycle_run(kind="thresholds")
    assert not run.changes.filter(tunable="approve_at").exists()
    assert "no higher score does better" in run.outcome


@pytest.mark.django_db
def test_approve_at_moves_by_the_smallest_step_that_reaches_the_target():
    """Rejections only just above approve_at: a 0.1 step clears them, so it moves 0.1."""
    reviewed(7.0, "rejected", 8)
    reviewed(7.3, "approved", 30)
    run = learning_cycle_run(kind="thresholds")
    assert [(c.tunable, c.after) for c in run.changes.all()] == [("approve_at", 7.1)]
    assert override("approve_at") == 7.1


@pytest.mark.django_db
def test_thresholds_move_down_when_the_band_is_clean_and_review_load_high():
    """All approved answers accepted, half the answers under review_below and accepted too:
    both thresholds come down by at most 0.5."""
    reviewed(8.0, "approved", 40)
    reviewed(3.8, "approved", 40)
    run = learning_cycle_run(kind="thresholds")
    changes = {c.tunable: c for c in run.changes.all()}
    assert (changes["approve_at"].before, changes["approve_at"].after) == (7.0, 6.5)
    assert (changes["review_below"].before, changes["review_below"].after) == (4.0, 3.5)
    assert changes["review_below"].evidence["review_load"] == pytest.approx(0.5)
    assert changes["review_below"].evidence["review_load_after"] == 0.0
    assert (override("approve_at"), override("review_below")) == (6.5, 3.5)


@pytest.mark.django_db
def test_no_change_below_the_minimum_sample():
    """29 decided items of a task type are not enough to move anything."""
    reviewed(8.0, "rejected", 29)
    reviewed(8.0, "approved", 40, task_type="other")
    run = learning_cycle_run(kind="thresholds")
    assert run.status == "succeeded" and not run.changes.exists()
    assert run.data_used["reviewed"] == {"invoice": 29, "other": 40}
    assert "invoice: 29 reviewed items, fewer than 30" in run.outcome
    assert not TunableOverride.objects.exists() and not TunableChange.objects.exists()


@pytest.mark.django_db
def test_propose_mode_records_without_applying():
    """mode=propose leaves the change proposed; applying it later sets the tunable."""
    rejected_approvals()
    run = learning_cycle_run(kind="thresholds", mode="propose")
    (change,) = run.changes.all()
    assert change.state == "proposed" and override("approve_at") is None
    assert not TunableChange.objects.exists()
    admin = _user()
    learning_change_apply(change=change, actor=admin)
    change.refresh_from_db()
    assert change.state == "applied" and override("approve_at") == 7.5
    history = TunableChange.objects.get()
    assert (history.actor, history.source) == (admin, "learning:thresholds")
    with pytest.raises(ValueError, match="not proposed"):
        learning_change_apply(change=change, actor=admin)


@pytest.mark.django_db
def test_dry_run_writes_nothing():
    """A dry run returns an unsaved run whose outcome lists the change it would make."""
    rejected_approvals()
    out = StringIO()
    call_command("run_learning_cycle", "thresholds", "--dry-run", stdout=out)
    assert "approve_at[invoice] 7 -> 7.5" in out.getvalue()
    assert not LearningRun.objects.exists() and override("approve_at") is None


@pytest.mark.django_db
def test_revert_restores_the_old_value_with_history():
    """Reverting puts back the task type's earlier override (or removes a new one), audited."""
    tunable_set(name="approve_at", task_type="invoice", value=7.2, reason="by hand")
    rejected_approvals()
    (change,) = learning_cycle_run(kind="thresholds").changes.all()
    assert (change.before, change.after, change.before_overridden) == (7.2, 7.7, True)
    admin = _user()
    learning_change_revert(change=change, actor=admin)
    change.refresh_from_db()
    assert change.state == "reverted" and change.reverted_at is not None
    assert override("approve_at") == 7.2
    assert list(
        TunableChange.objects.order_by("id").values_list("old_value", "new_value", "source")
    ) == [(None, 7.2, "admin"), (7.2, 7.7, "learning:thresholds"), (7.7, 7.2, "revert")]
    assert TunableChange.objects.get(source="revert").actor == admin


@pytest.mark.django_db
def test_revert_of_a_change_from_the_default_removes_the_override():
    """A change made on the default is reverted by removing the override."""
    rejected_approvals()
    (change,) = learning_cycle_run(kind="thresholds").changes.all()
    learning_change_revert(change=change, actor=None)
    assert override("approve_at") is None
    assert TunableChange.objects.get(source="revert").new_value is None


@pytest.mark.django_db
def test_the_lock_skips_a_concurrent_run(monkeypatch):
    """While a thresholds cycle runs, another one is recorded as skipped; the lock is then freed."""
    rejected_approvals()
    nested: list[LearningRun] = []
    real_cycle = cycles._cycle

    def cycle_starting_another(*, run: LearningRun, plan: cycles._Plan) -> None:
        nested.append(learning_cycle_run(kind="thresholds"))
        real_cycle(run=run, plan=plan)

    monkeypatch.setattr(cycles, "_cycle", cycle_starting_another)
    first = learning_cycle_run(kind="thresholds")
    assert first.status == "succeeded" and first.changes.count() == 1
    (second,) = nested
    assert (second.status, second.outcome) == ("skipped", "another thresholds cycle is running")
    assert not second.changes.exists()
    monkeypatch.setattr(cycles, "_cycle", real_cycle)
    assert learning_cycle_run(kind="thresholds").status == "succeeded"


@pytest.mark.django_db
def test_a_run_of_a_lost_worker_is_taken_over_by_the_redelivered_task():
    """A run left "running" by the same Celery task (its worker died) does not block the task
    delivered again: it is failed as lost and the new run goes ahead."""
    rejected_approvals()
    lost = LearningRun.objects.create(kind="thresholds", task_id="task-1")
    other = learning_cycle_run(kind="thresholds", task_id="task-2")
    assert (other.status, other.outcome) == ("skipped", "another thresholds cycle is running")
    run = learning_cycle_run(kind="thresholds", task_id="task-1")
    assert run.status == "succeeded" and run.changes.count() == 1
    lost.refresh_from_db()
    assert lost.status == "failed" and "worker running it was lost" in lost.outcome


@pytest.mark.django_db
def test_a_run_older_than_the_lock_timeout_is_failed_as_abandoned():
    rejected_approvals()
    stale = LearningRun.objects.create(kind="thresholds")
    LearningRun.objects.filter(pk=stale.pk).update(
        started_at=timezone.now() - timedelta(seconds=cycles.LOCK_TIMEOUT_S + 1)
    )
    assert learning_cycle_run(kind="thresholds").status == "succeeded"
    stale.refresh_from_db()
    assert stale.status == "failed" and stale.outcome.startswith("abandoned")


@pytest.mark.django_db
def test_one_running_run_per_kind_is_a_database_constraint():
    """The lock holds across processes because the database enforces it, not a process cache."""
    from django.db import IntegrityError, transaction

    LearningRun.objects.create(kind="validators")
    with pytest.raises(IntegrityError), transaction.atomic():
        LearningRun.objects.create(kind="validators")
    LearningRun.objects.create(kind="thresholds")  # other kinds are not blocked


@pytest.mark.django_db
def test_drift_over_half_a_point_in_a_day_alerts(caplog):
    """A second move in 24 h taking a threshold more than 0.5 from where it was logs an alert."""
    rejected_approvals()
    learning_cycle_run(kind="thresholds")  # 7 -> 7.5
    with caplog.at_level(logging.ERROR, logger="learning.cycles"):
        run = learning_cycle_run(kind="thresholds")  # 7.5 -> 8
    assert [(c.before, c.after) for c in run.changes.all()] == [(7.5, 8.0)]
    alert = "ALERT threshold drift: approve_at[invoice] moved 1.00 (7 -> 8) within 24 h"
    assert alert in caplog.text and alert in run.outcome


@pytest.mark.django_db
def test_the_assignments_cycle_without_data_changes_nothing():
    """Without reviewed answers the assignments cycle succeeds with no change, no fake results."""
    run = learning_cycle_run(kind="assignments")
    assert (run.status, run.outcome) == ("succeeded", "no change (applied)")
    assert LearningRun.objects.get(kind="assignments") == run and not run.changes.exists()


@pytest.mark.django_db
def test_seed_schedules_is_idempotent_and_keeps_admin_edits():
    """Seeding twice makes three periodic tasks once; an interval changed in the admin stays."""
    call_command("seed_learning_schedules", stdout=StringIO())
    tasks = PeriodicTask.objects.filter(name__startswith="learning: ")
    assert {t.name: (t.interval.every, t.interval.period, t.args) for t in tasks} == {
        "learning: validators": (6, "hours", '["validators"]'),
        "learning: thresholds": (12, "hours", '["thresholds"]'),
        "learning: assignments": (24, "hours", '["assignments"]'),
    }
    assert {t.task for t in tasks} == {"learning.tasks.run_learning_cycle"}
    edited = tasks.get(name="learning: thresholds")
    edited.interval = IntervalSchedule.objects.create(every=8, period=IntervalSchedule.HOURS)
    edited.save()
    call_command("seed_learning_schedules", stdout=StringIO())
    assert PeriodicTask.objects.filter(name__startswith="learning: ").count() == 3
    assert PeriodicTask.objects.get(name="learning: thresholds").interval.every == 8
    assert IntervalSchedule.objects.filter(every=12, period="hours").count() == 1


def _user() -> User:
    return User.objects.create_user(username=f"admin-{uuid.uuid4().hex[:6]}", is_staff=True)


# --- end to end: a real Celery worker on Redis runs the task --------------------------------------


def _start_worker(queue: str, pool: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": worker_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "GATEWAY_DATA_DIR": str(settings.DATA_DIR),
        "LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "gateway_project", "worker",
         "--pool", pool, "-c", "1", "-l", "warning", "-Q", queue,
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=env,
    )  # fmt: skip


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def worker_queue(django_db_setup, django_db_blocker) -> Iterator[str]:
    """A Celery worker process on the test database and Redis, on a queue of its own."""
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL (a broker and cache shared with the worker)")
    queue = f"learning-test-{uuid.uuid4().hex[:10]}"
    process = _start_worker(queue, "solo")
    yield queue
    _stop(process)


@pytest.mark.django_db(transaction=True)
def test_worker_runs_the_thresholds_cycle(worker_queue):
    """The beat task, sent to a real worker, runs the cycle: the run succeeds and applies."""
    from learning.tasks import run_learning_cycle

    rejected_approvals()
    run_learning_cycle.apply_async(args=("thresholds",), queue=worker_queue)
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        run = LearningRun.objects.filter(kind="thresholds").exclude(status="running").first()
        if run is not None:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("no finished thresholds run from the worker")
    assert run.status == "succeeded", run.outcome
    assert [(c.tunable, c.after, c.state) for c in run.changes.all()] == [
        ("approve_at", 7.5, "applied")
    ]
    assert override("approve_at") == 7.5


@pytest.mark.django_db
def test_admin_lists_runs_and_applies_and_reverts_changes(client):
    """The admin shows runs with their changes; its actions apply and revert through services."""
    from django.urls import reverse

    rejected_approvals()
    run = learning_cycle_run(kind="thresholds", mode="propose")
    (change,) = run.changes.all()
    admin = User.objects.create_superuser(username="boss", password="pw")
    client.force_login(admin)
    page = client.get(reverse("admin:learning_learningrun_change", args=[run.pk]))
    assert page.status_code == 200 and b"approve_at" in page.content
    changelist = reverse("admin:learning_learningchange_changelist")
    assert client.get(changelist).status_code == 200
    for action, state, value in (
        ("apply_proposed", "applied", 7.5),
        ("revert_changes", "reverted", None),
    ):
        response = client.post(changelist, {"action": action, "_selected_action": [change.pk]})
        assert response.status_code == 302
        change.refresh_from_db()
        assert (change.state, override("approve_at")) == (state, value)
    assert TunableChange.objects.filter(actor=admin).count() == 2


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _wait_for(predicate: Any, what: str, timeout: float = 45) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.django_db(transaction=True)
def test_a_cycle_survives_its_worker_killed_mid_task():
    """Kill the worker process running a cycle: the task goes back to the queue (late ack,
    rejected on worker loss), the next worker process takes over the lost run and finishes."""
    import signal
    import threading

    from django.db import connection, transaction

    if not settings.REDIS_URL or connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL and Redis (a table lock holds the cycle mid-task)")
    from learning.tasks import run_learning_cycle

    rejected_approvals()
    locked, release = threading.Event(), threading.Event()

    def hold_review_table() -> None:
        # The cycle reads the review items right after taking its lock: hold it there.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("LOCK TABLE reviews_reviewitem IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(60)
        connection.close()

    holder = threading.Thread(target=hold_review_table)
    holder.start()
    assert locked.wait(10)
    queue = f"learning-test-{uuid.uuid4().hex[:10]}"
    worker = _start_worker(queue, "prefork")
    try:
        run_learning_cycle.apply_async(args=("thresholds",), queue=queue)
        first = _wait_for(
            lambda: LearningRun.objects.filter(kind="thresholds", status="running").first(),
            "the cycle to start",
        )
        (child,) = _wait_for(lambda: _children(worker.pid), "the pool process")
        os.kill(child, signal.SIGKILL)
        _wait_for(
            lambda: LearningRun.objects.filter(kind="thresholds").exclude(pk=first.pk).exists(),
            "the task delivered again",
        )
        release.set()
        holder.join(10)
        run = _wait_for(
            lambda: LearningRun.objects.filter(kind="thresholds", status="succeeded").first(),
            "the redelivered run to finish",
        )
    finally:
        release.set()
        holder.join(10)
        _stop(worker)
    first.refresh_from_db()
    assert first.status == "failed" and "worker running it was lost" in first.outcome
    assert run.task_id == first.task_id != ""
    assert [(c.tunable, c.after) for c in run.changes.all()] == [("approve_at", 7.5)]


@pytest.mark.django_db
def test_a_cycle_set_to_propose_keeps_its_changes_pending(client):
    """An admin switches the thresholds cycle to "propose" in the admin: beat's task (and the
    command without a flag) then records changes without applying them."""
    from django.urls import reverse

    from learning.models import CycleSetting
    from learning.tasks import run_learning_cycle

    admin = User.objects.create_superuser(username="boss", password="pw")
    client.force_login(admin)
    changelist = reverse("admin:learning_cyclesetting_changelist")
    page = client.get(changelist)
    assert page.status_code == 200 and b"assignments" in page.content
    settings_by_kind = {s.kind: s for s in CycleSetting.objects.all()}
    assert set(settings_by_kind) == {"validators", "thresholds", "assignments"}
    form = {"form-TOTAL_FORMS": "3", "form-INITIAL_FORMS": "3", "_save": "Save"}
    for index, setting in enumerate(CycleSetting.objects.order_by("kind")):
        form[f"form-{index}-id"] = str(setting.pk)
        form[f"form-{index}-mode"] = "propose" if setting.kind == "thresholds" else "apply"
    assert client.post(changelist, form).status_code == 302
    rejected_approvals()
    run = LearningRun.objects.get(pk=run_learning_cycle.apply(args=("thresholds",)).get())
    assert run.mode == "propose"
    assert [c.state for c in run.changes.all()] == ["proposed"]
    assert override("approve_at") is None
    change = run.changes.get()
    page = client.get(reverse("admin:learning_learningchange_change", args=[change.pk]))
    text = page.content.decode()
    assert "Replay on recent traffic" in text and "approved by the gate" in text, text[
        text.find("field-replay") :
    ][:600]


@pytest.mark.django_db
def test_run_now_in_the_admin_runs_the_selected_cycles(client):
    from django.urls import reverse

    from learning.models import CycleSetting

    admin = User.objects.create_superuser(username="boss", password="pw")
    client.force_login(admin)
    rejected_approvals()
    selected = CycleSetting.objects.filter(kind__in=("thresholds", "assignments"))
    response = client.post(
        reverse("admin:learning_cyclesetting_changelist"),
        {"action": "run_now", "_selected_action": [s.pk for s in selected]},
        follow=True,
    )
    assert response.status_code == 200
    assert sorted(LearningRun.objects.values_list("kind", "status")) == [
        ("assignments", "succeeded"),
        ("thresholds", "succeeded"),
    ]
    assert override("approve_at") == 7.5
    shown = [str(m) for m in response.context["messages"]]
    assert any("thresholds run" in m for m in shown), shown


@pytest.mark.django_db
def test_a_caller_whose_reviews_differ_gets_thresholds_of_its_own():
    """Reviewers accept the task type's approved answers on target overall, but one agent's
    answers at 8 are often rejected (its requests are harder): approve_at rises for that agent
    only, through a caller override that the gate uses for its requests; revertible."""
    from routing.config import build_snapshot

    reviewed(8.0, "approved", 200, agent="easy-agent")
    reviewed(8.0, "approved", 16, agent="hard-agent")
    reviewed(8.0, "rejected", 6, agent="hard-agent")
    reviewed(9.5, "approved", 10, agent="hard-agent")
    run = learning_cycle_run(kind="thresholds")
    (change,) = run.changes.all()
    assert (change.tunable, change.task_type, change.caller, change.after) == (
        "approve_at", "invoice", "hard-agent", 7.5
    )  # fmt: skip
    assert str(change) == "approve_at[invoice/hard-agent]: 7 → 7.5"
    assert override("approve_at") is None  # the task type's own stays
    row = TunableOverride.objects.get(name="approve_at", caller="hard-agent")
    assert (row.task_type, row.value) == ("invoice", 7.5)
    snapshot = build_snapshot("test")
    assert snapshot.gate_for("invoice", "hard-agent").approve_at == 7.5
    assert snapshot.gate_for("invoice", "easy-agent").approve_at == 7.0
    assert run.data_used["reviewed_per_caller"]["hard-agent/invoice"] == 32
    learning_change_revert(change=change, actor=None)
    assert not TunableOverride.objects.filter(caller="hard-agent").exists()
