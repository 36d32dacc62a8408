"""Does the code in an answer parse? Python with the interpreter's own parser, JSON and YAML too.

Only parsing, never running: ``compile(..., PyCF_ONLY_AST)`` builds the syntax tree and stops.
It costs about 5 µs per line of Python, so a block longer than ``max_lines`` is not parsed.
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Mapping
from typing import Any, ClassVar, Final

import orjson
import yaml

from scoring.validators.base import AnswerContext, ValidatorResult
from scoring.validators.params import BuiltinValidator, warn_once
from scoring.validators.text import code_blocks

TAGS: Final[dict[str, str]] = {
    **dict.fromkeys(
        ("python", "py", "python3", "py3", "pycon", "ipython", "python-repl"), "python"
    ),
    **dict.fromkeys(("json",), "json"),
    **dict.fromkeys(("yaml", "yml"), "yaml"),
}
PARSEABLE: Final = frozenset(TAGS.values())
_PY_FLAGS: Final = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
# "<your key>" and "…" stand for code the reader fills in; they do not make the code wrong.
_PLACEHOLDER_RE: Final = re.compile(r"<[A-Za-z_][^<>\n]{0,60}>")
_YAML_LOADER: Final = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _python_source(code: str) -> str:
    """The Python in a block: interactive prompts stripped, notebook magics blanked, dedented."""
    lines = code.splitlines()
    if any(line.startswith(">>> ") or line == ">>>" for line in lines):
        lines = [
            line[4:]
            for line in lines
            if line.startswith((">>> ", "... ")) or line in (">>>", "...")
        ]
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in lines]
    return textwrap.dedent("\n".join(lines))


def _python_error(code: str) -> str | None:
    source = _python_source(code)
    try:
        compile(source, "<answer>", "exec", flags=_PY_FLAGS, dont_inherit=True)
        return None
    except SyntaxError as error:
        problem = f"line {error.lineno}: {error.msg}"
    except (ValueError, RecursionError, MemoryError) as error:
        return f"{type(error).__name__}: {error}"
    filled = _PLACEHOLDER_RE.sub("_", source).replace("…", "...")
    if filled != source:
        try:
            compile(filled, "<answer>", "exec", flags=_PY_FLAGS, dont_inherit=True)
            return None
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            pass
    return problem


def _json_error(code: str) -> str | None:
    try:
        orjson.loads(code)
        return None
    except orjson.JSONDecodeError as error:
        problem = str(error)
    # JSON Lines: every non-blank line a document.
    lines = [line for line in code.splitlines() if line.strip()]
    if len(lines) > 1:
        try:
            for line in lines:
                orjson.loads(line)
            return None
        except orjson.JSONDecodeError:
            pass
    return problem


def _yaml_error(code: str) -> str | None:
    try:
        for _ in yaml.load_all(code, Loader=_YAML_LOADER):
            pass
        return None
    except yaml.YAMLError as error:
        return " ".join(str(error).split())[:160]


_PARSERS: Final = {"python": _python_error, "json": _json_error, "yaml": _yaml_error}


def parse_error(language: str, code: str) -> str | None:
    """Why ``code`` does not parse as ``language`` ("python", "json", "yaml"), None if it does."""
    return _PARSERS[language](code)


class CodeValidator(BuiltinValidator):
    """Code that does not parse is a decisive failure when no block parses, a warning otherwise.

    Blocks tagged with a checked language (```python) are checked on every task type: the tag
    says what the block is. Untagged blocks and bare code need the task type's parameters
    (``untagged_as``, ``whole_output``), set where answers are code.
    """

    name: ClassVar[str] = "code"
    description: ClassVar[str] = (
        "Code in the answer parses: fenced blocks tagged with a checked language (Python by "
        "default; JSON, YAML), untagged blocks or the whole answer when configured."
    )
    defaults: ClassVar[Mapping[str, Any]] = {
        # Which languages are parsed: any of "python", "json", "yaml".
        "languages": ["python"],
        # The language of untagged fenced blocks; "" leaves them unchecked.
        "untagged_as": "",
        # Without fenced blocks, parse the whole answer (as untagged_as, else the first language).
        "whole_output": False,
        # Check only answers of these task types; [] checks every task type.
        "task_types": [],
        # Longer blocks are not parsed (Python costs about 5 µs per line).
        "max_lines": 1000,
    }

    def __call__(self, context: AnswerContext, params: Mapping[str, Any]) -> ValidatorResult | None:
        task_types = self.param_strings(params, "task_types")
        if task_types and context.task_type not in task_types:
            return None
        languages = self._languages(params, "languages")
        untagged = self._languages(params, "untagged_as")
        untagged_as = untagged[0] if untagged else ""
        checked: list[tuple[str, str]] = []
        blocks = code_blocks(context.output)
        for block in blocks:
            language = TAGS.get(block.lang, "") if block.lang else untagged_as
            if language and (language in languages or not block.lang):
                checked.append((language, block.code))
        if not blocks and self.param_bool(params, "whole_output") and context.output.strip():
            language = untagged_as or (languages[0] if languages else "")
            if language:
                checked.append((language, context.output))
        if not checked:
            return None
        max_lines = self.param_int(params, "max_lines") or 0
        failures: list[str] = []
        parsed = 0
        for language, code in checked:
            if max_lines and code.count("\n") > max_lines:
                continue
            parsed += 1
            error = parse_error(language, code)
            if error is not None:
                failures.append(f"{language} {error}")
        if not parsed:
            return self.not_counted(f"code blocks longer than {max_lines} lines are not parsed")
        kinds = "/".join(sorted({language for language, _ in checked}))
        if not failures:
            plural = "s parse" if parsed > 1 else " parses"
            return self.result(10, f"{parsed} {kinds} block{plural}")
        if len(failures) == parsed:
            return self.result(1, f"code does not parse: {failures[0]}", decisive=True)
        return self.result(
            5, f"{len(failures)} of {parsed} {kinds} blocks do not parse: {failures[0]}"
        )

    def _languages(self, params: Mapping[str, Any], key: str) -> tuple[str, ...]:
        found = []
        for value in self.param_strings(params, key):
            language = TAGS.get(value.strip().lower())
            if language is None:
                if value.strip():
                    warn_once(
                        self.name, key, f"cannot parse {value!r}; checked are {sorted(PARSEABLE)}"
                    )
                continue
            found.append(language)
        return tuple(found)
