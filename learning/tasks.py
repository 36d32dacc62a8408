"""Celery tasks of the learning cycles: thin wrappers, scheduled by django-celery-beat."""

from __future__ import annotations

from celery import Task, shared_task

from .cycles import learning_cycle_run


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def run_learning_cycle(self: Task[[str], int], kind: str) -> int:
    """Run the learning cycle ``kind`` (a second one of the same kind is recorded as skipped);
    returns the run's id."""
    return learning_cycle_run(kind=kind, task_id=self.request.id or "").pk
