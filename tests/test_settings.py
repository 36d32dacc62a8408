"""Settings from the environment: production mode refuses weak secrets and passes check --deploy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**base, **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_production_refuses_to_start_without_secret_key():
    """DEBUG off and no SECRET_KEY: the gateway refuses to start and says why."""
    result = run_manage("check", DEBUG="0")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_production_settings_pass_check_deploy():
    """With real secrets, production settings pass `manage.py check --deploy` without warnings."""
    result = run_manage(
        "check", "--deploy", "--fail-level", "WARNING",
        DEBUG="0", SECRET_KEY="k" * 20 + "x7Qp!s9" * 6, GATEWAY_ENCRYPTION_KEY="e" * 44,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
