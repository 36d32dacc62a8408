"""Create the beat schedules of the learning cycles, once; later edits in the admin are kept."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

TASK = "learning.tasks.run_learning_cycle"
SCHEDULES = {"validators": 6, "thresholds": 12, "assignments": 24}  # kind: every N hours


class Command(BaseCommand):
    help = "Create the periodic tasks of the learning cycles (idempotent; keeps admin edits)."

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        for kind, hours in SCHEDULES.items():
            interval, _ = IntervalSchedule.objects.get_or_create(
                every=hours, period=IntervalSchedule.HOURS
            )
            _, created = PeriodicTask.objects.get_or_create(
                name=f"learning: {kind}",
                defaults={"interval": interval, "task": TASK, "args": json.dumps([kind])},
            )
            state = "created" if created else "exists, left as it is"
            self.stdout.write(f"learning: {kind} (every {hours} h): {state}")
