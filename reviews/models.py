"""The human review queue: answers a person should look at, and each decision's audit row.
(Reviewed answers also serve as few-shot examples of routing's prompt templates:
``reviews.selectors.examples_for``, registered in ``ReviewsConfig.ready``.)"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from routing.models import AuditRecord

CALLBACK_URL_MAX_LENGTH = 2000


class ReviewItem(models.Model):
    """One audit record waiting for (or having had) a person's verdict.

    The routing fields are copied from the audit record so the queue filters and sorts without
    joining the (large) audit table. Items are decided once, through
    ``reviews.services.review_item_decide``.
    """

    class Reason(models.TextChoices):
        LOW_CONFIDENCE = "low_confidence", "Low confidence"
        SAMPLED = "sampled", "Sampled"
        EXPLORED = "explored", "Exploration sample"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        CORRECTED = "corrected", "Corrected"

    class CallbackState(models.TextChoices):
        """Delivery of the verdict to the agent's ``callback_url``."""

        NONE = "none", "No callback"
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    audit_record = models.OneToOneField(
        AuditRecord,
        to_field="request_id",
        on_delete=models.CASCADE,
        related_name="review_item",
        verbose_name="request",
    )
    task_type = models.CharField(max_length=100, blank=True)
    caller = models.CharField(max_length=100)
    model = models.CharField(max_length=200, blank=True)
    tier = models.CharField(max_length=16, blank=True)
    confidence = models.FloatField(null=True, blank=True, help_text="0-10, from the validators.")
    gate_status = models.CharField(
        max_length=24,
        choices=[
            (s.value, s.label)
            for s in (
                AuditRecord.Status.PENDING_REVIEW,
                AuditRecord.Status.WARNING,
                AuditRecord.Status.APPROVED,
            )
        ],
        help_text="What the confidence gate said about the answer.",
    )
    reason = models.CharField(max_length=16, choices=Reason.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    decided_by_label = models.CharField(
        max_length=200, blank=True, help_text="Who decided: a username, or an API key's agent."
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    rejection_reason = models.TextField(blank=True)
    corrected_output = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    callback_url = models.CharField(max_length=CALLBACK_URL_MAX_LENGTH, blank=True)
    callback_state = models.CharField(
        max_length=16, choices=CallbackState.choices, default=CallbackState.NONE
    )
    callback_attempts = models.PositiveSmallIntegerField(default=0)
    callback_error = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(fields=["status", "created_at"], name="review_status_created_idx"),
            # examples_for(): the latest approved or corrected answers of a task type.
            models.Index(fields=["task_type", "status", "decided_at"], name="review_examples_idx"),
        ]
        permissions = [("decide_reviewitem", "Can approve, reject or correct review items")]

    def __str__(self) -> str:
        return f"Review {self.pk} of {self.audit_record_id}"

    @property
    def request_id(self) -> str:
        return str(self.audit_record_id)

    @property
    def is_pending(self) -> bool:
        return self.status == self.Status.PENDING


# What each decision makes of an item's status.
DECISION_STATUS: dict[str, str] = {
    "approve": ReviewItem.Status.APPROVED,
    "reject": ReviewItem.Status.REJECTED,
    "correct": ReviewItem.Status.CORRECTED,
}


class ReviewEvent(models.Model):
    """The audit row of one decision: who moved an item from which status to which, and why."""

    class Action(models.TextChoices):
        APPROVE = "approve", "Approve"
        REJECT = "reject", "Reject"
        CORRECT = "correct", "Correct"

    item = models.ForeignKey(ReviewItem, on_delete=models.CASCADE, related_name="events")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    actor_label = models.CharField(max_length=200, blank=True)
    action = models.CharField(max_length=16, choices=Action.choices)
    old_status = models.CharField(max_length=16, choices=ReviewItem.Status.choices)
    new_status = models.CharField(max_length=16, choices=ReviewItem.Status.choices)
    reason = models.TextField(blank=True)
    at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.actor_label} {self.action} review {self.item_id}"
