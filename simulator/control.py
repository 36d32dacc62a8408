"""The control API under ``/_sim/``: models' knobs, the outage, reset, statistics and health.
Not a provider's API: it answers in plain JSON (``{"error": "..."}`` on a bad request)."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web

from .dialect import json_response
from .knobs import KNOB_NAMES, KnobError
from .state import simulator_of


def _public(config: Mapping[str, object]) -> dict[str, object]:
    """A model config for the control API: ``wrong_rate`` pairs shown as a JSON object."""
    rates = config.get("wrong_rate")
    if not isinstance(rates, tuple):
        return dict(config)
    return {**config, "wrong_rate": dict(rates)}


async def put_model(request: web.Request) -> web.Response:
    """``PUT /_sim/models/{name}``: replace a model's knobs (a JSON object)."""
    name = request.match_info["name"]
    try:
        raw = orjson.loads(await request.read() or b"{}")
        if not isinstance(raw, dict):
            raise KnobError("the body must be a JSON object of knobs")
        config = simulator_of(request).configure(name, raw)
    except (orjson.JSONDecodeError, KnobError) as exc:
        return json_response({"error": str(exc)}, status=400)
    return json_response({"model": name, "knobs": _public(config)})


async def delete_model(request: web.Request) -> web.Response:
    """``DELETE /_sim/models/{name}``: forget a model's knobs."""
    name = request.match_info["name"]
    return json_response({"model": name, "deleted": simulator_of(request).unconfigure(name)})


async def list_models(request: web.Request) -> web.Response:
    """``GET /_sim/models``: every configured model's knobs, and the knobs there are."""
    configs = {name: _public(config) for name, config in simulator_of(request).configs.items()}
    return json_response({"models": configs, "knobs": list(KNOB_NAMES)})


async def put_outage(request: web.Request) -> web.Response:
    """``PUT /_sim/outage``: take providers down (``{status, protocols}``, both optional)."""
    try:
        raw = orjson.loads(await request.read() or b"{}")
        if not isinstance(raw, dict):
            raise KnobError("the body must be a JSON object: {status, protocols}")
        return json_response(simulator_of(request).set_outage(raw))
    except (orjson.JSONDecodeError, KnobError) as exc:
        return json_response({"error": str(exc)}, status=400)


async def get_outage(request: web.Request) -> web.Response:
    """``GET /_sim/outage``: the outage, if any."""
    return json_response(simulator_of(request).outage_info())


async def delete_outage(request: web.Request) -> web.Response:
    """``DELETE /_sim/outage``: end the outage."""
    sim = simulator_of(request)
    sim.outage = None
    return json_response(sim.outage_info())


async def reset(request: web.Request) -> web.Response:
    """``POST /_sim/reset``: back to the start-up configs, counters at zero."""
    simulator_of(request).reset()
    return json_response({"status": "ok"})


async def stats(request: web.Request) -> web.Response:
    """``GET /_sim/stats``: calls, wrong answers, 429s and tokens served per model."""
    return json_response(simulator_of(request).stats())


async def health(request: web.Request) -> web.Response:
    """``GET /_sim/health``: the simulator is up."""
    return json_response({"status": "ok"})
