from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from agents.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key for an agent (the agent is created if new) and print it once."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--agent", required=True, help="Agent (caller) name, e.g. claude-code")
        parser.add_argument("--label", default="", help="A note to recognise the key by")

    def handle(self, *args: Any, **options: Any) -> None:
        _, raw_key = api_key_create(agent_name=options["agent"], label=options["label"])
        self.stdout.write(raw_key)
