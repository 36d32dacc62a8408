"""ASGI entry point: the lean handler for the API, Django for the rest, and the process lifespan
Django itself does not handle (gateway_project/lifecycle.py).

With the lifecycle it is the top of the house (docs/adr/0017-layers.md): Django is set up first,
then the modules that import the apps.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
django_application = get_asgi_application()

# Imported once Django is set up: the lifecycle imports the apps, the handler resolves their URLs.
from .api_asgi import ApiHandler, BodyGuard, is_api_path  # noqa: E402
from .lifecycle import lifespan  # noqa: E402

api_application = ApiHandler()
# The admin and the rest of the site, behind the API's body size and read-time limits.
site_application = BodyGuard(django_application)

Scope = dict[str, Any]
Receive = Any
Send = Any


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    elif is_api_path(scope):
        await api_application(scope, receive, send)
    else:
        await site_application(scope, receive, send)
