"""The built-in validators, one at a time, on good and bad answers (docs/adr/0003)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from scoring.validators import VALIDATORS, AnswerContext, ValidatorResult, warm_up
from scoring.validators.language import detect_language
from scoring.validators.patterns import compile_pattern
from scoring.validators.structure import _compiled_schema
from scoring.validators.text import answer_text, code_blocks, parse_json

EN = (
    "Photosynthesis is the process by which green plants turn sunlight, water and carbon dioxide "
    "into sugar and oxygen. It takes place in the chloroplasts of the leaves."
)
DE = (
    "Die Photosynthese ist der Vorgang, bei dem grüne Pflanzen aus Sonnenlicht, Wasser und "
    "Kohlendioxid Zucker und Sauerstoff herstellen. Sie findet in den Chloroplasten der Blätter statt."
)
FR = (
    "La photosynthèse est le processus par lequel les plantes vertes transforment la lumière du "
    "soleil, l'eau et le dioxyde de carbone en sucre et en oxygène. Elle a lieu dans les "
    "chloroplastes des feuilles."
)
ES = (
    "La fotosíntesis es el proceso mediante el cual las plantas verdes convierten la luz del sol, "
    "el agua y el dióxido de carbono en azúcar y oxígeno. Ocurre en los cloroplastos de las hojas."
)
SENTENCES = {"en": EN, "de": DE, "fr": FR, "es": ES}

PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def context(output: str, **fields: Any) -> AnswerContext:
    fields.setdefault("task_type", "chat")
    fields.setdefault("prompt", "question")
    fields.setdefault("finish_reason", "stop")
    return AnswerContext(output=output, **fields)


def check(
    name: str, output: str, params: Mapping[str, Any] | None = None, **fields: Any
) -> ValidatorResult | None:
    return VALIDATORS[name](context(output, **fields), params or {})


def result_of(name: str, output: str, params: Mapping[str, Any] | None = None, **fields: Any):
    result = check(name, output, params, **fields)
    assert result is not None, f"{name} had nothing to say"
    return result


# completeness


def test_completeness_passes_a_finished_answer():
    """A non-empty answer that stopped normally scores 10."""
    result = result_of("completeness", EN)
    assert result.score == 10 and not result.decisive


@pytest.mark.parametrize("output", ["", "   \n\t "])
def test_completeness_empty_answer_scores_zero(output):
    """Empty or whitespace-only output scores 0, decisively."""
    result = result_of("completeness", output)
    assert result.score == 0 and result.decisive


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"finish_reason": "length"}, "token limit"),
        ({"stream_interrupted": True}, "stream broke off"),
        ({"finish_reason": "content_filter"}, "content filter"),
        ({"finish_reason": "error"}, "error"),
    ],
)
def test_completeness_cut_off_answers_are_decisive(fields, reason):
    """Truncation, a broken stream, the content filter and an upstream error score low, decisively."""
    result = result_of("completeness", EN, **fields)
    assert result.score < 4 and result.decisive
    assert reason in result.reason


def test_completeness_tool_call_without_text_is_not_applicable():
    """An empty text beside finish_reason=tool_calls is a tool call, not an empty answer."""
    assert check("completeness", "", finish_reason="tool_calls") is None


def test_completeness_min_chars_param():
    """Answers shorter than params min_chars count as empty."""
    assert result_of("completeness", "ok", {"min_chars": 5}).decisive
    assert result_of("completeness", "ok").score == 10


# language


@pytest.fixture(scope="module", autouse=True)
def _language_model() -> None:
    warm_up()


@pytest.mark.parametrize("language", ["en", "de", "fr", "es"])
def test_language_accepts_answers_in_the_requested_language(language):
    """Real sentences in en, de, fr and es pass when that language was requested."""
    result = result_of("language", SENTENCES[language], language=language)
    assert result.score == 10, result.reason


@pytest.mark.parametrize(("written", "requested"), [("en", "de"), ("fr", "es"), ("de", "en")])
def test_language_mismatch_is_decisive(written, requested):
    """An answer in another language than the requested one scores low, decisively."""
    result = result_of("language", SENTENCES[written], language=requested)
    assert result.score < 4 and result.decisive
    assert written in result.reason


def test_language_not_applicable_without_request_or_enough_text():
    """No requested language, or too few words to judge: the language check says nothing."""
    assert check("language", EN) is None
    assert check("language", "Ja, genau.", language="en") is None
    assert (
        check("language", "```python\nprint('hello world, how are you')\n```", language="de")
        is None
    )


def test_language_accepts_region_subtags_and_aliases():
    """ "de-DE", "pt_BR" and the Norwegian "nb" name the languages the model knows."""
    assert result_of("language", DE, language="de-DE").score == 10
    portuguese = "A fotossíntese é o processo pelo qual as plantas verdes transformam a luz do sol em açúcar e oxigênio."
    assert result_of("language", portuguese, language="pt_BR").score == 10
    norwegian = "Fotosyntese er prosessen der grønne planter bruker sollys, vann og karbondioksid til å lage sukker og oksygen."
    assert result_of("language", norwegian, language="nb").score >= 8


def test_language_unknown_code_is_not_counted():
    """A language code the model does not know is shown with weight 0, not held against the answer."""
    result = result_of("language", EN, language="xx")
    assert result.weight == 0 and "unknown language code" in result.reason


def test_language_judges_prose_not_code_or_json_keys():
    """German prose around English code, and JSON with German values, pass for "de"."""
    with_code = (
        DE
        + "\n\n```python\ndef convert_light_to_sugar(light, water):\n    return light + water\n```\n"
    )
    assert result_of("language", with_code, language="de").score == 10
    as_json = '{"answer": "' + DE + '", "source": "Lehrbuch der Biologie für die Oberstufe"}'
    assert result_of("language", as_json, language="de").score == 10


def test_language_catches_an_answer_drifting_into_another_language():
    """A long answer that starts in German and ends in English is not accepted as German."""
    drifting = " ".join([DE] * 3) + " " + " ".join([EN] * 3)
    result = result_of("language", drifting, language="de")
    assert result.score < 7


def test_detect_language_names_the_language():
    """The bundled fastText model identifies a plain sentence offline."""
    assert detect_language(FR)[0][0] == "fr"


# json

JSON_OBJECT = {"type": "json_object"}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON_SCHEMA}}


def test_json_valid_object_passes():
    """A parseable object answers a json_object request with 10."""
    result = result_of("json", '{"name": "Ada", "age": 36}', response_format=JSON_OBJECT)
    assert result.score == 10 and result.reason == "valid JSON"


def test_json_broken_is_decisive():
    """Output that does not parse when JSON was required scores low, decisively."""
    result = result_of("json", '{"name": "Ada", "age": ', response_format=JSON_OBJECT)
    assert result.score < 4 and result.decisive and "not valid JSON" in result.reason


def test_json_schema_violation_is_decisive():
    """JSON that breaks the request's json_schema scores low and names the failing path."""
    result = result_of("json", '{"name": "Ada", "age": "36"}', response_format=JSON_SCHEMA)
    assert result.score < 4 and result.decisive
    assert "$.age" in result.reason
    ok = result_of("json", '{"name": "Ada", "age": 36}', response_format=JSON_SCHEMA)
    assert ok.score == 10 and "matches the schema" in ok.reason


def test_json_schema_from_params_applies_without_response_format():
    """params schema makes the check apply and is enforced like a requested schema."""
    result = result_of("json", '{"name": "Ada"}', {"schema": PERSON_SCHEMA})
    assert result.decisive and "'age' is a required property" in result.reason


def test_json_expected_by_params():
    """params expect_json makes plain text a decisive failure."""
    assert result_of("json", EN, {"expect_json": True}).decisive


def test_json_not_applicable_when_not_asked():
    """Without response_format JSON or params, the JSON check says nothing."""
    assert check("json", EN) is None
    assert check("json", EN, response_format={"type": "text"}) is None


def test_json_fence_is_tolerated_with_a_small_cost():
    """A single ```json fence parses but costs 2 points; allow_fence=false makes it decisive."""
    fenced = '```json\n{"name": "Ada", "age": 36}\n```'
    assert result_of("json", fenced, response_format=JSON_OBJECT).score == 8
    assert result_of("json", fenced, {"allow_fence": False}, response_format=JSON_OBJECT).decisive


def test_json_object_requested_but_array_returned():
    """json_object asks for an object: a top-level array is a decisive failure."""
    assert result_of("json", "[1, 2, 3]", response_format=JSON_OBJECT).decisive


def test_json_invalid_schema_is_reported_not_raised():
    """An invalid schema or a remote $ref (never fetched) is reported; the parse check stands."""
    result = result_of("json", '{"a": 1}', {"schema": {"type": "no-such-type"}})
    assert result.score == 10 and "schema not checked" in result.reason
    remote = result_of("json", '{"a": 1}', {"schema": {"$ref": "https://example.com/s.json"}})
    assert remote.score == 10 and "schema not checked: Unresolvable" in remote.reason


def test_json_schemas_are_compiled_once():
    """Equal schemas (whatever their key order) share one compiled validator."""
    _compiled_schema.cache_clear()
    reordered = {
        "required": ["name", "age"],
        "properties": PERSON_SCHEMA["properties"],
        "type": "object",
    }
    for schema in (PERSON_SCHEMA, reordered, PERSON_SCHEMA):
        check("json", '{"name": "Ada", "age": 36}', {"schema": schema})
    info = _compiled_schema.cache_info()
    assert info.misses == 1 and info.hits == 2


# refusal


@pytest.mark.parametrize(
    "output",
    [
        "I'm sorry, but I can't help with that.",
        "I\u2019m sorry, but I cannot assist with this request.",
        "Es tut mir leid, aber dabei kann ich nicht helfen.",
        "Leider kann ich Ihnen bei dieser Anfrage nicht helfen.",
        "Je suis désolé, mais je ne peux pas vous aider avec cela.",
        "Lo siento, pero no puedo ayudar con eso.",
    ],
)
def test_refusal_is_decisive(output):
    """Refusals in English, German, French and Spanish score low, decisively."""
    result = result_of("refusal", output)
    assert result.score < 4 and result.decisive and "refusal" in result.reason


def test_refusal_followed_by_an_answer_is_a_warning():
    """Refusing part of the request and then answering at length is a warning, not decisive."""
    output = (
        "I'm sorry, but I can't help with the medical part of your question. However, here is the "
        "biology. " + EN + " " + OTHER_EN
    )
    result = result_of("refusal", output)
    assert 4 <= result.score < 7 and not result.decisive


def test_refusal_ai_disclaimer_is_a_warning():
    """ "As an AI language model" costs a warning-level score."""
    output = "As an AI language model, I don't have opinions. " + EN
    assert result_of("refusal", output).score == 6


def test_refusal_heavy_hedging_is_moderate_light_hedging_a_blemish():
    """Heavy hedging scores 5; a single doubt scores 8."""
    heavy = (
        "I'm not entirely sure, but I think it might be around 42. I could be wrong, so maybe "
        "check again; perhaps consult an expert."
    )
    assert result_of("refusal", heavy).score == 5
    light = EN + " I'm not sure about the exact numbers for desert plants, though."
    assert result_of("refusal", light).score == 8


def test_refusal_clean_answers_and_lookalikes_pass():
    """Plain answers, "I can't help but notice" and stated limitations are not refusals."""
    assert result_of("refusal", EN).score == 10
    assert result_of("refusal", "I can't help but notice that the loop never ends.").score == 10
    limitation = (
        "Unfortunately, I can't reproduce the bug without the logs, but the trace points to a race."
    )
    assert result_of("refusal", limitation).score == 10
    assert (
        result_of(
            "refusal", "Leider kann ich nicht garantieren, dass die API immer erreichbar ist."
        ).score
        == 10
    )


# repetition


def test_repetition_normal_text_passes():
    """Ordinary prose scores 10."""
    assert result_of("repetition", " ".join([EN, DE, FR, ES])).score == 10


def test_repetition_phrase_loop_is_decisive():
    """A phrase stuck in a loop is degenerate: a low score, decisively."""
    output = "I'm sorry, but the answer is" + " the answer is" * 10
    result = result_of("repetition", output)
    assert result.score < 4 and result.decisive and "the answer is" in result.reason


def test_repetition_text_repeating_itself_is_decisive():
    """A paragraph repeated over and over is degenerate."""
    result = result_of("repetition", "\n".join([EN] * 6))
    assert result.decisive


def test_repetition_some_repetition_is_a_warning():
    """A paragraph said twice is repetitive, a warning rather than decisive."""
    result = result_of("repetition", " ".join([EN, EN, DE]))
    assert 4 <= result.score < 7 and not result.decisive


def test_repetition_long_run_of_one_character_is_decisive():
    """Sixty exclamation marks in a row are degenerate; an 80-dash Markdown rule is not."""
    assert result_of("repetition", EN + " " + "!" * 60).decisive
    assert result_of("repetition", EN + "\n\n" + "-" * 80 + "\n\n" + DE).score == 10


def test_repetition_repeated_lines_are_decisive():
    """The same line over and over is degenerate."""
    output = "\n".join(["Here is the next step of the plan."] * 12)
    assert result_of("repetition", output).decisive


def test_repetition_ignores_code_blocks():
    """Repetitive code in a fenced block is not degenerate prose."""
    code = "```python\n" + "assert f(1) == 1\n" * 30 + "```"
    assert result_of("repetition", EN + "\n\n" + code).score == 10


# length


def test_length_not_applicable_without_a_range():
    """No configured range: the length check says nothing."""
    assert check("length", EN) is None


def test_length_within_range_passes():
    """An answer within min_words..max_words scores 10."""
    assert result_of("length", EN, {"min_words": 10, "max_words": 100}).score == 10


@pytest.mark.parametrize(
    ("params", "score"),
    [
        ({"min_words": 40}, 6),  # 27 words: slightly short
        ({"min_words": 200}, 4),  # far too short
        ({"max_words": 20}, 6),  # slightly long
        ({"max_words": 5}, 4),  # far too long
        ({"max_chars": 50}, 4),  # far too long in characters
    ],
)
def test_length_outside_range_is_a_warning_never_decisive(params, score):
    """Outside the range costs a warning (6 within a factor of two, else 4), never decisive."""
    result = result_of("length", EN, params)
    assert result.score == score and not result.decisive


# code

PY_OK = "Here it is:\n\n```python\ndef add(a, b):\n    return a + b\n```\n"
PY_BROKEN = "Here it is:\n\n```python\ndef add(a, b)\n    return a + b\n```\n"


def test_code_python_that_parses_passes():
    """A tagged Python block that parses scores 10."""
    assert result_of("code", PY_OK).score == 10


def test_code_python_that_does_not_parse_is_decisive():
    """A Python block with a syntax error scores low, decisively, and says where."""
    result = result_of("code", PY_BROKEN)
    assert result.score < 4 and result.decisive and "line 1" in result.reason


def test_code_one_broken_block_among_good_ones_is_a_warning():
    """When only some blocks fail (say, the user's broken code quoted), it is a warning."""
    result = result_of("code", PY_BROKEN + "\nFixed:\n" + PY_OK)
    assert result.score == 5 and not result.decisive


def test_code_not_applicable_without_checkable_code():
    """No code, untagged blocks and unchecked languages: the code check says nothing by default."""
    assert check("code", EN) is None
    assert check("code", "```\ndef add(a, b)\n```") is None
    assert check("code", "```rust\nfn main() {\n```") is None


def test_code_untagged_blocks_and_whole_output_when_configured():
    """untagged_as and whole_output make untagged blocks and bare code checked."""
    assert result_of("code", "```\ndef add(a, b)\n```", {"untagged_as": "python"}).decisive
    assert (
        result_of("code", "def add(a, b):\n    return a + b\n", {"whole_output": True}).score == 10
    )
    assert result_of("code", "def add(a, b)\n", {"whole_output": True}).decisive


def test_code_task_types_restrict_the_check():
    """params task_types limit the check to those task types."""
    assert check("code", PY_BROKEN, {"task_types": ["code"]}, task_type="chat") is None
    assert result_of("code", PY_BROKEN, {"task_types": ["code"]}, task_type="code").decisive


def test_code_json_and_yaml_blocks_when_configured():
    """JSON and YAML blocks are parsed when listed in languages."""
    params = {"languages": ["json", "yaml"]}
    assert result_of("code", '```json\n{"a": 1}\n```', params).score == 10
    assert result_of("code", '```json\n{"a": 1,}\n```', params).decisive
    assert result_of("code", "```yaml\na: 1\nb: [1, 2]\n```", params).score == 10
    assert result_of("code", "```yaml\na: [1, 2\nb: c\n```", params).decisive
    assert check("code", '```json\n{"a": 1,}\n```') is None  # python only by default


def test_code_tolerates_placeholders_and_interactive_sessions():
    """<YOUR_KEY> placeholders, >>> transcripts and notebook magics do not count as errors."""
    assert result_of("code", "```python\nclient = Client(api_key=<YOUR_KEY>)\n```").score == 10
    assert result_of("code", "```pycon\n>>> 1 + 1\n2\n>>> print('x')\nx\n```").score == 10
    assert result_of("code", "```python\n!pip install httpx\nimport httpx\n```").score == 10


# regex


def test_regex_not_applicable_without_patterns():
    """No patterns configured: the regex check says nothing."""
    assert check("regex", EN) is None


def test_regex_must_match():
    """A matching must_match passes; a missing one is decisive."""
    assert result_of("regex", EN, {"must_match": [r"chloroplasts?"]}).score == 10
    result = result_of("regex", EN, {"must_match": [r"\bmitochondria\b"]})
    assert result.decisive and result.score < 4 and "does not match" in result.reason


def test_regex_must_not_match():
    """A hit of a must_not_match pattern is decisive."""
    result = result_of("regex", EN, {"must_not_match": ["carbon dioxide"]})
    assert result.decisive and "matches 'carbon dioxide'" in result.reason
    assert result_of("regex", EN, {"must_not_match": ["TODO"]}).score == 10


def test_regex_ignore_case():
    """ignore_case applies to every pattern."""
    assert result_of("regex", EN, {"must_match": ["PHOTOSYNTHESIS"]}).decisive
    assert (
        result_of("regex", EN, {"must_match": ["PHOTOSYNTHESIS"], "ignore_case": True}).score == 10
    )


def test_regex_invalid_pattern_is_a_config_problem(caplog):
    """An invalid pattern is logged and reported, never raised; valid ones are still checked."""
    only_bad = result_of("regex", EN, {"must_match": ["(unclosed"]})
    assert only_bad.weight == 0 and "invalid pattern" in only_bad.reason
    mixed = result_of("regex", EN, {"must_match": ["(unclosed", "plants"]})
    assert mixed.score == 10 and "config problem" in mixed.reason
    failing = result_of("regex", EN, {"must_match": ["(unclosed", "animals"]})
    assert failing.decisive
    assert "invalid pattern" in caplog.text


def test_regex_patterns_are_compiled_once():
    """Each pattern is compiled once and then served from the cache."""
    compile_pattern.cache_clear()
    for _ in range(3):
        check("regex", EN, {"must_match": ["plants"]})
    assert compile_pattern.cache_info().misses == 1


# agreement

OTHER_EN = (
    "Plants make sugar through photosynthesis: chlorophyll in the chloroplasts captures sunlight, "
    "which splits water and releases oxygen, and carbon dioxide becomes sugar."
)


def test_agreement_not_applicable_without_second_opinion():
    """No second opinion: the agreement check says nothing."""
    assert check("agreement", EN) is None
    assert check("agreement", EN, second_opinion="  ") is None


def test_agreement_similar_answers_agree():
    """Two answers about the same facts in different words score 10."""
    result = result_of("agreement", EN, second_opinion=OTHER_EN)
    assert result.score == 10 and "agrees" in result.reason


def test_agreement_different_answers_score_low_but_not_decisive():
    """An unrelated second opinion scores 2, without capping the confidence."""
    other = "To reset your password, open the settings page and choose security, then reset."
    result = result_of("agreement", EN, second_opinion=other)
    assert result.score == 2 and not result.decisive


def test_agreement_different_numbers_disagree():
    """Answers that differ in the number they state do not agree."""
    result = result_of("agreement", "The answer is 42.", second_opinion="The answer is 43.")
    assert result.score < 7


def test_agreement_compares_json_as_values():
    """Equal JSON in different formatting agrees fully; different values agree less."""
    same = result_of(
        "agreement", '{"a": 1, "b": [1, 2]}', second_opinion='{\n  "b": [1, 2],\n  "a": 1\n}'
    )
    assert same.score == 10
    different = result_of("agreement", '{"city": "Paris"}', second_opinion='{"city": "Berlin"}')
    assert different.score < same.score


# text helpers


def test_code_blocks_finds_tagged_untagged_and_unclosed_blocks():
    """Fenced blocks are found with their language tag; an unclosed last block is kept."""
    blocks = code_blocks("a\n```Python\nx = 1\n```\nb\n```\ny\n```\n```json\n{")
    assert [(b.lang, b.closed) for b in blocks] == [("python", True), ("", True), ("json", False)]


def test_parse_json_and_answer_text():
    """A fenced JSON answer parses; the answer's text is its string values."""
    outcome = parse_json('```json\n{"answer": "Hallo", "n": ["Welt", 1]}\n```')
    assert outcome.ok and outcome.fenced
    assert answer_text('{"answer": "Hallo", "n": ["Welt", 1]}') == "Hallo\nWelt"
