"""`make run`: set the gateway up on this machine and start it with everything it needs.

Migrates, creates an admin user, imports the demo config (simulator models for every tier, plus the
models of a local Ollama if one answers), starts the upstream simulator, the gateway, a Celery
worker and beat, and prints how to use them. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def ensure_admin() -> str:
    password_file = DATA_DIR / "admin-password.txt"
    code = (
        "from django.contrib.auth import get_user_model; U = get_user_model(); "
        "print('exists' if U.objects.filter(username='admin').exists() else 'missing')"
    )
    if manage("shell", "-c", code, capture=True).strip() == "exists" and password_file.exists():
        return password_file.read_text().strip()
    password = secrets.token_urlsafe(12)
    create = (
        "from django.contrib.auth import get_user_model; U = get_user_model(); "
        "u = U.objects.filter(username='admin').first() or U(username='admin', email='admin@localhost'); "
        f"u.is_staff = u.is_superuser = True; u.set_password({password!r}); u.save()"
    )
    manage("shell", "-c", create)
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    return password


def ensure_api_key() -> str:
    key_file = DATA_DIR / "demo-api-key.txt"
    if key_file.exists():
        key = key_file.read_text().strip()
        check = (
            "from agents.models import ApiKey; from agents.services import api_key_hash; "
            f"print(ApiKey.objects.filter(key_hash=api_key_hash({key!r}), revoked_at=None).exists())"
        )
        if manage("shell", "-c", check, capture=True).strip() == "True":
            return key
    key = manage(
        "create_api_key", "--agent", "demo-agent", "--label", "make run", capture=True
    ).strip()
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    return key


def local_ollama_models() -> list[str]:
    try:
        response = httpx.get(f"{OLLAMA_URL}/api/tags", timeout=2)
        return [m["name"] for m in response.json().get("models", [])]
    except (httpx.HTTPError, ValueError, KeyError):
        return []


def import_demo_config(sim_url: str) -> None:
    text = (ROOT / "config" / "demo.yaml").read_text().replace("SIM_URL", sim_url)
    models = local_ollama_models()
    if models:
        say(f"local Ollama answers at {OLLAMA_URL}: adding {', '.join(models)} to the fast tier")
        text += "\n# Models of the local Ollama found at start-up\n"
        text = text.replace(
            "providers:\n",
            f'providers:\n  - {{name: local-ollama, kind: ollama, base_url: "{OLLAMA_URL}", '
            "api_key_env: null, enabled: true}\n",
            1,
        )
        lines = [
            f'  - {{name: "{m}", provider: local-ollama, tier: fast, input_cost_per_mtok: 0, '
            f"output_cost_per_mtok: 0, context_window: 32768}}"
            for m in models
        ]
        text = text.replace("models:\n", "models:\n" + "\n".join(lines) + "\n", 1)
    else:
        say(f"no local Ollama at {OLLAMA_URL}: the demo uses the simulator only")
    config_file = DATA_DIR / "demo-config.yaml"
    config_file.write_text(text)
    manage("gateway_config", "import", str(config_file))


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
    password = ensure_admin()
    try:
        sim_url = f"http://127.0.0.1:{SIM_PORT}"
        start("simulator", sys.executable, "-m", "providers.simulator", "--port", str(SIM_PORT))
        wait_for(f"{sim_url}/_sim/health", "simulator")
        import_demo_config(sim_url)
        key = ensure_api_key()
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
