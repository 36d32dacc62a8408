"""``manage.py demo_setup`` (what ``make run`` sets up), run twice the way an operator runs it:
a subprocess on the test database. A second run keeps the admin's password, the API key and every
configuration change an admin or a learning cycle made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone
from factories import sim_setup

from agents.models import ApiKey
from learning.cycles import learning_change_apply
from learning.models import LearningChange, LearningRun
from providers.models import ModelDeployment, Provider
from providers.services import config_object_save
from routing.first_run import routing_config_is_empty
from routing.models import TaskRoute

ROOT = Path(__file__).resolve().parents[2]


def demo_setup(data_dir: Path, simulator_url: str) -> dict[str, Any]:
    """Run ``manage.py demo_setup --json`` as ``make run`` does, and return its result."""
    from conftest import test_database_url

    env = {**os.environ, "DATABASE_URL": test_database_url()}
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    done = subprocess.run(
        [sys.executable, "manage.py", "demo_setup", "--json", "--data-dir", str(data_dir),
         "--simulator-url", simulator_url, "--ollama-url", "http://127.0.0.1:9"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def make_run_keys() -> int:
    return ApiKey.objects.filter(agent__name="demo-agent", revoked_at=None).count()


def learning_moves_code_to_fast() -> LearningChange:
    """What an assignments cycle does when fast proves good enough for code: a task-route change,
    applied through the same service an admin's "apply" uses."""
    run = LearningRun.objects.create(
        kind=LearningRun.Kind.ASSIGNMENTS,
        mode=LearningRun.Mode.PROPOSE,
        status=LearningRun.Status.SUCCEEDED,
    )
    change = LearningChange.objects.create(
        run=run,
        target_kind=LearningChange.TargetKind.TASK_ROUTE,
        task_type="code",
        before=1,  # medium, as the demo config routes code
        after=0,  # fast
        state=LearningChange.State.PROPOSED,
    )
    return learning_change_apply(change=change, actor=None)


def test_a_second_run_keeps_password_key_and_every_config_change(gateway, simulator, tmp_path):
    """Run twice: the same admin password and API key (one key in all), the demo config imported
    once, and an admin's and a learning cycle's changes still in force on the live gateway."""
    first = demo_setup(tmp_path, simulator.url)
    assert first["admin"]["status"] == "created"
    assert first["api_key"]["status"] == "issued"
    assert first["config"]["status"] == "imported"
    password, key = first["admin"]["secret"], first["api_key"]["secret"]
    assert (tmp_path / "admin-password.txt").read_text().strip() == password
    assert (tmp_path / "demo-api-key.txt").stat().st_mode & 0o777 == 0o600

    # An admin moves analysis to the medium tier and makes demo-medium dearer; learning moves
    # code from medium to fast.
    analysis = TaskRoute.objects.get(task_type="analysis")
    analysis.start_tier = "medium"
    config_object_save(obj=analysis)
    medium = ModelDeployment.objects.get(public_name="demo-medium")
    medium.output_cost_per_mtok = 9
    config_object_save(obj=medium)
    change = learning_moves_code_to_fast()

    second = demo_setup(tmp_path, simulator.url)
    assert second["admin"] == {
        "status": "unchanged", "secret": password, "username": "admin", "details": [],
        "file": str(tmp_path / "admin-password.txt"),
        "message": "the admin user keeps the password make run generated "
        f"({tmp_path / 'admin-password.txt'})",
    }  # fmt: skip
    assert (second["api_key"]["status"], second["api_key"]["secret"]) == ("reused", key)
    assert second["config"]["status"] == "kept"
    assert get_user_model().objects.get(username="admin").check_password(password)
    assert make_run_keys() == 1
    assert TaskRoute.objects.get(task_type="analysis").start_tier == "medium"
    assert TaskRoute.objects.get(task_type="code").start_tier == "fast"
    assert ModelDeployment.objects.get(public_name="demo-medium").output_cost_per_mtok == 9
    change.refresh_from_db()
    assert change.state == LearningChange.State.APPLIED

    # The running gateway routes by the changed config, with the key make run printed.
    answers = {
        task: httpx.post(
            f"{gateway.url}/v1/completion",
            json={"input": "hi", "task_type": task},
            headers={"Authorization": f"Bearer {key}"},
            timeout=20,
        ).json()["model"]
        for task in ("analysis", "code")
    }
    assert answers == {"analysis": "demo-medium", "code": "demo-fast"}


def test_a_changed_admin_password_is_kept_and_not_shown(gateway, simulator, tmp_path):
    """Someone changed the admin's password: the next run keeps it, shows no password, says so
    and removes the stale password file; later runs say make run does not know the password."""
    demo_setup(tmp_path, simulator.url)
    admin = get_user_model().objects.get(username="admin")
    admin.set_password("chosen-by-the-admin")
    admin.save()

    second = demo_setup(tmp_path, simulator.url)["admin"]
    assert (second["status"], second["secret"]) == ("password_changed", "")
    assert "was changed after make run generated it" in second["message"]
    assert not (tmp_path / "admin-password.txt").exists()
    third = demo_setup(tmp_path, simulator.url)["admin"]
    assert (third["status"], third["secret"]) == ("kept", "")
    assert get_user_model().objects.get(username="admin").check_password("chosen-by-the-admin")


def test_a_revoked_key_is_replaced_once(gateway, simulator, tmp_path):
    """A revoked (or expired) key in the key file is replaced, once; the new one is then reused."""
    first = demo_setup(tmp_path, simulator.url)["api_key"]
    ApiKey.objects.filter(agent__name="demo-agent").update(revoked_at=timezone.now())

    second = demo_setup(tmp_path, simulator.url)["api_key"]
    assert second["status"] == "issued" and second["secret"] != first["secret"]
    assert "was revoked" in second["message"]
    third = demo_setup(tmp_path, simulator.url)["api_key"]
    assert (third["status"], third["secret"]) == ("reused", second["secret"])
    assert make_run_keys() == 1


def test_a_lost_key_file_is_said_and_the_earlier_key_named(gateway, simulator, tmp_path):
    """Without its key file make run cannot show the old key: it issues one and names the
    earlier key's prefix, which stays valid until revoked."""
    first = demo_setup(tmp_path, simulator.url)["api_key"]
    (tmp_path / "demo-api-key.txt").unlink()
    second = demo_setup(tmp_path, simulator.url)["api_key"]
    assert second["status"] == "issued"
    assert f"the earlier make run keys ({first['secret'][:12]}…) still work" in second["message"]


def test_an_existing_configuration_is_kept(gateway, simulator, tmp_path):
    """A database that already has models gets no demo config: nothing is created or updated."""
    setup = sim_setup(simulator.url)
    assert not routing_config_is_empty()
    config = demo_setup(tmp_path, simulator.url)["config"]
    assert config["status"] == "kept"
    assert config["message"].startswith("kept the existing routing configuration (4 models)")
    assert not Provider.objects.filter(name__startswith="sim-").exclude(
        pk__in=[setup.ollama.pk, setup.openai.pk, setup.anthropic.pk, setup.gemini.pk]
    )
    assert not ModelDeployment.objects.filter(public_name__startswith="demo-").exists()


@pytest.mark.django_db
def test_demo_providers_on_another_simulator_port_are_pointed_out(tmp_path):
    """When the demo was imported for a simulator on another port, the kept config says which
    providers call where and how to run make run so they match."""
    from routing.first_run import demo_config_ensure

    demo_config_ensure(simulator_url="http://127.0.0.1:9100", ollama_url="http://127.0.0.1:9")
    kept = demo_config_ensure(
        simulator_url="http://127.0.0.1:9200", ollama_url="http://127.0.0.1:9"
    )
    assert kept.details == [
        "the demo providers sim-anthropic, sim-gemini, sim-ollama, sim-openai call "
        "http://127.0.0.1:9100, not this run's simulator at http://127.0.0.1:9200: run with "
        "GATEWAY_SIM_PORT=9100, or change their base URL in the admin"
    ]
