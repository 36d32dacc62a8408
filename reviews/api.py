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
from gateway_project.api_errors import ApiError
from routing.api.common import json_response

from .models import ReviewItem
from .selectors import review_decision_reason, review_item_pk
from .services import review_item_decide


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


def _not_found(review_id: str) -> ApiError:
    if review_id.isdigit():
        message = f"No review item {review_id}."
    else:
        # Never echo what is not an id (it may hold anything); a request's item is written by
        # the audit writer within a second of its answer.
        message = (
            "No review item for this id: give the review id (the request's id) that the "
            "completion response returned, once it said a review was queued; its item is "
            "created within a second of the answer."
        )
    return ApiError(404, message, code="review_not_found", param="id")


class ReviewDecisionApi(APIView):
    """Decide one review item: ``{decision: approve|reject|correct, reason?, corrected_output?}``."""

    authentication_classes = [ReviewerKeyAuthentication]
    permission_classes = [HasReviewerScope]

    def post(self, request: Request, review_id: str) -> HttpResponse:
        """A conflict (``AlreadyDecided``) or an incomplete decision (``InvalidDecision``) is a
        ``GatewayError``: the project's DRF exception handler answers it."""
        serializer = ReviewDecisionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        assert isinstance(request.auth, ApiKey)  # HasReviewerScope let it through
        item_id = review_item_pk(review_id=review_id)
        if item_id is None:
            raise _not_found(review_id)
        try:
            item = review_item_decide(
                item_id=item_id,
                actor=request.auth,
                decision=data["decision"],
                reason=data["reason"],
                corrected_output=data["corrected_output"],
            )
        except ReviewItem.DoesNotExist:
            raise _not_found(review_id) from None
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
