from argparse import ArgumentParser
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from agents.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key for an agent (the agent is created if new) and print it once."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--agent", required=True, help="Agent (caller) name, e.g. claude-code")
        parser.add_argument("--label", default="", help="A note to recognise the key by")
        parser.add_argument(
            "--expires-in-days", type=float, default=None, help="The key stops working after this"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["expires_in_days"]
        if days is not None and days <= 0:
            raise CommandError("--expires-in-days must be positive")
        expires_at = timezone.now() + timedelta(days=days) if days is not None else None
        _, raw_key = api_key_create(
            agent_name=options["agent"], label=options["label"], expires_at=expires_at
        )
        self.stdout.write(raw_key)
