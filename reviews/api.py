"""The review decision API: ``POST /v1/reviews/{id}/decision`` with a reviewer-scoped key.

A DRF view, synchronous: the lean API handler runs it in a worker thread
(gateway_project/api_asgi.py). Its parser and exception handler are the project's
(``REST_FRAMEWORK`` in settings: gateway_project/drf.py), so bodies meet the same rules and errors
have the same shape as on every other endpoint.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.views import APIView

from agents.authentication import HasReviewerScope, ReviewerKeyAuthentication
from agents.models import ApiKey
from gateway_project.api_errors import ApiError, error_response
from routing.api.common import json_response

from .models import ReviewItem
from .selectors import review_decision_reason, review_item_pk
from .services import AlreadyDecided, InvalidDecision, review_item_decide


class ReviewDecisionSerializer(serializers.Serializer[dict[str, Any]]):
    decision = serializers.ChoiceField(choices=["approve", "reject", "correct"])
    reason = serializers.CharField(required=False, allow_blank=True, max_length=5000, default="")
    corrected_output = serializers.CharField(
        required=False, allow_null=True, trim_whitespace=False, default=None
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["decision"] == "reject" and not attrs["reason"].strip():
            raise serializers.ValidationError({"reason": "A rejection needs a reason."})
        if attrs["decision"] == "correct" and not (attrs["corrected_output"] or "").strip():
            raise serializers.ValidationError(
                {"corrected_output": "A correction needs the corrected output."}
            )
        return attrs


def error(
    http_status: int, message: str, *, code: str, param: str | None = None, **extra: Any
) -> HttpResponse:
    """The gateway's error shape, from its one builder (gateway_project/api_errors.py)."""
    return error_response(ApiError(http_status, message, code=code, param=param, extra=extra))


def _not_found(review_id: str) -> str:
    if review_id.isdigit():
        return f"No review item {review_id}."
    # Never echo what is not an id (it may hold anything); a request's item is written by the
    # audit writer within a second of its answer.
    return (
        "No review item for this id: give the review id (the request's id) that the completion "
        "response returned, once it said a review was queued; its item is created within a "
        "second of the answer."
    )


class ReviewDecisionApi(APIView):
    """Decide one review item: ``{decision: approve|reject|correct, reason?, corrected_output?}``."""

    authentication_classes = [ReviewerKeyAuthentication]
    permission_classes = [HasReviewerScope]

    def post(self, request: Request, review_id: str) -> HttpResponse:
        serializer = ReviewDecisionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        assert isinstance(request.auth, ApiKey)  # HasReviewerScope let it through
        item_id = review_item_pk(review_id=review_id)
        if item_id is None:
            return error(404, _not_found(review_id), code="review_not_found", param="id")
        try:
            item = review_item_decide(
                item_id=item_id,
                actor=request.auth,
                decision=data["decision"],
                reason=data["reason"],
                corrected_output=data["corrected_output"],
            )
        except ReviewItem.DoesNotExist:
            return error(404, _not_found(review_id), code="review_not_found", param="id")
        except AlreadyDecided as exc:
            return error(
                409,
                str(exc),
                code="already_decided",
                status=exc.status,
                decided_by=exc.decided_by,
                decided_at=exc.decided_at.isoformat() if exc.decided_at else None,
            )
        except InvalidDecision as exc:
            return error(400, str(exc), code="invalid_decision", param=exc.param)
        return json_response(
            {
                "id": item.pk,
                "request_id": item.request_id,
                "status": item.status,
                "decided_by": item.decided_by_label,
                "decided_at": item.decided_at,
                "reason": review_decision_reason(item=item) or None,
                "corrected_output": item.corrected_output or None,
            }
        )
