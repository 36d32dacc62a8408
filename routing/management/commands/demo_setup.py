"""``manage.py demo_setup``: what ``make run`` sets up, done once and kept afterwards.

demo_setup --simulator-url URL [--data-dir DIR] [--ollama-url URL] [--json]

Creates the admin (password in DIR/admin-password.txt), the demo agent's API key
(DIR/demo-api-key.txt) and, into an empty database only, the demo routing config. Run again, it
keeps all three. ``--json`` prints one JSON object on one line, for scripts; the exit code is 0
when every step worked (docs/adr/0016-first-run.md).
"""

from __future__ import annotations

import json
import os
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from routing.config_io import ConfigImportError
from routing.first_run import (
    ADMIN_USERNAME,
    DEMO_AGENT,
    SetupStep,
    demo_admin_ensure,
    demo_api_key_ensure,
    demo_config_ensure,
)


class Command(BaseCommand):
    help = (
        "Set up what make run needs (admin, demo API key, demo routing config) once; "
        "run again, keep what is there."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--simulator-url",
            required=True,
            help="Where the upstream simulator answers, e.g. http://127.0.0.1:9100",
        )
        parser.add_argument(
            "--data-dir",
            default=None,
            help="Where the password and key files live (default: GATEWAY_DATA_DIR, var/)",
        )
        parser.add_argument(
            "--ollama-url",
            default=os.environ.get("OLLAMA_URL", "http://127.0.0.1:11434"),
            help="A local Ollama whose models join the fast tier on the first import",
        )
        parser.add_argument(
            "--json", action="store_true", help="Print the result as one line of JSON"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        data_dir = Path(options["data_dir"] or settings.DATA_DIR)
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            admin = demo_admin_ensure(data_dir=data_dir)
            api_key = demo_api_key_ensure(data_dir=data_dir)
        except OSError as exc:
            raise CommandError(f"cannot write to {data_dir}: {exc.strerror or exc}") from exc
        try:
            config = demo_config_ensure(
                simulator_url=options["simulator_url"], ollama_url=options["ollama_url"]
            )
        except ConfigImportError as exc:
            raise CommandError(
                "the demo config could not be imported:\n" + "\n".join(exc.errors)
            ) from exc
        steps = {"admin": admin, "api_key": api_key, "config": config}
        if options["json"]:
            result = {name: step.as_dict() for name, step in steps.items()}
            result["admin"]["username"] = ADMIN_USERNAME
            result["api_key"]["agent"] = DEMO_AGENT
            self.stdout.write(json.dumps(result))
            return
        for name, step in steps.items():
            self._report(name, step)

    def _report(self, name: str, step: SetupStep) -> None:
        self.stdout.write(f"{name}: {step.message}")
        if step.secret:
            label = "password" if name == "admin" else "key"
            self.stdout.write(f"  {label}: {step.secret}")
        for line in step.details:
            self.stdout.write(f"  {line}")
