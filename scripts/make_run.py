"""`make run`: set the gateway up on this machine and start it with everything it needs.

Migrates, creates an admin user and an API key, imports the demo config into an empty database
(simulator models for every tier, plus the models of a local Ollama if one answers), starts the
upstream simulator, the gateway, a Celery worker and beat, and prints how to use them. Run again,
it keeps the admin's password, the key and the configuration (``manage.py demo_setup``).
Ctrl-C stops everything it started.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DATA_DIR = Path(os.environ.get("GATEWAY_DATA_DIR", ROOT / "var"))
HOST = os.environ.get("GATEWAY_HOST", "127.0.0.1")
PORT = int(os.environ.get("GATEWAY_PORT", "8000"))
SIM_PORT = int(os.environ.get("GATEWAY_SIM_PORT", "9100"))
OLLAMA_URL = os.environ.get("OLLAMA_URL", "http://127.0.0.1:11434")

children: list[subprocess.Popen[bytes]] = []


def say(text: str) -> None:
    print(f"[make run] {text}", flush=True)


def manage(*args: str, capture: bool = False) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        check=True,
        text=True,
        stdout=subprocess.PIPE if capture else None,
    )
    return result.stdout or ""


def start(name: str, *command: str) -> subprocess.Popen[bytes]:
    say(f"starting {name}")
    log = open(DATA_DIR / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
    process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    children.append(process)
    return process


def wait_for(url: str, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        for process in children:
            if process.poll() is not None:
                raise SystemExit(f"{what} exited early; see {DATA_DIR}/*.log")
        time.sleep(0.2)
    raise SystemExit(f"{what} did not answer at {url} within {timeout}s")


def demo_setup(sim_url: str) -> dict[str, Any]:
    """Admin, demo API key and demo config, each set up once (``manage.py demo_setup``); the
    command answers in JSON, so nothing here depends on a command's human output."""
    output = manage(
        "demo_setup", "--json", "--data-dir", str(DATA_DIR),
        "--simulator-url", sim_url, "--ollama-url", OLLAMA_URL,
        capture=True,
    )  # fmt: skip
    # The result is the last line; anything a library printed before it is not ours to read.
    lines = [line for line in output.splitlines() if line.strip()]
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise SystemExit(f"manage.py demo_setup gave no result:\n{output}") from None
    for name in ("admin", "api_key", "config"):
        step = result[name]
        say(step["message"])
        for line in step["details"]:
            say(f"  {line}")
    return result


def stop_all(*_: object) -> None:
    for process in reversed(children):
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + 15
    for process in children:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
    say("stopped")


def main() -> None:
    os.chdir(ROOT)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
    mode = (
        "PostgreSQL + Redis"
        if os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")
        else ("embedded defaults (SQLite, in-process cache, filesystem Celery broker)")
    )
    say(f"configuration: {mode}")
    # Gateway workers are separate processes: Prometheus counters are aggregated through files.
    metrics_dir = DATA_DIR / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    manage("migrate", "--noinput", "-v", "0")
    manage("seed_learning_schedules")
    sim_url = f"http://127.0.0.1:{SIM_PORT}"
    setup = demo_setup(sim_url)
    password = setup["admin"]["secret"] or "(not shown: see above)"
    key = setup["api_key"]["secret"]
    try:
        start("simulator", sys.executable, "-m", "simulator", "--port", str(SIM_PORT))
        wait_for(f"{sim_url}/_sim/health", "simulator")
        workers = str(os.cpu_count() or 1) if os.environ.get("REDIS_URL") else "1"
        start(
            "gateway", str(BIN / "uvicorn"), "gateway_project.asgi:application",
            "--host", HOST, "--port", str(PORT), "--workers", workers, "--lifespan", "on",
        )  # fmt: skip
        start("worker", str(BIN / "celery"), "-A", "gateway_project", "worker", "-l", "info",
              "--concurrency", "2")  # fmt: skip
        start("beat", str(BIN / "celery"), "-A", "gateway_project", "beat", "-l", "info")
        base = f"http://{HOST}:{PORT}"
        wait_for(f"{base}/health", "gateway")
        print(
            f"""
  llm-gateway is running (logs in {DATA_DIR}/*.log)

  Admin      {base}/admin/   user: admin   password: {password}
  API key    {key}
  Health     {base}/health    Metrics {base}/metrics    Simulator {sim_url}

  curl {base}/v1/completion -H 'Authorization: Bearer {key}' \\
       -H 'Content-Type: application/json' \\
       -d '{{"caller": "me", "task_type": "analysis", "input": "Explain backpressure", "language": "en"}}'

  Make the fast model fail, then ask again and look at the audit log in the admin:
  curl -X PUT {sim_url}/_sim/models/demo-fast -d '{{"status": 503}}'

  Ctrl-C stops everything.
""",
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while all(p.poll() is None for p in children):
            time.sleep(0.5)
        say("a process exited; stopping the others (see the logs)")
    except KeyboardInterrupt:
        pass
    finally:
        stop_all()


if __name__ == "__main__":
    main()
