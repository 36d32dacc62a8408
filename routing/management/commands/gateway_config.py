"""``manage.py gateway_config``: the routing configuration as a YAML file, out and back in.

gateway_config export [--output FILE]
gateway_config import FILE [--dry-run]      (FILE may be - for standard input)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from routing.config_io import ConfigImportError, config_export, config_import


class Command(BaseCommand):
    help = "Export the routing configuration as YAML, or import (upsert) it from a YAML file."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{export,import}")
        export = actions.add_parser("export", help="Write the configuration as YAML.")
        export.add_argument(
            "--output", "-o", metavar="FILE", help="Write to FILE instead of standard output."
        )
        importer = actions.add_parser(
            "import", help="Create or update what FILE describes; all or nothing."
        )
        importer.add_argument("file", metavar="FILE", help="A YAML file, or - for standard input.")
        importer.add_argument(
            "--dry-run",
            action="store_true",
            help="Validate and report what would change, without writing anything.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "export":
            self._export(options.get("output"))
        else:
            self._import(options["file"], dry_run=options.get("dry_run", False))

    def _export(self, output: str | None) -> None:
        text = config_export()
        if not output:
            self.stdout.write(text, ending="")
            return
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot write {output}: {exc.strerror or exc}") from exc
        self.stdout.write(f"Wrote the configuration to {output}.")

    def _import(self, source: str, *, dry_run: bool) -> None:
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot read {source}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise CommandError(f"cannot read {source}: not UTF-8 text ({exc.reason})") from exc
        name = "standard input" if source == "-" else source
        try:
            report = config_import(text=text, dry_run=dry_run)
        except ConfigImportError as exc:
            count = len(exc.errors)
            lines = [f"{name}: {count} error{'s' if count != 1 else ''}, nothing was imported:"]
            raise CommandError("\n".join(lines + [f"  {e}" for e in exc.errors])) from exc
        if dry_run:
            self.stdout.write(f"Dry run of {name}: nothing was written.")
        else:
            self.stdout.write(f"Imported {name}.")
        for line in report.summary_lines():
            self.stdout.write(f"  {line}")
        if not report.changes:
            self.stdout.write("No changes.")
            return
        self.stdout.write("Would change:" if dry_run else "Changes:")
        for change in report.changes:
            self.stdout.write(f"  {change}")
