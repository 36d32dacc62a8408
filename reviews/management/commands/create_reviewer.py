from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from reviews.services import reviewer_api_key_create, reviewer_create


class Command(BaseCommand):
    help = (
        "Create a reviewer: a staff user in the 'reviewers' group (created if missing), who can "
        "see and decide review items and nothing else. Prints a generated password, once."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("name", help="The reviewer's username")
        parser.add_argument("--email", default="", help="The reviewer's e-mail address")
        parser.add_argument(
            "--api-key",
            action="store_true",
            help="Also create a reviewer-scoped API key for POST /v1/reviews/{id}/decision",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user, password = reviewer_create(username=options["name"], email=options["email"])
        except (ValueError, RuntimeError) as exc:  # name taken; permissions not migrated yet
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Reviewer {user.get_username()} created.")
        self.stdout.write(f"Password (shown once): {password}")
        if options["api_key"]:
            _, raw_key = reviewer_api_key_create(username=user.get_username())
            self.stdout.write(f"API key (shown once): {raw_key}")
