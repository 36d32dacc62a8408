"""The llm-gateway Django project: the top and the bottom of the house of apps
(docs/adr/0017-layers.md). At the top, the ASGI entry point, the process lifecycle and the URLs;
at the bottom, the base every app builds on (errors, body rules, outbound requests, shared state
and its keys, versions, hooks); beside them, the settings and the Celery app."""

from .celery import app as celery_app

__all__ = ["celery_app"]
