"""A local stand-in for LLM providers (OpenAI, Ollama, Anthropic, Gemini) on their wire protocols.

Used by tests, the demo and benchmarks so that nothing reaches the internet. This package must
not import Django: it runs standalone with ``python -m providers.simulator``.
"""

from .server import (
    SIMULATOR,
    KnobError,
    Knobs,
    Simulator,
    build_app,
    parse_knobs,
    parse_model_spec,
    run,
    start_in_background,
)

__all__ = [
    "SIMULATOR",
    "KnobError",
    "Knobs",
    "Simulator",
    "build_app",
    "parse_knobs",
    "parse_model_spec",
    "run",
    "start_in_background",
]
