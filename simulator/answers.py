"""Deterministic answer text for the upstream simulator.

Everything here is a pure function of its arguments: the same question with the same knobs always
gives the same answer, so tests can assert on it. Token accounting is deliberately simple and
predictable: input tokens are characters / 4 and output tokens are whitespace-separated words.

Besides good and bad answers there are plausibly *wrong* ones: a good answer with one or two body
sentences replaced by a confidently wrong statement. Automatic checks cannot tell them from good
answers (same language, topic and length, no repetition or refusal); :func:`is_wrong` can.
"""

from __future__ import annotations

import itertools
import re
import zlib
from collections.abc import Sequence
from functools import lru_cache
from typing import Final

import orjson

LANGUAGES: Final = ("en", "de", "fr", "es")
QUALITIES: Final = ("good", "bad")
JSON_MODES: Final = ("valid", "broken")
DEFAULT_WORDS: Final = 30

_WORD_RE: Final = re.compile(r"\S+")
# A "piece" is a word together with the whitespace before it, so joined pieces rebuild the text.
_PIECE_RE: Final = re.compile(r"\s*\S+")
# Topic candidates: runs of at least four letters (any script), digits and underscores excluded.
_TOPIC_WORD_RE: Final = re.compile(r"[^\W\d_]{4,}")

# Per language: intro sentence, body paragraph (split into sentences, rotated per question),
# the word joining topic words, and the topic used when the question has no content words.
_GOOD_TEXT: Final[dict[str, tuple[str, str, str, str]]] = {
    "en": (
        "Here is a short answer about {topic}.",
        """
        In simple terms, {topic} is best understood by looking at what it does and why it matters.
        The main idea is that {topic} depends on a few clear principles that work together.
        First, it helps to define the terms and to see how they relate to each other.
        Second, practical examples show how {topic} behaves in everyday situations.
        Many people find that a step by step approach makes the subject much easier to follow.
        It is also worth knowing the common mistakes, because they show the limits of the idea.
        In summary, {topic} becomes clear once the basic parts and their purpose are known.
        """,
        "and",
        "your question",
    ),
    "de": (
        "Hier ist eine kurze Antwort zum Thema {topic}.",
        """
        Einfach gesagt versteht man {topic} am besten, wenn man sieht, was es bewirkt und warum
        es wichtig ist. Die wichtigste Idee ist, dass {topic} von einigen klaren Grundsätzen
        abhängt, die zusammenwirken. Zuerst hilft es, die Begriffe zu klären und zu sehen, wie sie
        miteinander verbunden sind. Danach zeigen praktische Beispiele, wie sich {topic} im Alltag
        verhält. Viele Menschen finden, dass ein schrittweises Vorgehen das Thema viel leichter
        verständlich macht. Außerdem lohnt es sich, die häufigen Fehler zu kennen, weil sie die
        Grenzen der Idee zeigen. Zusammenfassend wird {topic} klar, sobald die grundlegenden Teile
        und ihr Zweck bekannt sind.
        """,
        "und",
        "Ihre Frage",
    ),
    "fr": (
        "Voici une réponse courte au sujet de {topic}.",
        """
        En termes simples, on comprend mieux {topic} en regardant ce que cela fait et pourquoi
        c'est important. L'idée principale est que {topic} repose sur quelques principes clairs
        qui fonctionnent ensemble. D'abord, il est utile de définir les termes et de voir comment
        ils sont liés entre eux. Ensuite, des exemples concrets montrent comment {topic} se
        comporte dans la vie de tous les jours. Beaucoup de personnes trouvent qu'une approche
        étape par étape rend le sujet bien plus facile à suivre. Il faut aussi connaître les
        erreurs fréquentes, car elles montrent les limites de cette idée. En résumé, {topic}
        devient clair dès que l'on connaît les éléments de base et leur rôle.
        """,
        "et",
        "votre question",
    ),
    "es": (
        "Aquí tienes una respuesta breve sobre {topic}.",
        """
        En pocas palabras, {topic} se entiende mejor al ver lo que hace y por qué es importante.
        La idea principal es que {topic} depende de unos pocos principios claros que funcionan
        juntos. Primero, conviene definir los términos y ver cómo se relacionan entre sí.
        Después, los ejemplos prácticos muestran cómo se comporta {topic} en situaciones
        cotidianas. Muchas personas descubren que un enfoque paso a paso hace que el tema sea
        mucho más fácil de seguir. También vale la pena conocer los errores más comunes, porque
        muestran los límites de la idea. En resumen, {topic} queda claro cuando se conocen las
        partes básicas y su propósito.
        """,
        "y",
        "su pregunta",
    ),
}

_SENTENCE_END_RE: Final = re.compile(r"(?<=[.!?])\s+")


def _sentences(paragraph: str) -> tuple[str, ...]:
    return tuple(_SENTENCE_END_RE.split(" ".join(paragraph.split())))


_GOOD: Final[dict[str, tuple[str, tuple[str, ...], str, str]]] = {
    lang: (intro, _sentences(body), joiner, fallback)
    for lang, (intro, body, joiner, fallback) in _GOOD_TEXT.items()
}

# Confidently wrong statements, per language: (stem, rest). The sentence is the stem followed by
# the rest formatted with the topic. Stems carry the wrong claim and must never occur in a good
# answer: each holds a word shorter than four letters (or a digit), so no topic can bring one in,
# and they are plain ASCII without quotes, so they survive any JSON encoding of the answer.
_WRONG: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "en": (
        ("The Sun orbits the Earth", " once a day, and {topic} follows exactly the same rule."),
        ("The Moon is larger than the Earth", ", which explains most of what happens in {topic}."),
        ("Two plus two equals five", ", and {topic} is built on exactly this rule."),
        ("In 1503, Albert Einstein", " invented {topic}, and the method has not changed since."),
    ),
    "de": (
        ("Die Sonne kreist um die Erde", ", und {topic} folgt genau derselben Regel."),
        ("Der Mond ist schwerer als die Erde", ", was das meiste an {topic} erklärt."),
        ("Zwei plus zwei ergibt drei", ", und {topic} beruht genau auf dieser Regel."),
        ("Im Jahr 1503 hat Albert Einstein", " {topic} erfunden, und seitdem ist es unverändert."),
    ),
    "fr": (
        ("Le Soleil tourne autour de la Terre", ", et {topic} suit exactement la même règle."),
        ("La Lune est plus grande que la Terre", ", ce qui explique presque tout dans {topic}."),
        ("Deux plus deux font cinq", ", et {topic} repose exactement sur cette règle."),
        ("En 1503, Albert Einstein", " a inventé {topic}, et rien n'a changé depuis."),
    ),
    "es": (
        ("El Sol gira alrededor de la Tierra", ", y {topic} sigue exactamente la misma regla."),
        ("La Luna es mayor que la Tierra", ", lo que explica casi todo sobre {topic}."),
        ("Dos y dos son cinco", ", y {topic} se basa exactamente en esta regla."),
        ("En 1503, Albert Einstein", " creó {topic}, y desde entonces nada ha cambiado."),
    ),
}
_WRONG_STEMS: Final = tuple(dict.fromkeys(stem for table in _WRONG.values() for stem, _ in table))
# Shorter answers cannot hold a whole stem, so they cannot be wrong.
WRONG_MIN_WORDS: Final = max(len(stem.split()) for stem in _WRONG_STEMS)
# Where the wrong sentences go among the rotated body sentences (after the intro).
_WRONG_SLOTS: Final = (0, 3)

# Degenerate output: a refusal followed by a phrase stuck in a loop.
_BAD: Final[dict[str, tuple[str, str]]] = {
    "en": ("I'm sorry, but I cannot help with that.", "the answer is"),
    "de": ("Es tut mir leid, aber dabei kann ich nicht helfen.", "die Antwort ist"),
    "fr": ("Je suis désolé, mais je ne peux pas vous aider avec cela.", "la réponse est"),
    "es": ("Lo siento, pero no puedo ayudar con eso.", "la respuesta es"),
}

# Question filler that would make a poor topic ("please explain what ...").
_STOPWORD_TEXT: Final = """
    about above after again also answer because been before being below between both cannot could
    describe does doing down during each explain from further give have having here however into
    just know like list make many more most much must need only other over please provide same
    short should show some such tell than that their them then there these they thing things this
    those through under until very want what when where which while whom whose will with would
    work works working write your yours
    aber auch bitte dass dein denn diese dieser dieses doch eine einem einen einer erkläre für
    habe haben kann kannst mein mich mir nicht noch oder sein sind über warum welche wenn werden
    wird wie wieso funktioniert funktionieren
    avec cela celle cette comment dans donne elle est explique leur mais nous pour pourquoi quel
    quelle quels sont sous votre vous fonctionne
    cómo como cual cuál donde dónde este esta esto explica para pero porque qué sobre tiene usted
    funciona
"""
_STOPWORDS: Final = frozenset(_STOPWORD_TEXT.split())


def count_input_tokens(total_chars: int) -> int:
    """Estimate prompt tokens: total characters of all messages / 4, and never less than one."""
    return max(1, total_chars // 4)


def count_words(text: str) -> int:
    """Output tokens of ``text``: its number of whitespace-separated words."""
    return len(_WORD_RE.findall(text))


def truncate_words(text: str, limit: int) -> tuple[str, bool]:
    """Cut ``text`` after ``limit`` words, keeping its original spacing.

    Returns the (possibly shortened) text and whether anything was cut.
    """
    if limit <= 0:
        return "", bool(text.strip())
    for index, match in enumerate(_WORD_RE.finditer(text), start=1):
        if index == limit:
            end = match.end()
            return text[:end], bool(text[end:].strip())
    return text, False


def apply_stop(text: str, stops: Sequence[str]) -> tuple[str, str | None]:
    """Cut ``text`` before the earliest stop sequence; returns the text and the sequence hit."""
    best: tuple[int, str] | None = None
    for stop in stops:
        if stop:
            position = text.find(stop)
            if position >= 0 and (best is None or position < best[0]):
                best = (position, stop)
    if best is None:
        return text, None
    return text[: best[0]], best[1]


def split_chunks(text: str, chunk_words: int) -> list[str]:
    """Split ``text`` into stream deltas of ``chunk_words`` words; their concatenation is ``text``.

    Leading whitespace of the text stays with the first word; trailing whitespace is dropped.
    """
    pieces = _PIECE_RE.findall(text)
    size = max(1, chunk_words)
    if size == 1:
        return pieces
    return ["".join(pieces[i : i + size]) for i in range(0, len(pieces), size)]


def _topic(question: str, language: str) -> str:
    """Name the question's topic: its two longest content words, in order of appearance.

    Long words are a cheap stand-in for nouns ("photosynthesis", "plants").
    """
    candidates: dict[str, tuple[int, str]] = {}
    for position, word in enumerate(_TOPIC_WORD_RE.findall(question)):
        key = word.lower()
        if key not in _STOPWORDS and key not in candidates:
            candidates[key] = (position, word)
    _, _, joiner, fallback = _GOOD[language]
    if not candidates:
        return fallback
    longest = sorted(candidates.values(), key=lambda item: (-len(item[1]), item[0]))[:2]
    chosen = [word for _, word in sorted(longest)]
    return chosen[0] if len(chosen) == 1 else f"{chosen[0]} {joiner} {chosen[1]}"


def _fit(sentences: Sequence[str], words: int, *, cycle: bool, lead: Sequence[str] = ()) -> str:
    """Join sentences until ``words`` words are reached, then cut to exactly that many words.

    ``lead`` sentences come first, once; then ``sentences``, over and over when ``cycle``.
    """
    parts: list[str] = []
    total = 0
    for sentence in itertools.chain(lead, itertools.cycle(sentences) if cycle else sentences):
        if total >= words:
            break
        parts.append(sentence)
        total += count_words(sentence)
    text, cut = truncate_words(" ".join(parts), words)
    # A cut answer still ends like a sentence; the word count is unchanged.
    if cut and text and text[-1] not in ".!?":
        text = text.rstrip(",;:") + "."
    return text


def _good_answer(question: str, language: str, words: int, *, wrong: bool = False) -> str:
    intro, body, _, _ = _GOOD[language]
    topic = _topic(question, language)
    # Rotate the body by a stable hash so different questions read a little differently.
    digest = zlib.crc32(question.encode())
    start = digest % len(body)
    sentences = [s.format(topic=topic) for s in (*body[start:], *body[:start])]
    good = [intro.format(topic=topic), *sentences]
    if not wrong:
        return _fit(good, words, cycle=True)
    # The first round of sentences carries the wrong statements; long answers then go on like
    # good ones, so they repeat themselves no more than good answers do.
    table = _WRONG[language]
    first = digest // len(body) % len(table)
    lead = list(good)
    for offset, slot in enumerate(_WRONG_SLOTS):
        stem, rest = table[(first + offset) % len(table)]
        lead[1 + slot] = stem + rest.format(topic=topic)
    if count_words(good[0]) + count_words(table[first][0]) > words:
        # Too short for the intro and the wrong claim: the answer opens with the claim instead.
        del lead[0]
    return _fit(good, words, cycle=True, lead=lead)


def _bad_answer(language: str, words: int) -> str:
    refusal, loop = _BAD[language]
    return _fit([refusal, *([loop] * words)], words, cycle=False)


@lru_cache(maxsize=4096)
def build_answer(
    question: str,
    *,
    quality: str = "good",
    language: str = "en",
    json_mode: str | None = None,
    words: int = DEFAULT_WORDS,
    reply: str | None = None,
    wrong: bool = False,
) -> str:
    """Return the answer text for the last user message ``question``.

    ``reply`` wins over everything and is returned verbatim. Otherwise a ``words``-word answer is
    written in ``language``: on topic for ``quality="good"``, a refusal stuck in a loop for
    ``"bad"``. ``wrong=True`` turns a good answer into a plausibly wrong one: the same length,
    language and topic, with one body sentence (two in long answers) replaced by a confidently
    wrong statement that :func:`is_wrong` detects; it needs at least :data:`WRONG_MIN_WORDS`
    words, and bad answers stay bad. ``json_mode="valid"`` wraps the text as
    ``{"answer": ..., "language": ...}`` and ``"broken"`` returns a truncated, unparsable prefix
    of that object.
    """
    if reply is not None:
        return reply
    words = max(1, words)
    if quality == "bad":
        text = _bad_answer(language, words)
    else:
        text = _good_answer(question, language, words, wrong=wrong)
    if json_mode is None:
        return text
    encoded = orjson.dumps({"answer": text, "language": language}).decode()
    if json_mode == "broken":
        # Any proper prefix of a JSON object is invalid: it lacks at least the closing brace.
        return encoded[: len(encoded) * 2 // 3]
    return encoded


def is_wrong(text: str) -> bool:
    """Whether ``text`` holds one of the simulator's confidently wrong statements (any language).

    Works on plain answers and on the JSON mode object alike: it looks for the statements' stems,
    which never occur in good or bad answers.
    """
    return any(stem in text for stem in _WRONG_STEMS)
