"""The app and server wiring: every route of the four wire protocols and of the control API on
one aiohttp application, started in a running loop (tests) or served until interrupted (CLI)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiohttp import web

from . import anthropic, control, gemini, ollama, openai_compatible
from .state import SIMULATOR, Simulator


async def _v1_models(request: web.Request) -> web.Response:
    """``GET /v1/models``: OpenAI's list, or Anthropic's when ``anthropic-version`` is sent."""
    if "anthropic-version" in request.headers:
        return await anthropic.list_models(request)
    return await openai_compatible.list_models(request)


def build_app(
    models: Mapping[str, Mapping[str, object]] | None = None, require_key: str | None = None
) -> web.Application:
    """Create the simulator application.

    ``models`` maps model names to knobs (typed values or strings, validated here);
    ``require_key`` makes every provider endpoint demand that API key.
    """
    # LLM prompts can be large; aiohttp's 1 MiB default would reject them.
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[SIMULATOR] = Simulator(models, require_key)
    app.router.add_post("/v1/chat/completions", openai_compatible.chat_completions)
    app.router.add_get("/v1/models", _v1_models)
    app.router.add_post("/api/chat", ollama.api_chat)
    app.router.add_get("/api/tags", ollama.tags)
    app.router.add_get("/api/version", ollama.version)
    app.router.add_get("/", ollama.root)
    app.router.add_post("/v1/messages", anthropic.create_message)
    for version in ("v1beta", "v1"):
        app.router.add_post(f"/{version}/models/{{target}}", gemini.generate)
    app.router.add_get("/v1beta/models", gemini.list_models)
    app.router.add_put("/_sim/models/{name:.+}", control.put_model)
    app.router.add_delete("/_sim/models/{name:.+}", control.delete_model)
    app.router.add_get("/_sim/models", control.list_models)
    app.router.add_put("/_sim/outage", control.put_outage)
    app.router.add_get("/_sim/outage", control.get_outage)
    app.router.add_delete("/_sim/outage", control.delete_outage)
    app.router.add_post("/_sim/reset", control.reset)
    app.router.add_get("/_sim/stats", control.stats)
    app.router.add_get("/_sim/health", control.health)
    return app


async def start_in_background(
    host: str = "127.0.0.1",
    port: int = 0,
    models: Mapping[str, Mapping[str, object]] | None = None,
    require_key: str | None = None,
) -> tuple[web.AppRunner, int]:
    """Start the simulator inside the running event loop; returns the runner and the bound port.

    ``port=0`` picks a free port. Stop it with ``await runner.cleanup()``. The :class:`Simulator`
    state is reachable as ``runner.app[SIMULATOR]``.
    """
    runner = web.AppRunner(build_app(models, require_key), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    return runner, int(bound)


def run(
    host: str = "127.0.0.1",
    port: int = 9100,
    models: Mapping[str, Mapping[str, object]] | None = None,
    require_key: str | None = None,
) -> None:
    """Serve until interrupted (the CLI and the management command end up here)."""
    loop: asyncio.AbstractEventLoop | None = None
    try:
        # Imported here: uvloop is optional (not on every platform), and only serving uses it.
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional
        pass
    else:
        loop = uvloop.new_event_loop()
    app = build_app(models, require_key)
    names = ", ".join(models or {}) or "any model"
    print(f"LLM upstream simulator on http://{host}:{port} ({names})", flush=True)
    web.run_app(
        app, host=host, port=port, access_log=None, print=None, shutdown_timeout=1.0, loop=loop
    )
