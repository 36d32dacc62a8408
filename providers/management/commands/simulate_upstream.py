"""``manage.py simulate_upstream``: run the upstream simulator (same options as the CLI)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from simulator import KnobError, run
from simulator.__main__ import add_arguments, models_from_specs


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # a standalone server: no need to check the project
    help = "Serve fake OpenAI, Ollama, Anthropic and Gemini endpoints (tests, demo, benchmarks)."

    def add_arguments(self, parser: CommandParser) -> None:
        add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            models = models_from_specs(options["models"])
        except KnobError as exc:
            raise CommandError(str(exc)) from exc
        run(options["host"], options["port"], models, options["require_key"])
