"""One error hierarchy (``GatewayError``) and one place that turns it into HTTP
(gateway_project/api_errors.py ``error_response``), used by the async views' ``api_endpoint``, the
project's DRF exception handler and the lean ASGI handler alike."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import orjson
import pytest
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from agents.limits import LimitExceeded
from gateway_project.api_asgi import BodyRefused
from gateway_project.api_errors import ApiError, GatewayError, error_response
from gateway_project.drf import exception_handler
from reviews.services import AlreadyDecided, InvalidDecision
from routing.api.views import api_endpoint
from routing.cache import CacheDirectiveError
from routing.router import Attempt, RoutingError
from routing.services import NotAllowed, UnknownModel


def _errors() -> list[GatewayError]:
    attempt = Attempt(provider="p", model="m", upstream_model="m", tier="fast", outcome="error")
    return [
        ApiError(400, "Invalid request: x: bad", code="invalid_field", param="x"),
        BodyRefused(413, "Request body larger than 10 bytes.", "body_too_large"),
        LimitExceeded(
            "rate_limit_requests", "Rate limit reached.", retry_after_s=2.5, headers={"a": "b"}
        ),
        RoutingError(
            "nothing",
            code="no_available_model",
            http_status=503,
            attempts=[attempt],
            retry_after_s=7.2,
        ),
        NotAllowed("not this model", param="model"),
        UnknownModel("nope"),
        CacheDirectiveError("X-Gateway-Cache-TTL", "X-Gateway-Cache-TTL must be seconds."),
        AlreadyDecided(
            item_id=3,
            status="approved",
            decided_by="rita",
            decided_at=datetime(2026, 1, 2, tzinfo=UTC),
        ),
        InvalidDecision("A rejection needs a reason.", param="reason"),
    ]


def _parts(response: HttpResponse) -> tuple[int, dict[str, object], dict[str, str]]:
    headers = {k: v for k, v in response.items() if k not in ("Content-Length", "Vary")}
    return response.status_code, orjson.loads(response.content), headers


@pytest.mark.parametrize("error", _errors(), ids=lambda e: type(e).__name__)
def test_every_api_error_is_answered_the_same_by_views_and_drf(error: GatewayError) -> None:
    """An API error class is a GatewayError, and the async views' wrapper and the DRF handler
    answer it with the same status, body and headers as ``error_response`` builds."""

    @api_endpoint("GET")
    async def view(request: HttpRequest) -> HttpResponse:
        raise error

    request = RequestFactory().get("/v1/anything")
    from_view = asyncio.run(view(request))
    from_drf = exception_handler(error, {})
    assert from_drf is not None and isinstance(from_view, HttpResponse)
    expected = _parts(error_response(error))
    assert _parts(from_view) == expected == _parts(from_drf)
    status, body, _ = expected
    assert status == error.http_status and body["error"]["code"] == error.code  # type: ignore[index]


def test_retry_after_and_extra_fields_come_from_the_error() -> None:
    """``Retry-After`` is the error's ``retry_after_s`` rounded up; a routing error's body lists
    its attempts; a conflict says who decided first."""
    routing, conflict = _errors()[3], _errors()[7]
    status, body, headers = _parts(error_response(routing))
    assert (status, headers["Retry-After"]) == (503, "8")
    assert body["error"]["attempts"][0]["provider"] == "p"  # type: ignore[index]
    status, body, _ = _parts(error_response(conflict))
    assert status == 409 and body["error"]["decided_by"] == "rita"  # type: ignore[index]
    assert isinstance(conflict, AlreadyDecided) and conflict.status == "approved"  # the item's
    limit = _errors()[2]
    assert error_response(limit)["Retry-After"] == "3" and error_response(limit)["a"] == "b"
