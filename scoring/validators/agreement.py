"""Does another model agree? A cheap similarity between the answer and a second opinion.

Token sets, not a sequence alignment: difflib's ratio is quadratic in the worst case and the
scorer runs on the request path. Two independent good answers to one question share most of
their content words (names, numbers, terms) while wording differs, which is what the blend of
Jaccard similarity (how much of everything is shared) and overlap (how much of the shorter answer
the longer one contains) measures. JSON answers are compared as parsed values: equal values agree
whatever the formatting; otherwise their key paths and their values are compared.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final

from scoring.validators.base import AnswerContext, ValidatorResult
from scoring.validators.params import BuiltinValidator
from scoring.validators.text import looks_like_json, parse_json, tokens

# Frequent function words of three letters and more (en, de, fr, es): shared by any two texts.
_STOPWORD_TEXT: Final = """
    the and for are was were been has have had that this these those with from into than then
    there their they them what which who whom how why when where also but not can could would
    should will its our your you his her she him all any some such very just more most other
    der die das den dem des und ist sind war ein eine einen einem einer nicht mit von auf für
    wie als auch noch aber oder wenn dass sich sie wir ihr
    les des une est sont pas que qui pour dans par sur avec plus mais ces son ses aux
    los las una uno por para con del que como pero sus son más este esta
"""
_STOPWORDS: Final = frozenset(_STOPWORD_TEXT.split())


def _content_tokens(text: str) -> set[str]:
    """Words of three letters and more that are not function words, and every number."""
    return {
        token
        for token in tokens(text)
        if token.isdigit() or (len(token) >= 3 and token not in _STOPWORDS)
    }


def _set_similarity(left: set[str], right: set[str]) -> float:
    """The mean of the Jaccard similarity and the overlap coefficient of two sets."""
    if not left or not right:
        return 1.0 if left == right else 0.0
    shared = len(left & right)
    return (shared / len(left | right) + shared / min(len(left), len(right))) / 2


def token_similarity(a: str, b: str) -> float:
    """0..1 for two texts by their content tokens. Numbers are the facts most often at stake
    ("42" or "43"): when both texts state some, their agreement counts as much as the words'."""
    left, right = _content_tokens(a), _content_tokens(b)
    similarity = _set_similarity(left, right)
    numbers_left = {token for token in left if token.isdigit()}
    numbers_right = {token for token in right if token.isdigit()}
    if numbers_left and numbers_right:
        similarity = (similarity + _set_similarity(numbers_left, numbers_right)) / 2
    return similarity


def _leaves(value: Any, path: str = "$") -> list[tuple[str, Any]]:
    """(path, scalar) pairs of a parsed JSON document."""
    if isinstance(value, dict):
        return [pair for key, item in value.items() for pair in _leaves(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [pair for item in value for pair in _leaves(item, f"{path}[]")]
    return [(path, value)]


def json_similarity(a: Any, b: Any) -> float:
    """0..1 for two parsed JSON documents: 1 when equal, else the share of key paths they have in
    common times the similarity of their values (same keys with other values do not agree)."""
    if a == b:
        return 1.0
    left, right = _leaves(a), _leaves(b)
    paths_a, paths_b = {path for path, _ in left}, {path for path, _ in right}
    structure = len(paths_a & paths_b) / max(1, len(paths_a | paths_b))
    values = token_similarity(
        " ".join(str(value) for _, value in left), " ".join(str(value) for _, value in right)
    )
    return structure * values


class AgreementValidator(BuiltinValidator):
    """Disagreement lowers the confidence but is never decisive: the other model may be wrong."""

    name: ClassVar[str] = "agreement"
    description: ClassVar[str] = (
        "The answer agrees with a second model's answer to the same request, when one was fetched "
        "(token-set similarity; JSON compared as parsed values)."
    )
    defaults: ClassVar[Mapping[str, Any]] = {
        # The public model name asked for the second opinion. Read by the request pipeline, which
        # fetches it in parallel; without it there is no second opinion and nothing to compare.
        "model": "",
        # Similarity (0..1) from which the answers agree (score 10)...
        "agree_at": 0.5,
        # ...and up to which they disagree (score 2); linear in between.
        "disagree_at": 0.1,
    }
    DISAGREE_SCORE: ClassVar[float] = 2.0

    def __call__(self, context: AnswerContext, params: Mapping[str, Any]) -> ValidatorResult | None:
        other = context.second_opinion
        if other is None or not other.strip() or not context.output.strip():
            return None
        similarity: float | None = None
        if looks_like_json(context.output) and looks_like_json(other):
            mine, theirs = parse_json(context.output), parse_json(other)
            if mine.ok and theirs.ok:
                similarity = json_similarity(mine.value, theirs.value)
        if similarity is None:
            similarity = token_similarity(context.output, other)
        high = self.param_float(params, "agree_at") or 0.5
        low = min(high, self.param_float(params, "disagree_at") or 0.0)
        if similarity >= high:
            score = 10.0
        elif similarity <= low:
            score = self.DISAGREE_SCORE
        else:
            fraction = (similarity - low) / (high - low)
            score = self.DISAGREE_SCORE + fraction * (10.0 - self.DISAGREE_SCORE)
        verdict = "agrees with" if score >= 7 else "differs from"
        return self.result(score, f"{verdict} the second opinion (similarity {similarity:.2f})")
