"""Writes of the review queue: items from the audit writer, decisions, reviewers.

Every decision writes its ``ReviewEvent`` in the transaction that changes the item; the verdict
callback (reviews/callbacks.py, delivered by a Celery task) is enqueued only once that transaction
has committed.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, cast

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.utils import timezone

from agents.models import Agent, ApiKey
from agents.services import api_key_mint
from gateway_project.api_errors import GatewayError
from gateway_project.versions import ROUTING_CONFIG_VERSION
from routing.cache import evict_answer
from routing.models import PromptTemplate

from .models import CALLBACK_URL_MAX_LENGTH, DECISION_STATUS, ReviewEvent, ReviewItem
from .tasks import deliver_verdict

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

Decision = Literal["approve", "reject", "correct"]
Actor = AbstractBaseUser | ApiKey

REVIEWERS_GROUP = "reviewers"
# Exactly what a reviewer may do: see the queue and decide items. Nothing else in the admin.
REVIEWER_PERMISSIONS = ("view_reviewitem", "decide_reviewitem")


class AlreadyDecided(GatewayError):
    """The item was decided by someone else first; nothing was changed (409, saying by whom).
    ``status`` is the item's status, the first decision."""

    def __init__(self, *, item_id: int, status: str, decided_by: str, decided_at: datetime | None):
        decided_by = decided_by or "someone"
        when = decided_at.strftime("%Y-%m-%d %H:%M:%S UTC") if decided_at else "an unknown time"
        super().__init__(
            f"Review {item_id} was already decided ({status}) by {decided_by} at {when}.",
            http_status=409,
            code="already_decided",
            extra={
                "status": status,
                "decided_by": decided_by,
                "decided_at": decided_at.isoformat() if decided_at else None,
            },
        )
        self.item_id = item_id
        self.status = status
        self.decided_by = decided_by
        self.decided_at = decided_at


class InvalidDecision(GatewayError):
    """The decision is incomplete (a rejection without reason, an empty correction...): 400."""

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message, http_status=400, code="invalid_decision", param=param)


# --- items from the audit writer -------------------------------------------------------------


@transaction.atomic
def review_items_create(*, rows: Sequence[Mapping[str, Any]]) -> int:
    """Queue the audit rows that carry a ``review_reason``; returns how many items are new.

    Called by the audit writer inside the transaction that inserts the audit rows, so an item
    exists exactly when its record does. Idempotent: a row already queued is skipped.
    """
    reasons = set(ReviewItem.Reason.values)
    wanted = {str(r["request_id"]): r for r in rows if r.get("review_reason") in reasons}
    if not wanted:
        return 0
    existing = set(
        # audit_record__request_id is the FK column itself: no join.
        ReviewItem.objects.filter(audit_record__request_id__in=list(wanted)).values_list(
            "audit_record__request_id", flat=True
        )
    )
    now = timezone.now()
    items = [
        ReviewItem(
            audit_record_id=request_id,
            task_type=str(row.get("task_type") or ""),
            caller=str(row.get("caller") or ""),
            model=str(row.get("model") or ""),
            tier=str(row.get("tier") or ""),
            confidence=row.get("confidence"),
            gate_status=str(row.get("status") or ""),
            reason=str(row["review_reason"]),
            callback_url=_callback_url_from(row.get("metadata")),
            created_at=now,
        )
        for request_id, row in wanted.items()
        if request_id not in existing
    ]
    # ignore_conflicts: another process may queue the same record between the read and here.
    ReviewItem.objects.bulk_create(items, ignore_conflicts=True)
    return len(items)


def _callback_url_from(metadata: Any) -> str:
    url = metadata.get("callback_url") if isinstance(metadata, Mapping) else None
    if not isinstance(url, str) or len(url) > CALLBACK_URL_MAX_LENGTH:
        return ""
    return url.strip()


# --- decisions ---------------------------------------------------------------------------------


def _actor_fields(actor: Actor) -> tuple[User | None, str]:
    if isinstance(actor, ApiKey):
        return None, f"{actor.agent.name} (API key {actor.prefix}…)"
    # AUTH_USER_MODEL: django-stubs types user foreign keys as auth.User.
    return cast("User", actor), actor.get_username()


def review_item_decide(
    *,
    item_id: int,
    actor: Actor,
    decision: Decision,
    reason: str = "",
    corrected_output: str | None = None,
) -> ReviewItem:
    """Approve, reject (a reason is required) or correct (a new output is required) one item.

    An item is decided once: the row is locked, and a decision on an item that is no longer
    pending raises ``AlreadyDecided`` naming who decided it and when. The ``ReviewEvent`` is
    written in the same transaction; the verdict callback is enqueued after commit.
    Raises ``ReviewItem.DoesNotExist`` for an unknown id.
    """
    reason = (reason or "").strip()
    if decision not in DECISION_STATUS:
        raise InvalidDecision("Decision must be approve, reject or correct.", param="decision")
    if decision == "reject" and not reason:
        raise InvalidDecision("A rejection needs a reason.", param="reason")
    if decision == "correct" and not (corrected_output or "").strip():
        raise InvalidDecision("A correction needs the corrected output.", param="corrected_output")
    user, label = _actor_fields(actor)
    with transaction.atomic():
        item = ReviewItem.objects.select_for_update().get(pk=item_id)
        if item.status != ReviewItem.Status.PENDING:
            raise AlreadyDecided(
                item_id=item.pk,
                status=item.status,
                decided_by=item.decided_by_label,
                decided_at=item.decided_at,
            )
        old_status = item.status
        item.status = DECISION_STATUS[decision]
        item.decided_by = user
        item.decided_by_label = label
        item.decided_at = timezone.now()
        item.rejection_reason = reason if decision == "reject" else ""
        item.corrected_output = (corrected_output or "") if decision == "correct" else ""
        update_fields = [
            "status", "decided_by", "decided_by_label", "decided_at", "rejection_reason",
            "corrected_output",
        ]  # fmt: skip
        if item.callback_url:
            item.callback_state = ReviewItem.CallbackState.PENDING
            update_fields.append("callback_state")
        item.save(update_fields=update_fields)
        ReviewEvent.objects.create(
            item=item,
            actor=user,
            actor_label=label,
            action=decision,
            old_status=old_status,
            new_status=item.status,
            reason=reason,
            at=item.decided_at,
        )
        if item.callback_url:
            transaction.on_commit(functools.partial(_enqueue_verdict, item.pk))
        if decision in ("reject", "correct"):
            # The answer was wrong: it must not be served again from the response cache.
            transaction.on_commit(functools.partial(_evict_cached_answer, item.request_id))
        if (
            item.status != ReviewItem.Status.REJECTED
            and PromptTemplate.objects.filter(
                task_type=item.task_type, include_examples=True
            ).exists()
        ):
            # A new example for this task type's few-shot prompt: every process reloads it.
            ROUTING_CONFIG_VERSION.bump_on_commit()
    return item


def _evict_cached_answer(request_id: str) -> None:
    try:
        evict_answer(request_id)
    except Exception:
        # The decision stands; the entry expires with its TTL.
        logger.exception("reviews: could not remove the cached answer of %s", request_id)


def _enqueue_verdict(item_id: int) -> None:
    try:
        deliver_verdict.delay(item_id)
    except Exception:
        # The decision stands; the item keeps callback_state=pending, visible in the admin.
        logger.exception("reviews: could not enqueue the verdict callback of item %s", item_id)


# --- reviewers --------------------------------------------------------------------------------


@transaction.atomic
def reviewers_group_ensure() -> Group:
    """The ``reviewers`` group with exactly the reviewer permissions (created if missing)."""
    group, _ = Group.objects.get_or_create(name=REVIEWERS_GROUP)
    permissions = list(
        Permission.objects.filter(
            content_type__app_label="reviews", codename__in=REVIEWER_PERMISSIONS
        )
    )
    if len(permissions) != len(REVIEWER_PERMISSIONS):
        raise RuntimeError("Review permissions are missing: run `manage.py migrate` first.")
    group.permissions.set(permissions)
    return group


@transaction.atomic
def reviewer_create(*, username: str, email: str = "") -> tuple[AbstractBaseUser, str]:
    """A staff user in the ``reviewers`` group; returns it and its generated password, once."""
    user_model = get_user_model()
    if user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).exists():
        raise ValueError(f"A user named {username!r} already exists.")
    password = secrets.token_urlsafe(15)
    user = user_model._default_manager.create_user(
        username=username, email=email, password=password, is_staff=True
    )
    user.groups.add(reviewers_group_ensure())
    return user, password


@transaction.atomic
def reviewer_api_key_create(*, username: str) -> tuple[ApiKey, str]:
    """A reviewer-scoped API key for the decision API; returns the record and the raw key, once.

    Keys belong to agents, so a reviewer's keys hang off an agent named ``reviewer-<username>``.
    """
    agent, _ = Agent.objects.get_or_create(
        name=f"reviewer-{username}"[:100],
        defaults={"description": f"Review decision API keys of {username}"},
    )
    return api_key_mint(
        agent=agent, label=f"reviewer {username}"[:100], scope=ApiKey.Scope.REVIEWER
    )
