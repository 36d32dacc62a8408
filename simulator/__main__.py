"""Command line entry point: ``python -m simulator [options]``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .knobs import KNOB_NAMES, KnobError, parse_model_spec
from .server import run


def build_parser() -> argparse.ArgumentParser:
    """The options shared by this CLI and the ``simulate_upstream`` management command."""
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="Serve fake OpenAI, Ollama, Anthropic and Gemini endpoints locally.",
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--host``, ``--port``, ``--model`` and ``--require-key`` to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=9100, help="port to bind (9100)")
    parser.add_argument(
        "--model",
        dest="models",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME[:KNOB=VALUE,...]",
        help=(
            f"configure a model; repeatable. Knobs: {', '.join(KNOB_NAMES)}. wrong_rate (share "
            "of plausibly wrong good answers) is a rate (0.1) or rates per topic, first topic "
            "in the question wins, * otherwise: python:0.5/summarize:0.02/*:0.1. "
            "ratelimit_requests / ratelimit_tokens give the model a rate limit (refilled over "
            "ratelimit_window_s, 60; ratelimit_style openai or cerebras) that its OpenAI and "
            "Anthropic answers report in rate-limit headers, answering 429 once it is spent. "
            "usage=false leaves token usage out of the answers"
        ),
    )
    parser.add_argument(
        "--require-key", default=None, metavar="KEY", help="reject requests without this API key"
    )


def models_from_specs(specs: Sequence[str]) -> dict[str, dict[str, object]]:
    """Turn ``--model`` values into the ``models`` mapping taken by :func:`run`."""
    models: dict[str, dict[str, object]] = {}
    for spec in specs:
        name, knobs = parse_model_spec(spec)
        models[name] = knobs
    return models


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and serve until interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        models = models_from_specs(args.models)
    except KnobError as exc:
        parser.error(str(exc))
    try:
        run(args.host, args.port, models, args.require_key)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
