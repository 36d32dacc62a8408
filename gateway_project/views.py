"""The pages of the gateway's own site: ``/`` (what runs here) and ``/readme`` (the README).

The admin's "View site" link leads to ``/``; the API itself is served by the lean ASGI handler
(``api_asgi.py``), not by these views.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

README_API_ANCHOR = "the-api"


@dataclass(frozen=True)
class ReadmeBlock:
    """A heading (``level`` 1-3, with the anchor GitHub would give it) or a run of text."""

    text: str
    level: int = 0
    anchor: str = ""


def heading_anchor(title: str) -> str:
    """The anchor GitHub gives a heading: "The API" → "the-api"."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def readme_blocks(text: str) -> list[ReadmeBlock]:
    """The README as headings and the text between them; a "#" line inside a fenced code block
    is code, not a heading."""
    blocks: list[ReadmeBlock] = []
    lines: list[str] = []
    fenced = False

    def flush() -> None:
        if "".join(lines).strip():
            blocks.append(ReadmeBlock(text="\n".join(lines).strip("\n")))
        lines.clear()

    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        heading = None if fenced else re.match(r"(#{1,3}) (.+)", line)
        if heading is None:
            lines.append(line)
            continue
        flush()
        title = heading.group(2).strip()
        blocks.append(
            ReadmeBlock(text=title, level=len(heading.group(1)), anchor=heading_anchor(title))
        )
    flush()
    return blocks


@require_GET
def landing(request: HttpRequest) -> HttpResponse:
    """What runs here, with links to the admin, the health and metrics endpoints and the API."""
    readme_api = f"{reverse('readme')}#{README_API_ANCHOR}"
    return render(request, "landing.html", {"readme_api": readme_api})


@require_GET
def readme(request: HttpRequest) -> HttpResponse:
    """The README as plain text with its headings as anchors (the landing page links its API
    section); 404 where the deployment ships without it."""
    try:
        text = (Path(settings.BASE_DIR) / "README.md").read_text(encoding="utf-8")
    except OSError:
        raise Http404("This deployment has no README.") from None
    return render(request, "readme.html", {"blocks": readme_blocks(text)})
