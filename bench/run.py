"""Load benchmark of the gateway against its upstream simulator (and optionally LiteLLM).

Method
------
Every system under test is put in front of the same upstream, the simulator in
``simulator/`` (``bench-model`` answers at once, ``bench-slow`` after 500 ms), and
driven by ``wrk`` with the same request, so the only difference between two rows of one
scenario is the proxy in between:

* ``direct``:  wrk -> simulator (the baseline: what the upstream alone costs)
* ``gateway``: wrk -> uvicorn + Django gateway (production settings) -> simulator
* ``litellm``: wrk -> LiteLLM proxy -> simulator (only with ``--compare-litellm``)

The systems are measured one at a time (direct, then gateway, then LiteLLM) and each proxy is
stopped before the next one starts, because the load generator, the simulator and the proxy
already share a small machine. Each scenario gets a short warm-up run whose numbers are thrown
away, then a measured run; meanwhile the peak RSS of the server under test (master plus
workers; the simulator itself on the direct rows) is sampled.
Absolute numbers depend on the machine; only ratios within one run are meant to be compared.

Reading the numbers: wrk opens its connections anew for every run and keeps one request
outstanding per connection (a closed loop). Its latency percentiles include wrk's own
correction for coordinated omission, applied equally to every target. "errors" are responses
with a status >= 400 plus socket errors (connect, read, write, and answers slower than the
10 s wrk timeout). A request still unanswered when a run ends is counted nowhere, so each run
also reports how many connections were busy on average (RPS x mean latency, Little's law):
far fewer than the connection count means requests were stalling.

The gateway runs isolated: a fresh data directory under ``.bench/``, its own PostgreSQL
database and Redis db 3 when those answer on loopback (else the embedded SQLite defaults), a
random secret key, and the production uvicorn command line.

Usage (``make bench``, ``make bench-compare``): ``python bench/run.py [--quick] [--duration S] [--scenarios a,b] [--json FILE]
[--compare-litellm]``. The exit code is 0 whether or not the targets are met (they are
reported); it is non-zero only when the harness itself could not run.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

import httpx

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / ".bench"
LOG_DIR = BENCH_DIR / "logs"
VENV_BIN = REPO / ".venv" / "bin"
WRK_SCRIPT = Path(__file__).resolve().with_name("wrk_post.lua")
SETUP_SCRIPT = Path(__file__).resolve().with_name("setup_gateway.py")
HOST = "127.0.0.1"

POSTGRES_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
POSTGRES_DB = "gateway_bench"
REDIS_URL = "redis://127.0.0.1:6379/3"

LITELLM_VENV = BENCH_DIR / "litellm-venv"
# Pinned: 1.106.2 installs cleanly on Python 3.11 here, 1.109.1 was found not to.
LITELLM_REQUIREMENT = "litellm[proxy]==1.106.2"
LITELLM_MASTER_KEY = "sk-bench"

CHAT_PATH = "/v1/chat/completions"
# wrk's own time limit per request; a slower answer counts as a socket (timeout) error.
WRK_TIMEOUT_S = 10

# Targets checked at the end (see check_targets).
MAX_OVERHEAD_P50_MS = 3.0
MIN_RATIO_VS_LITELLM = 10.0
MIN_SLOW_RPS = 1000.0


class HarnessError(RuntimeError):
    """The benchmark itself could not run (as opposed to a system missing a target)."""


# --------------------------------------------------------------------------------------------
# Scenarios and results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    model: str
    connections: int
    stream: bool = False

    def body(self) -> str:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": "Say hello"}],
            # Room for the simulator's whole ~30-word answer: a cut-off answer would be scored as
            # such and queued for review, which is not the everyday traffic measured here.
            "max_tokens": 256,
        }
        if self.stream:
            payload["stream"] = True
        return json.dumps(payload, separators=(",", ":"))


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("plain-c1", "bench-model", 1),
        Scenario("plain-c16", "bench-model", 16),
        Scenario("plain-c64", "bench-model", 64),
        Scenario("plain-c256", "bench-model", 256),
        Scenario("stream-c64", "bench-model", 64, stream=True),
        Scenario("slow-c1000", "bench-slow", 1000),
    )
}


@dataclass
class Target:
    """A system under test: where to send the requests and which process tree to watch."""

    name: str
    base_url: str
    authorization: str
    pid: int


@dataclass
class Result:
    scenario: str
    target: str
    connections: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: int
    peak_rss_mb: float | None
    overhead_p50_ms: float | None = None

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors

    @property
    def busy_connections(self) -> float:
        """Connections that had a request answered on average (Little's law: RPS x latency).

        wrk counts only the requests that complete within the run: one stuck for longer is
        neither a request nor an error. In a closed loop every connection always has a request
        out, so this falls well below the connection count when requests stall (or connections
        wait long to be accepted). wrk's latency correction makes it err on the high side.
        """
        return self.rps * self.mean_ms / 1000

    @property
    def stalled(self) -> bool:
        return self.busy_connections < 0.5 * self.connections


def say(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------------------------
# Processes: start, wait for, measure and stop the servers
# --------------------------------------------------------------------------------------------


class Server:
    """A child server in its own session, so that stopping it also stops its workers."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], port: int) -> None:
        self.name = name
        self.port = port
        self.log_path = LOG_DIR / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            list(argv),
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _running.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, url: str, timeout_s: float) -> float:
        """Poll ``url`` until it answers 200 (returns the seconds it took); fail if it dies."""
        started = time.monotonic()
        deadline = started + timeout_s
        last = "no answer"
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise HarnessError(
                        f"{self.name} exited with code {self.proc.returncode} while starting;"
                        f" last lines of {self.log_path}:\n{self.log_tail()}"
                    )
                try:
                    response = client.get(url)
                    if response.status_code == 200:
                        return time.monotonic() - started
                    last = f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    last = type(exc).__name__
                time.sleep(0.2)
        raise HarnessError(
            f"{self.name} not ready after {timeout_s:.0f} s ({url}: {last});"
            f" last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def log_size(self) -> int:
        self._log.flush()
        with contextlib.suppress(OSError):
            return self.log_path.stat().st_size
        return 0

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the whole process group, then SIGKILL whatever is left after ``grace_s``."""
        pgid = self.proc.pid  # a session leader's group id is its own pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            self.proc.poll()  # reap the leader so it stops counting as a group member
            if not _group_alive(pgid):
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._log.close()
        if self in _running:
            _running.remove(self)


_running: list[Server] = []


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_all() -> None:
    for server in reversed(list(_running)):
        try:
            server.stop()
        except Exception as exc:  # noqa: BLE001 - keep stopping the others
            say(f"warning: could not stop {server.name}: {exc}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc/*/stat (the kernel here has no .../children file)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: the fields follow the last ")".
        fields = stat[stat.rindex(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def process_tree(root: int) -> list[int]:
    children = _children_map()
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Peak of the summed RSS of a process tree, sampled every 0.2 s in a thread."""

    def __init__(self, root_pid: int, interval_s: float = 0.2) -> None:
        self.root_pid = root_pid
        self.interval_s = interval_s
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        total = sum(rss_kib(pid) for pid in process_tree(self.root_pid))
        self.peak_kib = max(self.peak_kib, total)

    def _run(self) -> None:
        self._sample()
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return self.peak_kib / 1024


# --------------------------------------------------------------------------------------------
# Preparation: load generator, file limit, simulator, gateway, LiteLLM
# --------------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    """wrk's path, installing the Debian package when it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    say("wrk not found on PATH: installing it with apt-get")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*sudo, "apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, env=env, timeout=600).returncode != 0:
        # A fresh machine has no package lists yet.
        say("apt-get install failed: running apt-get update first")
        subprocess.run([*sudo, "apt-get", "update", "-q"], env=env, timeout=600, check=False)
        if subprocess.run(install, env=env, timeout=600).returncode != 0:
            raise HarnessError("could not install wrk with apt-get")
    found = shutil.which("wrk")
    if not found:
        raise HarnessError("wrk was installed but is not on PATH")
    return found


def raise_file_limit() -> int:
    """Lift the soft open-file limit to the hard one; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs so far, from /proc/stat."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def cpu_busy_pct(window_s: float = 1.0) -> float:
    """How busy the CPUs are over ``window_s``, before the benchmark adds its own load."""
    busy0, total0 = _cpu_times()
    time.sleep(window_s)
    busy1, total1 = _cpu_times()
    return 100.0 * (busy1 - busy0) / max(1, total1 - total0)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) or 1


def start_simulator(port: int) -> Server:
    argv = [
        str(VENV_BIN / "python"), "-m", "simulator",
        "--host", HOST, "--port", str(port), "--model", "bench-slow:latency_ms=500",
    ]  # fmt: skip
    server = Server("simulator", argv, dict(os.environ), port)
    server.wait_ready(f"http://{HOST}:{port}/_sim/health", timeout_s=30)
    return server


def _postgres_ready() -> bool:
    """Whether PostgreSQL answers; if so, (re)create the benchmark's own database."""
    try:
        import psycopg
    except ImportError:
        return False
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=2, autocommit=True) as conn:
            # The database belongs to the benchmark alone: start it empty like the data dir,
            # so leftover audit rows or keys from earlier runs cannot skew a run.
            conn.execute(f'DROP DATABASE IF EXISTS "{POSTGRES_DB}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{POSTGRES_DB}"')
    except psycopg.Error as exc:
        say(f"PostgreSQL not usable ({type(exc).__name__}: {str(exc).strip()[:120]})")
        return False
    return True


def _redis_ready() -> bool:
    """Whether Redis answers; if so, empty db 3 (cooldowns of an earlier run would linger)."""
    try:
        import redis
    except ImportError:
        return False
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        client.flushdb()
        client.close()
    except redis.RedisError as exc:
        say(f"Redis not usable ({type(exc).__name__})")
        return False
    return True


def gateway_env() -> tuple[dict[str, str], str]:
    """The production-mode environment of the isolated gateway, and a description of it."""
    data_dir = BENCH_DIR / "data"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    # Nothing of the caller's gateway configuration may leak into the benchmark.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GATEWAY_") and k not in {"DATABASE_URL", "REDIS_URL", "DEBUG"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="gateway_project.settings",
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(48),  # 64 characters
        GATEWAY_ENCRYPTION_KEY=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SECURE_SSL_REDIRECT="0",
        GATEWAY_DATA_DIR=str(data_dir),
        LOG_LEVEL="WARNING",
        GATEWAY_HEALTH_CHECK_INTERVAL_S="30",
        # wrk repeats one request: with the response cache every answer after the first would
        # be a hit. The benchmark measures routing to the upstream (LiteLLM's cache is off too).
        GATEWAY_CACHE_ENABLED="0",
        PYTHONUNBUFFERED="1",
    )
    parts = []
    if _postgres_ready():
        env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{POSTGRES_DB}"
        parts.append(f"PostgreSQL ({POSTGRES_DB})")
    else:
        parts.append("SQLite (embedded default)")
    if _redis_ready():
        env["REDIS_URL"] = REDIS_URL
        parts.append("Redis (db 3)")
    else:
        parts.append("in-process cache and state (embedded default)")
    return env, " + ".join(parts)


def _run_step(what: str, argv: Sequence[str], env: dict[str, str], timeout_s: float) -> str:
    """Run a preparation command; its stdout, or a HarnessError with its output."""
    try:
        done = subprocess.run(
            list(argv), cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"{what} did not finish within {timeout_s:.0f} s") from exc
    if done.returncode != 0:
        raise HarnessError(f"{what} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def prepare_gateway(env: dict[str, str], simulator_port: int) -> str:
    """Migrate, configure the simulator as a provider, and return a fresh API key."""
    python = str(VENV_BIN / "python")
    _run_step("migrate", [python, "manage.py", "migrate", "--noinput"], env, 300)
    base_url = f"http://{HOST}:{simulator_port}/v1"
    say("  " + _run_step("routing setup", [python, str(SETUP_SCRIPT), base_url], env, 120).strip())
    out = _run_step(
        "create_api_key", [python, "manage.py", "create_api_key", "--agent", "bench"], env, 120
    )
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    if not lines:
        raise HarnessError("create_api_key printed no key")
    return lines[-1]


def start_gateway(env: dict[str, str], port: int, workers: int) -> Server:
    argv = [
        str(VENV_BIN / "uvicorn"), "gateway_project.asgi:application",
        "--host", HOST, "--port", str(port), "--workers", str(workers),
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--lifespan", "on",
        "--log-level", "warning", "--backlog", "4096",
    ]  # fmt: skip
    server = Server("gateway", argv, env, port)
    took = server.wait_ready(f"http://{HOST}:{port}/health", timeout_s=60)
    say(f"\ngateway up after {took:.1f} s ({workers} workers)")
    return server


def ensure_litellm() -> Path:
    """The ``litellm`` executable of a private venv, created on first use."""
    litellm = LITELLM_VENV / "bin" / "litellm"
    marker = LITELLM_VENV / ".bench-installed"
    if litellm.exists() and marker.exists() and marker.read_text() == LITELLM_REQUIREMENT:
        return litellm
    python3 = shutil.which("python3") or sys.executable
    if not (LITELLM_VENV / "bin" / "python").exists():
        say(f"creating {LITELLM_VENV.relative_to(REPO)} for LiteLLM")
        _run_step(
            "python3 -m venv", [python3, "-m", "venv", str(LITELLM_VENV)], dict(os.environ), 300
        )
    say(f"installing {LITELLM_REQUIREMENT} into it (a few minutes, once)")
    pip = [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
    _run_step("pip install litellm", [*pip, LITELLM_REQUIREMENT, "uvloop"], dict(os.environ), 1500)
    if not litellm.exists():
        raise HarnessError(f"{litellm} missing after the install")
    marker.write_text(LITELLM_REQUIREMENT)
    return litellm


def write_litellm_config(simulator_port: int) -> Path:
    api_base = f"http://{HOST}:{simulator_port}/v1"
    lines = ["model_list:"]
    for model in ("bench-model", "bench-slow"):
        lines += [
            f"  - model_name: {model}",
            "    litellm_params:",
            f"      model: openai/{model}",
            f"      api_base: {api_base}",
            "      api_key: x",
        ]
    lines += [
        "litellm_settings:",
        "  telemetry: false",
        "general_settings:",
        f"  master_key: {LITELLM_MASTER_KEY}",
    ]
    path = BENCH_DIR / "litellm_config.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_litellm(litellm: Path, config: Path, port: int, workers: int) -> Server:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(
        # Only loopback is reachable: use the bundled model cost map instead of fetching it.
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_LOG="ERROR",
        PYTHONUNBUFFERED="1",
    )
    argv = [
        str(litellm), "--config", str(config), "--host", HOST, "--port", str(port),
        "--num_workers", str(workers),
    ]  # fmt: skip
    server = Server("litellm", argv, env, port)
    took = server.wait_ready(f"http://{HOST}:{port}/health/liveliness", timeout_s=120)
    say(f"LiteLLM up after {took:.1f} s")
    return server


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def run_wrk(wrk: str, target: Target, scenario: Scenario, duration_s: int) -> dict[str, float]:
    """One wrk run; the summary printed by the Lua script's done()."""
    threads = min(2, scenario.connections)  # wrk refuses fewer connections than threads
    argv = [
        wrk, f"-t{threads}", f"-c{scenario.connections}", f"-d{duration_s}s",
        f"--timeout={WRK_TIMEOUT_S}s", "--latency", "-s", str(WRK_SCRIPT),
        target.base_url + CHAT_PATH,
    ]  # fmt: skip
    env = {**os.environ, "BENCH_BODY": scenario.body(), "BENCH_AUTH": target.authorization}
    try:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=duration_s + WRK_TIMEOUT_S + 30
        )
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"wrk did not finish ({scenario.name} on {target.name})") from exc
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            summary: dict[str, float] = json.loads(line.removeprefix("BENCH_JSON "))
            return summary
    raise HarnessError(
        f"wrk gave no summary ({scenario.name} on {target.name}, exit {done.returncode}):\n"
        f"{done.stdout}{done.stderr}"
    )


def measure(wrk: str, target: Target, scenario: Scenario, duration_s: int, warmup_s: int) -> Result:
    with RssSampler(target.pid) as sampler:
        # Warm-up: connection pools, lazy imports and caches; its numbers are discarded.
        run_wrk(wrk, target, scenario, warmup_s)
        summary = run_wrk(wrk, target, scenario, duration_s)
    socket_errors = sum(
        int(summary[k]) for k in ("connect_errors", "read_errors", "write_errors", "timeout_errors")
    )
    requests = int(summary["requests"])
    elapsed = float(summary["duration_s"]) or float(duration_s)
    return Result(
        scenario=scenario.name,
        target=target.name,
        connections=scenario.connections,
        duration_s=round(elapsed, 3),
        requests=requests,
        rps=round(requests / elapsed, 1),
        p50_ms=summary["p50_ms"],
        p90_ms=summary["p90_ms"],
        p99_ms=summary["p99_ms"],
        mean_ms=summary["mean_ms"],
        max_ms=summary["max_ms"],
        non_2xx=int(summary["non_2xx"]),
        socket_errors=socket_errors,
        peak_rss_mb=round(sampler.peak_mb, 1),
    )


def smoke_test(target: Target, scenarios: Sequence[Scenario]) -> list[str]:
    """One request per distinct body before loading a target; problems found, as text."""
    problems = []
    seen: set[str] = set()
    with httpx.Client(timeout=15.0, trust_env=False) as client:
        for scenario in scenarios:
            body = scenario.body()
            if body in seen:
                continue
            seen.add(body)
            try:
                response = client.post(
                    target.base_url + CHAT_PATH,
                    content=body,
                    headers={
                        "Content-Type": "application/json",
                        "Authorization": target.authorization,
                    },
                )
            except httpx.HTTPError as exc:
                problems.append(f"{scenario.name}: {type(exc).__name__}: {exc}")
                continue
            problem = _answer_problem(scenario, response)
            if problem:
                problems.append(f"{scenario.name}: {problem}")
    return problems


def _answer_problem(scenario: Scenario, response: httpx.Response) -> str:
    """Why ``response`` is not a proper answer to ``scenario`` ("" when it is).

    wrk only looks at status codes, so a 200 with the wrong body would go unnoticed.
    """
    text = response.text
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {text[:300]}"
    if scenario.stream:
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            return f"not an event stream: {response.headers.get('content-type')}"
        if "data: [DONE]" not in text:
            return f"stream without its [DONE] terminator: {text[-300:]}"
        return ""
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, LookupError, TypeError):
        return f"not a chat completion: {text[:300]}"
    return "" if isinstance(content, str) and content else f"empty answer: {text[:300]}"


def run_target(
    wrk: str,
    target: Target,
    scenarios: Sequence[Scenario],
    duration_s: int,
    warmup_s: int,
    results: list[Result],
) -> None:
    say(f"\n== {target.name} ({target.base_url})")
    for problem in smoke_test(target, scenarios):
        say(f"  smoke request failed: {problem}")
    for scenario in scenarios:
        result = measure(wrk, target, scenario, duration_s, warmup_s)
        results.append(result)
        say(
            f"  {scenario.name:<11} {result.rps:>9.1f} rps  p50 {result.p50_ms:8.2f} ms"
            f"  p99 {result.p99_ms:8.2f} ms  errors {result.errors}"
            f"  busy {result.busy_connections:.0f}/{result.connections}"
            f"  peak RSS {result.peak_rss_mb:.0f} MB" + ("  STALLING" if result.stalled else "")
        )


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def find(results: Sequence[Result], scenario: str, target: str) -> Result | None:
    return next((r for r in results if r.scenario == scenario and r.target == target), None)


def add_overheads(results: Sequence[Result]) -> None:
    for result in results:
        direct = find(results, result.scenario, "direct")
        # With no answer at all there is no latency to compare.
        if result.target != "direct" and direct is not None and result.requests and direct.requests:
            result.overhead_p50_ms = round(result.p50_ms - direct.p50_ms, 3)


def print_table(results: Sequence[Result], scenario_order: Sequence[str]) -> None:
    headers = (
        "scenario", "target", "RPS", "p50 ms", "p99 ms", "errors", "peak RSS MB",
        "overhead p50 ms",
    )  # fmt: skip
    rows: list[tuple[str, ...]] = []
    order = {"direct": 0, "gateway": 1, "litellm": 2}
    ranked = sorted(results, key=lambda r: (scenario_order.index(r.scenario), order[r.target]))
    for r in ranked:
        overhead = "" if r.overhead_p50_ms is None else f"{r.overhead_p50_ms:+.2f}"
        rss = "" if r.peak_rss_mb is None else f"{r.peak_rss_mb:.0f}"
        p50, p99 = (f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}") if r.requests else ("n/a", "n/a")
        numbers = (f"{r.rps:.1f}", p50, p99, str(r.errors))
        rows.append((r.scenario, r.target, *numbers, rss, overhead))
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        # Names left-aligned, numbers right-aligned.
        pairs = enumerate(zip(cells, widths, strict=True))
        text = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in pairs]
        return "| " + " | ".join(text) + " |"

    say("\n" + line(headers))
    say("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        say(line(row))

    for r in ranked:
        if r.stalled:
            say(
                f"note: {r.scenario} on {r.target}: only {r.busy_connections:.0f} of"
                f" {r.connections} connections were busy on average (RPS x mean latency):"
                " requests still waiting when the run ended count neither as requests nor"
                " as errors in wrk."
            )

    ratios = [
        f"{name} " + (f"{gw.rps / lt.rps:.1f}x" if lt.rps else "n/a (LiteLLM answered nothing)")
        for name in scenario_order
        if (gw := find(results, name, "gateway")) and (lt := find(results, name, "litellm"))
    ]
    if ratios:
        say("\ngateway RPS / LiteLLM RPS: " + ", ".join(ratios))


@dataclass
class Check:
    name: str
    status: str  # PASS, FAIL or SKIP
    detail: str


def check_targets(results: Sequence[Result], compare: bool) -> list[Check]:
    checks = []

    gw, direct = find(results, "plain-c1", "gateway"), find(results, "plain-c1", "direct")
    name = f"(a) overhead p50 <= {MAX_OVERHEAD_P50_MS:g} ms at 1 connection (plain-c1)"
    if gw and direct:
        overhead = gw.p50_ms - direct.p50_ms
        ok = overhead <= MAX_OVERHEAD_P50_MS and gw.errors == 0
        detail = f"gateway {gw.p50_ms:.2f} ms - direct {direct.p50_ms:.2f} ms = {overhead:.2f} ms"
        if gw.errors:
            detail += f", {gw.errors} errors"
        checks.append(Check(name, "PASS" if ok else "FAIL", detail))
    else:
        checks.append(Check(name, "SKIP", "plain-c1 not run"))

    gw, lt = find(results, "plain-c64", "gateway"), find(results, "plain-c64", "litellm")
    name = f"(b) gateway RPS >= {MIN_RATIO_VS_LITELLM:g}x LiteLLM at 64 connections (plain-c64)"
    if not compare:
        checks.append(Check(name, "SKIP", "needs --compare-litellm (make bench-compare)"))
    elif gw and lt:
        ratio = gw.rps / lt.rps if lt.rps else float("inf")
        ok = ratio >= MIN_RATIO_VS_LITELLM and gw.errors == 0
        detail = f"gateway {gw.rps:.1f} / LiteLLM {lt.rps:.1f} = {ratio:.1f}x"
        if gw.errors:
            detail += f", gateway errors {gw.errors}"
        checks.append(Check(name, "PASS" if ok else "FAIL", detail))
    else:
        checks.append(Check(name, "SKIP", "plain-c64 not run"))

    gw = find(results, "slow-c1000", "gateway")
    name = f"(c) >= {MIN_SLOW_RPS:g} RPS, zero errors at 1000 connections, 500 ms upstream"
    if gw:
        ok = gw.rps >= MIN_SLOW_RPS and gw.errors == 0 and not gw.stalled
        detail = (
            f"{gw.rps:.1f} RPS, {gw.errors} errors, p99 {gw.p99_ms:.0f} ms,"
            f" {gw.busy_connections:.0f} of 1000 connections busy"
        )
        checks.append(Check(name, "PASS" if ok else "FAIL", detail))
    else:
        checks.append(Check(name, "SKIP", "slow-c1000 not run"))
    return checks


_LOG_NOISE = re.compile(r"^\S+ \S+ |\b0x[0-9a-f]+\b|\d+")


def log_problems(
    server_name: str, start: int = 0, end: int | None = None, max_kinds: int = 8
) -> list[str]:
    """Warnings and errors in a server's log (between two byte offsets), grouped by first line."""
    path = LOG_DIR / f"{server_name}.log"
    try:
        with path.open("rb") as handle:
            handle.seek(start)
            data = handle.read(-1 if end is None else max(0, end - start))
    except OSError:
        return []
    lines = data.decode(errors="replace").splitlines()
    kinds: Counter[str] = Counter()
    first_seen: dict[str, str] = {}
    for text in lines:
        if not re.search(r"\b(WARNING|ERROR|CRITICAL)\b|^Traceback", text):
            continue
        key = _LOG_NOISE.sub("#", text)[:160]
        kinds[key] += 1
        first_seen.setdefault(key, text[:240])
    return [f"{count} x {first_seen[key]}" for key, count in kinds.most_common(max_kinds)]


def run_metadata(args: argparse.Namespace, wrk: str, backend: str, workers: int) -> dict[str, Any]:
    def git(*words: str) -> str:
        return subprocess.run(["git", *words], cwd=REPO, capture_output=True, text=True).stdout

    version = subprocess.run([wrk, "-v"], capture_output=True, text=True)
    version_lines = (version.stdout or version.stderr).splitlines()
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        # Uncommitted changes to tracked files mean the commit alone does not say what ran.
        "worktree_modified": bool(git("status", "--porcelain", "--untracked-files=no").strip()),
        "python": platform.python_version(),
        "cpus": cpu_count(),
        "workers": workers,
        "backend": backend,
        "wrk": version_lines[0] if version_lines else "",
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "compare_litellm": args.compare_litellm,
    }


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=None, help="seconds per scenario (10)")
    parser.add_argument("--quick", action="store_true", help="3 s per scenario, for smoke runs")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma-separated ({', '.join(SCENARIOS)})"
    )
    parser.add_argument(
        "--json", type=Path, default=BENCH_DIR / "results.json", help="results file"
    )
    parser.add_argument(
        "--compare-litellm", action="store_true", help="also measure a LiteLLM proxy"
    )
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 3 if args.quick else 10
    if args.duration < 1:
        parser.error("--duration must be at least 1 second")
    args.warmup = 1 if args.quick else 2
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        parser.error(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    args.scenario_list = [SCENARIOS[n] for n in names]
    return args


def benchmark(args: argparse.Namespace) -> None:
    scenarios: list[Scenario] = args.scenario_list
    wrk = ensure_wrk()
    nofile = raise_file_limit()
    workers = cpu_count()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    say(f"open-file limit {nofile}; {workers} CPUs; logs in {LOG_DIR.relative_to(REPO)}/")
    busy = cpu_busy_pct()
    if busy > 20:
        # Other work on the machine shifts every number; worth knowing when reading them.
        say(f"warning: the CPUs are already {busy:.0f}% busy before the benchmark starts")
    litellm = ensure_litellm() if args.compare_litellm else None

    sim_port = free_port()
    simulator = start_simulator(sim_port)
    say(f"simulator on {HOST}:{sim_port} (bench-slow answers after 500 ms)")

    env, backend = gateway_env()
    say(f"gateway backend: {backend}")
    api_key = prepare_gateway(env, sim_port)
    meta = {**run_metadata(args, wrk, backend, workers), "cpu_busy_before_pct": round(busy, 1)}

    results: list[Result] = []
    problems: dict[str, list[str]] = {}

    def measure_system(target: Target) -> None:
        # The simulator's log is split by phase, to tell which client upset it.
        start = simulator.log_size()
        run_target(wrk, target, scenarios, args.duration, args.warmup, results)
        found = log_problems("simulator", start, simulator.log_size())
        if found:
            problems[f"simulator (while measuring {target.name})"] = found

    measure_system(Target("direct", f"http://{HOST}:{sim_port}", "Bearer x", simulator.pid))

    # One proxy at a time: each gets the CPUs to itself (with wrk and the simulator).
    gateway = start_gateway(env, free_port(), workers)
    try:
        url = f"http://{HOST}:{gateway.port}"
        measure_system(Target("gateway", url, f"Bearer {api_key}", gateway.pid))
    finally:
        gateway.stop()
    problems["gateway"] = log_problems("gateway")

    if litellm is not None:
        config = write_litellm_config(sim_port)
        say(f"\nstarting LiteLLM ({workers} workers; it takes a while to boot)")
        proxy = start_litellm(litellm, config, free_port(), workers)
        try:
            url = f"http://{HOST}:{proxy.port}"
            measure_system(Target("litellm", url, f"Bearer {LITELLM_MASTER_KEY}", proxy.pid))
        finally:
            proxy.stop()
        problems["litellm"] = log_problems("litellm")
    simulator.stop()

    add_overheads(results)
    print_table(results, [s.name for s in scenarios])
    checks = check_targets(results, args.compare_litellm)
    say("")
    for check in checks:
        say(f"{check.status:<4}  {check.name}: {check.detail}")

    for name, found in problems.items():
        if found:
            say(f"\n{name}: warnings/errors logged (in {LOG_DIR.relative_to(REPO)}/):")
            for text in found:
                say(f"  {text}")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "meta": meta,
        "results": [{**asdict(r), "errors": r.errors} for r in results],
        "targets": [asdict(c) for c in checks],
        "log_problems": problems,
    }
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    say(f"\nresults written to {args.json}")


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM/SIGHUP into the same unwinding as Ctrl-C, so the servers get stopped.
    raise KeyboardInterrupt


def run_harness(benchmark: Callable[[argparse.Namespace], None], args: argparse.Namespace) -> int:
    """Run one benchmark with its servers stopped however it ends; the exit status."""
    handler: Callable[[int, FrameType | None], None] = _terminate
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # respect nohup
            signal.signal(signum, handler)
    started = time.monotonic()
    try:
        benchmark(args)
    except HarnessError as exc:
        say(f"\nbenchmark harness error: {exc}")
        return 2
    except KeyboardInterrupt:
        say("\ninterrupted")
        return 130
    finally:
        stop_all()
    say(f"total time {time.monotonic() - started:.0f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_harness(benchmark, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
