"""The first run on a machine (``make run``): an admin, a demo API key and the demo routing config.

Each step does its work once and afterwards keeps what it finds, so running ``make run`` again
changes nothing an operator, an admin or a learning cycle did (docs/adr/0016-first-run.md). The
steps answer with data (``SetupStep``); ``manage.py demo_setup --json`` prints them for
``scripts/make_run.py``, which never has to read a command's human output.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from agents.models import ApiKey
from agents.services import api_key_create, api_key_hash
from providers.models import ModelDeployment, Provider

from .config_io import config_import

ADMIN_USERNAME = "admin"
DEMO_AGENT = "demo-agent"
DEMO_KEY_LABEL = "make run"
PASSWORD_FILE = "admin-password.txt"
KEY_FILE = "demo-api-key.txt"
# The demo config's providers; their base URLs hold SIM_URL until the simulator's address is known.
DEMO_PROVIDERS = ("sim-ollama", "sim-openai", "sim-anthropic", "sim-gemini")
SIM_URL_PLACEHOLDER = "SIM_URL"


@dataclass(frozen=True)
class SetupStep:
    """What one step found and did.

    ``status`` is a short word a script can branch on; ``secret`` is the password or key to show
    the operator ("" when it must not or cannot be shown); ``file`` is where it is kept.
    """

    status: str
    message: str
    secret: str = ""
    file: str = ""
    details: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read (created that way, never world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    path.chmod(0o600)


def _read_secret(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return ""


# --- the admin ----------------------------------------------------------------------------------


def demo_admin_ensure(*, data_dir: Path) -> SetupStep:
    """Create the ``admin`` superuser with a generated password kept in the password file, once.

    An existing admin is never changed. Its password is shown only while it is still the one in
    the file; when someone changed it, the stale file is removed and the step says so.
    """
    user_model = get_user_model()
    password_file = data_dir / PASSWORD_FILE
    user = user_model.objects.filter(username=ADMIN_USERNAME).first()
    if user is None:
        password = secrets.token_urlsafe(12)
        with transaction.atomic():
            user_model.objects.create_superuser(
                username=ADMIN_USERNAME, email="admin@localhost", password=password
            )
            # Inside the transaction: if the file cannot be written, no admin without a
            # known password is left behind.
            _write_private(password_file, password)
        return SetupStep(
            status="created",
            message=f"created the admin user; its password is in {password_file}",
            secret=password,
            file=str(password_file),
        )
    remembered = _read_secret(password_file)
    if remembered and user.check_password(remembered):
        return SetupStep(
            status="unchanged",
            message=f"the admin user keeps the password make run generated ({password_file})",
            secret=remembered,
            file=str(password_file),
        )
    if remembered:
        password_file.unlink(missing_ok=True)
        return SetupStep(
            status="password_changed",
            message=(
                "the admin's password was changed after make run generated it: kept as it is, "
                f"and the stale {password_file} removed"
            ),
        )
    return SetupStep(
        status="kept",
        message=(
            "the admin user exists and make run does not know its password: kept as it is "
            "(python manage.py changepassword admin sets a new one)"
        ),
    )


# --- the demo API key ---------------------------------------------------------------------------


def _unusable_because(key: ApiKey | None) -> str:
    """Why the key from the key file no longer works ("" when it does)."""
    if key is None:
        return "is not in this database"
    if key.revoked_at is not None:
        return "was revoked"
    if key.expires_at is not None and key.expires_at <= timezone.now():
        return "has expired"
    return ""


def demo_api_key_ensure(*, data_dir: Path) -> SetupStep:
    """The demo agent's key that make run printed before, from the key file, while it still works;
    otherwise a new key (kept in that file). So a second run issues no new key."""
    key_file = data_dir / KEY_FILE
    raw_key = _read_secret(key_file)
    if raw_key:
        key = ApiKey.objects.select_related("agent").filter(key_hash=api_key_hash(raw_key)).first()
        reason = _unusable_because(key)
        if not reason and key is not None:
            message = f"reusing the API key in {key_file}"
            if not key.agent.is_active:
                message += f" (agent {key.agent.name} is deactivated: activate it in the admin)"
            return SetupStep(status="reused", message=message, secret=raw_key, file=str(key_file))
        why = f"the key in {key_file} {reason}"
    else:
        why = f"no key file at {key_file}"
    earlier = list(
        ApiKey.objects.filter(
            agent__name=DEMO_AGENT, label=DEMO_KEY_LABEL, revoked_at=None
        ).values_list("prefix", flat=True)
    )
    with transaction.atomic():
        _, raw_key = api_key_create(agent_name=DEMO_AGENT, label=DEMO_KEY_LABEL)
        _write_private(key_file, raw_key)
    message = f"{why}: issued a new API key for {DEMO_AGENT}, kept in {key_file}"
    if earlier:
        message += (
            f"; the earlier make run keys ({', '.join(p + '…' for p in earlier)}) still work "
            "until revoked in the admin (API keys)"
        )
    return SetupStep(status="issued", message=message, secret=raw_key, file=str(key_file))


# --- the demo routing config --------------------------------------------------------------------


def routing_config_is_empty() -> bool:
    """No model deployments and none of the demo's providers: a database make run may fill.

    The providers the migrations create (local Ollama, the hosted ones, disabled) have no models,
    so they do not count: with no models nothing can be routed anyway.
    """
    return (
        not ModelDeployment.objects.exists()
        and not Provider.objects.filter(name__in=DEMO_PROVIDERS).exists()
    )


def local_ollama_models(*, ollama_url: str) -> list[str]:
    """The models a local Ollama serves, [] when none answers within two seconds."""
    try:
        response = httpx.get(f"{ollama_url.rstrip('/')}/api/tags", timeout=2)
        models = response.json().get("models", [])
        return [str(m["name"]) for m in models if isinstance(m, dict) and m.get("name")]
    except (httpx.HTTPError, ValueError, KeyError, AttributeError):
        return []


def demo_config_text(
    *, template: str, simulator_url: str, ollama_url: str, models: list[str]
) -> str:
    """The demo config for this machine: the simulator's address, plus the local Ollama's
    models on the fast tier when there are any."""
    text = template.replace(SIM_URL_PLACEHOLDER, simulator_url.rstrip("/"))
    if not models:
        return text
    text = text.replace(
        "providers:\n",
        f'providers:\n  - {{name: local-ollama, kind: ollama, base_url: "{ollama_url}", '
        "api_key_env: null, enabled: true}\n",
        1,
    )
    lines = [
        f'  - {{name: "{m}", provider: local-ollama, tier: fast, input_cost_per_mtok: 0, '
        f"output_cost_per_mtok: 0, context_window: 32768}}"
        for m in models
    ]
    return text.replace("models:\n", "models:\n" + "\n".join(lines) + "\n", 1)


def demo_config_ensure(*, simulator_url: str, ollama_url: str) -> SetupStep:
    """Import the demo config into an empty database; otherwise keep the configuration as it is
    (what admins and learning cycles changed stays changed) and say so."""
    if not routing_config_is_empty():
        return _config_kept(simulator_url=simulator_url)
    models = local_ollama_models(ollama_url=ollama_url)
    template = (Path(settings.BASE_DIR) / "config" / "demo.yaml").read_text(encoding="utf-8")
    text = demo_config_text(
        template=template, simulator_url=simulator_url, ollama_url=ollama_url, models=models
    )
    report = config_import(text=text, dry_run=False)
    where = (
        f"the simulator and the local Ollama at {ollama_url} ({', '.join(models)})"
        if models
        else "the simulator only (no local Ollama answered at " + ollama_url + ")"
    )
    return SetupStep(
        status="imported",
        message=f"imported the demo config into the empty database: {where}",
        details=report.summary_lines(),
    )


def _config_kept(*, simulator_url: str) -> SetupStep:
    count = ModelDeployment.objects.count()
    details = []
    if count == 0:
        details.append(
            "no models are configured, so requests get 503: add some in the admin, or "
            "python manage.py gateway_config import a file (config/demo.yaml shows the format)"
        )
    # The demo's providers point at the simulator of the run that imported them.
    wanted = simulator_url.rstrip("/")
    elsewhere: dict[str, list[str]] = {}
    for provider in Provider.objects.filter(name__in=DEMO_PROVIDERS).order_by("name"):
        if not provider.base_url.startswith(wanted):
            parts = urlsplit(provider.base_url)
            elsewhere.setdefault(f"{parts.scheme}://{parts.netloc}", []).append(provider.name)
    for origin, names in elsewhere.items():
        port = urlsplit(origin).port
        hint = f"run with GATEWAY_SIM_PORT={port}" if port else "run with the simulator there"
        details.append(
            f"the demo providers {', '.join(names)} call {origin}, not this run's simulator at "
            f"{wanted}: {hint}, or change their base URL in the admin"
        )
    models = f"{count} model{'s' if count != 1 else ''}"
    return SetupStep(
        status="kept",
        message=(
            f"kept the existing routing configuration ({models}); the demo config is imported "
            "only into an empty database"
        ),
        details=details,
    )
