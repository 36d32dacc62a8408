"""A local stand-in for LLM providers on their real wire protocols, for tests, the demo and the
benchmarks, so that nothing reaches the internet. One process speaks four dialects side by side:

* OpenAI     ``POST /v1/chat/completions``, ``GET /v1/models``
* Ollama     ``POST /api/chat``, ``GET /api/tags``, ``GET /api/version``, ``GET /``
* Anthropic  ``POST /v1/messages`` (``GET /v1/models`` when ``anthropic-version`` is sent)
* Gemini     ``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent``
  (SSE with ``?alt=sse``, otherwise a streamed JSON array), ``GET /v1beta/models``

Behaviour is steered by *knobs* (latency, errors, broken streams, answer style, a share of
plausibly wrong answers, rate limits reported in the providers' headers...), set per model at start,
through the control API under ``/_sim/``, or per request with a ``[[sim key=value]]`` directive
inside any message. An outage (``PUT /_sim/outage``) makes every provider endpoint of some or all
protocols answer an error, model lists included, as a provider that is down does. Answers are
deterministic, except that ``wrong_rate`` draws per request whether a good answer is the wrong
variant (``answers.is_wrong`` tells).

It is a test and benchmark tool, not part of the gateway's apps, and never imports Django: it runs
standalone with ``python -m simulator``. The modules follow its parts:

* ``knobs`` (knobs and their text forms), ``state`` (one simulator's configs and counters),
  ``ratelimits`` (budgets and reset formats), ``answers`` (the answer text);
* ``dialect`` (what the wire protocols share) and one module per protocol: ``openai_compatible``,
  ``ollama``, ``anthropic``, ``gemini``; ``chat`` (the chat request path they all take);
* ``control`` (``/_sim/``), ``server`` (the app and how it is served), ``__main__`` (the CLI).
"""

from .knobs import KnobError, Knobs, parse_knobs, parse_model_spec, wrong_rate_for
from .server import build_app, run, start_in_background
from .state import SIMULATOR, Simulator

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
    "wrong_rate_for",
]
