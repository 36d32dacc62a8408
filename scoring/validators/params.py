"""A base for the built-in validators: declared parameter defaults and forgiving parameter reading.

Parameters come from the admin as JSON. A value of the wrong type is a configuration mistake, not
a reason to fail a request: it is logged once and the documented default is used instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar, Final

from scoring.validators.base import AnswerContext, ValidatorResult

logger = logging.getLogger("scoring.validators")

_warned: set[tuple[str, str, str]] = set()
_MAX_WARNED: Final = 1000


def warn_once(validator: str, key: str, message: str) -> None:
    """Log a configuration problem once per validator, parameter and message."""
    marker = (validator, key, message)
    if marker in _warned:
        return
    if len(_warned) < _MAX_WARNED:
        _warned.add(marker)
    logger.warning("validator %s: parameter %r: %s", validator, key, message)


class BuiltinValidator:
    """Shared plumbing of the built-in validators; each subclass documents its ``defaults``."""

    name: ClassVar[str]
    description: ClassVar[str]
    # Every parameter the validator reads, with the value used when the admin sets none.
    defaults: ClassVar[Mapping[str, Any]] = {}

    def __call__(self, context: AnswerContext, params: Mapping[str, Any]) -> ValidatorResult | None:
        raise NotImplementedError

    def result(
        self, score: float, reason: str, *, decisive: bool = False, weight: float = 1.0
    ) -> ValidatorResult:
        return ValidatorResult(
            name=self.name,
            score=min(10.0, max(0.0, score)),
            weight=weight,
            reason=reason,
            decisive=decisive,
        )

    def not_counted(self, reason: str) -> ValidatorResult:
        """A result the reviewer sees but the confidence ignores: the check could not run."""
        return self.result(10, f"not counted: {reason}", weight=0)

    def _raw(self, params: Mapping[str, Any], key: str) -> Any:
        value = params.get(key)
        return self.defaults.get(key) if value is None else value

    def _bad(self, key: str, value: Any, expected: str) -> Any:
        warn_once(self.name, key, f"expected {expected}, got {value!r}; using the default")
        return self.defaults.get(key)

    def param_float(self, params: Mapping[str, Any], key: str) -> float | None:
        value = self._raw(params, key)
        if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
            return None if value is None else float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        default = self._bad(key, value, "a number")
        return None if default is None else float(default)

    def param_int(self, params: Mapping[str, Any], key: str) -> int | None:
        value = self.param_float(params, key)
        return None if value is None else int(value)

    def param_bool(self, params: Mapping[str, Any], key: str) -> bool:
        value = self._raw(params, key)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
            return value.strip().lower() in ("true", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        return bool(self._bad(key, value, "true or false"))

    def param_str(self, params: Mapping[str, Any], key: str) -> str:
        value = self._raw(params, key)
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        default = self._bad(key, value, "a string")
        return default if isinstance(default, str) else ""

    def param_strings(self, params: Mapping[str, Any], key: str) -> tuple[str, ...]:
        value = self._raw(params, key)
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
            return tuple(value)
        default = self._bad(key, value, "a list of strings")
        return tuple(default) if isinstance(default, list | tuple) else ()

    def param_mapping(self, params: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
        value = self._raw(params, key)
        if value is None or isinstance(value, Mapping):
            return value
        default = self._bad(key, value, "an object")
        return default if isinstance(default, Mapping) else None
