"""Run one learning cycle now, in this process, and print what it did."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from learning.cycles import learning_cycle_run
from learning.models import LearningRun


class Command(BaseCommand):
    help = "Run a learning cycle now and print its outcome and changes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kind", choices=LearningRun.Kind.values)
        parser.add_argument("--dry-run", action="store_true", help="Compute only; write nothing.")
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument(
            "--propose", action="store_true", help="Record the changes as proposed, unapplied."
        )
        mode.add_argument("--apply", action="store_true", help="Apply the changes.")

    def handle(self, *args: Any, **options: Any) -> None:
        run = learning_cycle_run(
            kind=options["kind"],
            dry_run=options["dry_run"],
            # Without a flag, the cycle's own mode (as beat runs it).
            mode=LearningRun.Mode.PROPOSE
            if options["propose"]
            else LearningRun.Mode.APPLY
            if options["apply"]
            else None,
        )
        label = f"run {run.pk}" if run.pk else "dry run"
        self.stdout.write(f"{run.kind} {label}: {run.status} ({run.mode})")
        self.stdout.write(run.outcome)
        if run.pk:
            for change in run.changes.order_by("id"):
                self.stdout.write(f"change {change.pk} [{change.state}]: {change}")
