"""Refuse a NUL character in what a browser sends to the admin (docs/adr/0014-hostile-input.md).

PostgreSQL cannot hold NUL in text: a NUL reaching a query (a changelist filter such as
``?status=%00``, a search, an object id in the path, a session cookie) raised a database error and
answered 500. No legitimate request carries one, so it is refused once, here, before any view or
middleware reads the request. The API (``/v1/``, ``/health``) applies its own body and id rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest

from .api_asgi import API_PREFIXES

_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


def _has_nul(items: Iterable[tuple[str, list[str]]]) -> bool:
    return any("\x00" in key or any("\x00" in v for v in values) for key, values in items)


def nul_location(request: HttpRequest) -> str | None:
    """Where the request carries a NUL (path, query string, form, cookie), or None."""
    if "\x00" in request.path_info:
        return "path"
    if request.META.get("QUERY_STRING") and _has_nul(request.GET.lists()):
        return "query string"
    if any("\x00" in k or "\x00" in v for k, v in request.COOKIES.items()):
        return "cookies"
    if (
        request.method == "POST"
        and request.content_type in _FORM_TYPES
        and _has_nul(request.POST.lists())
    ):
        return "form data"
    return None


class RefuseNulMiddleware:
    """400 for a non-API request with a NUL character anywhere the database could meet it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path_info.startswith(API_PREFIXES):
            where = nul_location(request)
            if where is not None:
                return HttpResponseBadRequest(
                    f"Bad request: the {where} holds a NUL character (%00), "
                    "which no field of this site accepts.\n",
                    content_type="text/plain; charset=utf-8",
                )
        return self.get_response(request)
