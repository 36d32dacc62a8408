"""Validators that look for patterns: refusals and hedging, degenerate repetition, admin regexes."""

from __future__ import annotations

import operator
import re
import zlib
from collections import Counter
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, ClassVar, Final

from scoring.validators.base import AnswerContext, ValidatorResult
from scoring.validators.params import BuiltinValidator, warn_once
from scoring.validators.text import answer_text, count_words, normalize_quotes, tokens


def _any(*patterns: str) -> re.Pattern[str]:
    # Lower-case patterns matched against lower-cased text: IGNORECASE makes them 3 times slower.
    return re.compile("|".join(f"(?:{pattern})" for pattern in patterns))


# Refusals in English, German, French and Spanish: "I can't" (or its siblings) followed within
# two words by a verb of helping, or an apology ending on a bare "I can't." Matched in the
# opening of the answer only. "I can't reproduce the bug" or "Leider kann ich nicht garantieren"
# are limitations, not refusals, and do not match.
_CANNOT_EN: Final = (
    r"i(?: can(?:'t|not| not)| won't| will not| am unable|'m unable| am not able|'m not able)"
)
_HELP_EN: Final = (
    r"(?:help(?! but)|assist|provide|comply|fulfil|fulfill|answer|complete|create|generate|write"
    r"|support|engage|share|give|continue|participate|produce|offer|do (?:that|this))"
)
_HELP_DE: Final = (
    r"(?:helfen|behilflich|weiterhelfen|unterstützen|beantworten|erfüllen|nachkommen|erstellen"
    r"|schreiben|bereitstellen|liefern)"
)
_HELP_FR: Final = (
    r"(?:t'|m')?(?:aider|répondre|fournir|assister|satisfaire|traiter|donner|faire (?:cela|ça))"
)
_HELP_ES: Final = r"(?:ayudar|asistir|proporcionar|responder|cumplir|ofrecer|dar|hacer eso|hacerlo)"
_REFUSAL_RE: Final = _any(
    # English
    rf"\b{_CANNOT_EN} (?:\w+ ){{0,2}}?{_HELP_EN}\b",
    rf"\b(?:sorry|afraid|unfortunately)\b[^.!?\n]{{0,40}}?\b{_CANNOT_EN}(?: (?:do )?(?:that|this|so))?\s*[.!]",
    r"\bi (?:must|have to|need to|will have to|'ll have to) (?:respectfully |politely )?(?:decline|refuse)\b",
    r"\bi(?:'m| am) not (?:allowed|permitted) to\b",
    r"\b(?:this|that|your) request (?:violates|goes against|is against)\b",
    r"\b(?:that's|that is|this is) not something i can (?:help|assist|do)\b",
    # German
    rf"\b(?:ich kann|kann ich|ich darf|darf ich|ich werde|werde ich)\b(?: \w+){{0,4}}? nicht (?:\w+ )?{_HELP_DE}",
    r"\bist (?:es )?mir (?:leider )?nicht möglich\b",
    r"\bich muss (?:\w+ ){0,2}?ablehnen\b",
    r"\b(?:tut mir leid|leider|entschuldigung)\b[^.!?\n]{0,40}?\b(?:kann ich|ich kann)(?: das| dies)? nicht\s*[.!]",
    # French
    rf"\bje ne (?:peux|pourrai|vais) pas (?:\w+ ){{0,2}}?{_HELP_FR}",
    rf"\bje ne suis pas en mesure de (?:\w+ ){{0,2}}?{_HELP_FR}",
    r"\bje dois (?:\w+ )?refuser\b",
    r"\b(?:désolée?|malheureusement)\b[^.!?\n]{0,40}?\bje ne (?:peux|pourrai) pas\s*[.!]",
    # Spanish
    rf"\bno (?:puedo|podré|me es posible) (?:\w+ ){{0,2}}?{_HELP_ES}",
    r"\bdebo (?:rechazar|negarme)\b",
    r"\b(?:lo siento|lamentablemente|desafortunadamente)\b[^.!?\n]{0,40}?\bno puedo\s*[.!]",
)
# "As an AI language model, ..." and its siblings.
_DISCLAIMER_RE: Final = _any(
    r"\bas an? (?:ai|artificial intelligence)(?: (?:language )?model| assistant| chatbot)?\b",
    r"\bas a (?:large )?language model\b",
    r"\bals (?:eine? )?(?:ki|künstliche intelligenz|sprachmodell|ki-sprachmodell|ki-assistent)\b",
    r"\ben tant qu(?:e |')(?:ia|intelligence artificielle|modèle de langage|assistant)\b",
    r"\bcomo (?:una? )?(?:ia|inteligencia artificial|modelo de lenguaje)\b",
)
# Doubts about the answer itself; each counts two points of hedging.
_STRONG_HEDGE_RE: Final = _any(
    r"\bi(?:'m| am) not (?:entirely |completely |totally |quite |100% )?(?:sure|certain)\b",
    r"\bi (?:don't|do not) (?:really )?know\b",
    r"\bi (?:might|may|could) be (?:wrong|mistaken)\b",
    r"\bi can(?:'t|not) be (?:sure|certain)\b",
    r"\bi(?:'m| am) not an expert\b",
    r"\bconsult (?:a|an|your) (?:professional|expert|doctor|lawyer|specialist)\b",
    r"\bit(?:'s| is) (?:hard|difficult|impossible) to (?:say|tell)\b",
    r"\b(?:as of|based on) my (?:last|knowledge) (?:update|cutoff|training)\b",
    r"\bich bin mir (?:nicht |da nicht |leider nicht )(?:ganz |wirklich )?sicher\b",
    r"\bich weiß (?:es )?nicht\b",
    r"\bich könnte mich irren\b",
    r"\bje ne suis pas (?:tout à fait |vraiment |entièrement )?(?:sûre?|certaine?)\b",
    r"\bje ne sais pas\b",
    r"\bje (?:peux|pourrais) me tromper\b",
    r"\bno estoy (?:del todo |completamente )?segur[oa]\b",
    r"\bno (?:lo )?sé\b",
    r"\bpodría estar equivocad[oa]\b",
)
# Softeners; each counts one point.
_WEAK_HEDGE_RE: Final = _any(
    r"\b(?:perhaps|possibly|maybe|probably|presumably|might|arguably)\b",
    r"\bi (?:think|believe|guess|suppose)\b",
    r"\bit (?:seems|appears)\b",
    r"\b(?:vielleicht|möglicherweise|eventuell|wahrscheinlich|vermutlich|anscheinend)\b",
    r"\bich (?:glaube|denke|vermute)\b",
    r"\b(?:peut-être|probablement|possiblement|sans doute)\b",
    r"\b(?:il semble|je pense|je crois)\b",
    r"\b(?:quizás?|tal vez|probablemente|posiblemente|a lo mejor)\b",
    r"\b(?:creo que|parece que)\b",
)
_SENTENCE_END_RE: Final = re.compile(r"[.!?\n]")


def _snippet(text: str, match: re.Match[str]) -> str:
    return " ".join(text[match.start() : match.end()].split())[:80]


class RefusalValidator(BuiltinValidator):
    """A refusal is a decisive failure; a refusal followed by an answer, an "as an AI" disclaimer
    and heavy hedging are warnings; a little hedging is a blemish."""

    name: ClassVar[str] = "refusal"
    description: ClassVar[str] = (
        'The model did not refuse ("I\'m sorry, but I can\'t…", en/de/fr/es), hide behind "as an '
        'AI language model", or hedge heavily.'
    )
    defaults: ClassVar[Mapping[str, Any]] = {
        # Refusals and disclaimers are looked for in this many opening characters...
        "scan_chars": 400,
        # ...and hedging in this many.
        "hedge_chars": 2000,
        # At least this many words after the refusing sentence make it a partial refusal.
        "answer_words": 40,
        # Hedging points (a doubt about the answer 2, a softener 1) for "heavy hedging"...
        "hedge_points": 4,
        # ...and per 100 words.
        "hedge_density": 3.0,
        "check_hedging": True,
    }

    def __call__(self, context: AnswerContext, params: Mapping[str, Any]) -> ValidatorResult | None:
        text = normalize_quotes(answer_text(context.output)).lower()
        if not text:
            return None
        opening = text[: self.param_int(params, "scan_chars") or 400]
        refusal = _REFUSAL_RE.search(opening)
        if refusal is not None:
            end = _SENTENCE_END_RE.search(text, refusal.end())
            after = count_words(text[end.end() :]) if end else 0
            if after < (self.param_int(params, "answer_words") or 0):
                return self.result(1, f"refusal: “{_snippet(text, refusal)}”", decisive=True)
            return self.result(4.5, f"refuses in part, then answers: “{_snippet(text, refusal)}”")
        findings: list[tuple[float, str]] = []
        disclaimer = _DISCLAIMER_RE.search(opening)
        if disclaimer is not None:
            findings.append((6.0, f"AI disclaimer: “{_snippet(text, disclaimer)}”"))
        if self.param_bool(params, "check_hedging"):
            hedge = self._hedging(text[: self.param_int(params, "hedge_chars") or 2000], params)
            if hedge is not None:
                findings.append(hedge)
        if not findings:
            return self.result(10, "no refusal or hedging")
        score = min(score for score, _ in findings)
        return self.result(score, "; ".join(reason for _, reason in findings))

    def _hedging(self, text: str, params: Mapping[str, Any]) -> tuple[float, str] | None:
        strong = _STRONG_HEDGE_RE.findall(text)
        weak = _WEAK_HEDGE_RE.findall(text)
        points = 2 * len(strong) + len(weak)
        if not points:
            return None
        density = 100 * points / max(1, count_words(text))
        min_points = self.param_float(params, "hedge_points") or 4
        min_density = self.param_float(params, "hedge_density") or 0
        if points >= min_points and density >= min_density:
            return 5.0, f"heavy hedging ({len(strong)} doubts, {len(weak)} softeners)"
        if strong:
            return 8.0, f"some hedging ({len(strong)} doubts, {len(weak)} softeners)"
        return None


_RULE_CHARS: Final = "-=_*#~.─━"


@lru_cache(maxsize=16)
def _char_run_re(length: int) -> re.Pattern[str]:
    # Rules drawn with - = _ * # ~ . are legitimate up to four times as long.
    rule = re.escape(_RULE_CHARS)
    return re.compile(rf"([^\s{rule}])\1{{{length - 1},}}|([{rule}])\2{{{4 * length - 1},}}")


def _char_run(text: str, length: int) -> str | None:
    """The first run of one character ``length`` times (rules four times), if any. Only words
    that long can hold one, and a split is cheaper than a regex over the whole text."""
    pattern = _char_run_re(length)
    for word in text.split():
        if len(word) >= length and (match := pattern.search(word)) is not None:
            return match.group(0)
    return None


@lru_cache(maxsize=64)
def _same_run_re(length: int) -> re.Pattern[bytes]:
    return re.compile(b"\x01{%d,}" % length)


def _longest_loop(words: list[str], min_repeats: int, max_unit: int = 6) -> tuple[int, int, int]:
    """The longest back-to-back repetition (at least ``min_repeats`` times) of a unit of
    1..max_unit words holding a letter: (repeats, unit length, index of its first word);
    (1, 0, 0) when there is none."""
    best = (1, 0, 0)
    for unit in range(1, max_unit + 1):
        if len(words) < min_repeats * unit:
            break
        # same[i] is 1 where the word one unit further on is the same word; a unit repeated
        # n times in a row is a run of (n - 1) * unit ones.
        same = bytes(map(operator.eq, words, words[unit:]))
        for run in _same_run_re(unit * (min_repeats - 1)).finditer(same):
            repeats = (run.end() - run.start()) // unit + 1
            start = run.start()
            if repeats > best[0] and any(
                char.isalpha() for word in words[start : start + unit] for char in word
            ):
                best = (repeats, unit, start)
    return best


class RepetitionValidator(BuiltinValidator):
    """Degenerate output (a phrase stuck in a loop, the text repeating itself, a character run) is
    a decisive failure; noticeable repetition is a warning."""

    name: ClassVar[str] = "repetition"
    description: ClassVar[str] = (
        "The answer is not degenerate: no phrase loops, repeated lines or n-grams, very high "
        "compression ratio or long runs of one character."
    )
    defaults: ClassVar[Mapping[str, Any]] = {
        # The n-gram and line shares are judged from this many words on.
        "min_words": 30,
        # Share of repeated word trigrams (or lines) that is degenerate...
        "max_repeated_share": 0.65,
        # ...and that is worth a warning (prose repeats about 1-3 % of its trigrams).
        "mild_repeated_share": 0.25,
        # A unit of 1-6 words back to back this many times is a loop.
        "loop_repeats": 4,
        # One character this many times in a row (rules of - = _ * # ~ . four times as many).
        "max_char_run": 40,
        # zlib compression ratio (from 400 characters on) that only degenerate text reaches.
        "max_compression_ratio": 8.0,
    }

    def __call__(self, context: AnswerContext, params: Mapping[str, Any]) -> ValidatorResult | None:
        text = answer_text(context.output)
        if not text:
            return None
        max_share = self.param_float(params, "max_repeated_share") or 0.65
        mild_share = self.param_float(params, "mild_repeated_share") or 0.25
        findings: list[tuple[float, str]] = []

        run = _char_run(text, max(2, self.param_int(params, "max_char_run") or 40))
        if run is not None:
            findings.append((1.0, f"{run[0]!r} {len(run)} times in a row"))

        words = tokens(text)
        loop_repeats = max(2, self.param_int(params, "loop_repeats") or 4)
        trigrams = Counter(zip(words, words[1:], words[2:], strict=False))
        # A unit said n times in a row repeats a trigram at least n - 2 times: no such trigram,
        # no loop, and the scan for one is skipped.
        if trigrams and max(trigrams.values()) >= max(2, loop_repeats - 2):
            repeats, unit, start = _longest_loop(words, loop_repeats)
            if repeats >= loop_repeats:
                phrase = " ".join(words[start : start + unit])
                degenerate = repeats * unit >= 0.25 * len(words) or repeats >= 2 * loop_repeats
                findings.append(
                    (1.0 if degenerate else 5.5, f"“{phrase}” {repeats} times in a row")
                )

        if len(words) >= (self.param_int(params, "min_words") or 0) and len(words) >= 3:
            total = len(words) - 2
            share = 1 - len(trigrams) / total
            if share >= mild_share:
                score = 1.0 if share >= max_share else 5.5
                findings.append((score, f"{share:.0%} of the word trigrams are repeats"))
            lines = [line.strip().lower() for line in text.splitlines() if len(line.strip()) >= 12]
            if len(lines) >= 6:
                line_share = 1 - len(set(lines)) / len(lines)
                if line_share >= mild_share:
                    score = 1.0 if line_share >= max_share else 5.5
                    findings.append((score, f"{line_share:.0%} of the lines are repeats"))

        if len(text) >= 400:
            raw = text.encode()
            ratio = len(raw) / len(zlib.compress(raw, 1))
            if ratio >= (self.param_float(params, "max_compression_ratio") or 8.0):
                findings.append((1.0, f"compresses {ratio:.1f}:1"))

        if not findings:
            return self.result(10, "no repetition")
        score = min(score for score, _ in findings)
        reasons = "; ".join(reason for _, reason in findings)
        if score < 4:
            return self.result(score, f"degenerate: {reasons}", decisive=True)
        return self.result(score, f"repetitive: {reasons}")


@lru_cache(maxsize=512)
def compile_pattern(pattern: str, ignore_case: bool) -> re.Pattern[str] | str:
    """The compiled pattern, or why it does not compile (compiled once per pattern)."""
    try:
        return re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as error:
        return f"invalid pattern {pattern!r}: {error}"


class RegexValidator(BuiltinValidator):
    """A failed must-match or a hit of a must-not-match is a decisive failure. A pattern that
    does not compile is a configuration problem: logged, shown, and skipped."""

    name: ClassVar[str] = "regex"
    description: ClassVar[str] = (
        "Admin-defined checks: the answer matches every must_match pattern and no must_not_match "
        "pattern (Python regular expressions)."
    )
    defaults: ClassVar[Mapping[str, Any]] = {
        "must_match": [],
        "must_not_match": [],
        "ignore_case": False,
    }

    def __call__(self, context: AnswerContext, params: Mapping[str, Any]) -> ValidatorResult | None:
        must = self.param_strings(params, "must_match")
        must_not = self.param_strings(params, "must_not_match")
        if not must and not must_not:
            return None
        ignore_case = self.param_bool(params, "ignore_case")
        problems: list[str] = []
        failures: list[str] = []
        checked = 0
        for key, patterns, wanted in (
            ("must_match", must, True),
            ("must_not_match", must_not, False),
        ):
            for pattern in patterns:
                compiled = compile_pattern(pattern, ignore_case)
                if isinstance(compiled, str):
                    warn_once(self.name, key, compiled)
                    problems.append(compiled)
                    continue
                checked += 1
                if (compiled.search(context.output) is not None) != wanted:
                    verb = "does not match" if wanted else "matches"
                    failures.append(f"{verb} {pattern!r}")
        config = f" (config problem: {'; '.join(problems)})" if problems else ""
        if failures:
            return self.result(2, "; ".join(failures) + config, decisive=True)
        if not checked:
            return self.not_counted("; ".join(problems))
        return self.result(10, f"{checked} pattern check{'s' if checked > 1 else ''} pass{config}")
