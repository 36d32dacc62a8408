"""Configuration as code: the routing configuration as one YAML file, exported and imported.

The file has up to six sections: ``providers``, ``models`` (deployments), ``task_routes``,
``caller_preferences``, ``classification_rules`` and ``fallback_chain``. Import upserts each item by
its natural key, leaves absent sections, absent fields and unlisted objects alone, replaces the
fallback chain when it is given, and never reads or writes secrets. It runs in one transaction and
reports every error with its line: either the whole file is applied or nothing is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import yaml
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction
from django.db.models import Model

from providers.models import TIER_ORDER, FallbackChainEntry, ModelDeployment, Provider
from providers.services import config_changed_on_commit, fallback_chain_set

from .models import CallerPreference, ClassificationRule, TaskRoute

SECTIONS: tuple[str, ...] = (
    "providers",
    "models",
    "task_routes",
    "caller_preferences",
    "classification_rules",
    "fallback_chain",
)
# Fields that would carry a key; refused outright so a secret never lands in a config repository.
SECRET_FIELDS = frozenset({"api_key", "api_key_encrypted"})

_HEADER = (
    "# llm-gateway routing configuration (python manage.py gateway_config export).\n"
    "# API keys are never exported: providers name an environment variable in api_key_env,\n"
    "# or get their key in the admin.\n"
)


class ConfigImportError(Exception):
    """The file is invalid; ``errors`` lists every problem found, each with its line."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass
class SectionCounts:
    """What an import did (or would do) to the items of one section."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass
class ImportReport:
    """The outcome of an import: counts for each section present in the file, and each change."""

    dry_run: bool
    sections: dict[str, SectionCounts] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def summary_lines(self) -> list[str]:
        """One line per section present, e.g. ``models: 1 created, 0 updated, 3 unchanged``."""
        return [
            f"{name}: {c.created} created, {c.updated} updated, {c.unchanged} unchanged"
            for name, c in self.sections.items()
        ]


# --- Export -----------------------------------------------------------------------------------


def _number(value: Decimal) -> int | float:
    """A cost as YAML shows it best: 0 rather than 0.000000, 0.15 rather than 0.150000."""
    return int(value) if value == value.to_integral_value() else float(value)


def config_export() -> str:
    """The whole routing configuration as YAML, in a stable order so exports diff cleanly.

    API keys are never written, only the name of the environment variable that holds one.
    """
    providers = [
        {
            "name": p.name,
            "kind": p.kind,
            "base_url": p.base_url,
            "api_key_env": p.api_key_env or None,
            "enabled": p.enabled,
            "connect_timeout_s": p.connect_timeout_s,
            "first_byte_timeout_s": p.first_byte_timeout_s,
            "total_timeout_s": p.total_timeout_s,
            "max_concurrent_requests": p.max_concurrent_requests,
            "daily_request_quota": p.daily_request_quota,
            "daily_token_quota": p.daily_token_quota,
        }
        for p in Provider.objects.order_by("name")
    ]
    deployments = sorted(
        ModelDeployment.objects.select_related("provider"),
        key=lambda d: (TIER_ORDER.index(d.tier), d.public_name, d.provider.name, d.upstream_model),
    )
    models = [
        {
            "name": d.upstream_model,
            "public_name": d.public_name,
            "provider": d.provider.name,
            "tier": d.tier,
            "input_cost_per_mtok": _number(d.input_cost_per_mtok),
            "output_cost_per_mtok": _number(d.output_cost_per_mtok),
            "context_window": d.context_window,
            "weight": d.weight,
            "enabled": d.enabled,
        }
        for d in deployments
    ]
    task_routes = [
        {
            "task_type": r.task_type,
            "start_tier": r.start_tier or None,
            "pinned_model": r.pinned_model or None,
            "description": r.description or None,
            "cache_ttl_s": r.cache_ttl_s,
        }
        for r in TaskRoute.objects.order_by("task_type")
    ]
    caller_preferences = [
        {
            "caller": c.caller,
            "task_type": c.task_type or None,
            "start_tier": c.start_tier or None,
            "pinned_model": c.pinned_model or None,
        }
        for c in CallerPreference.objects.order_by("caller", "task_type")
    ]
    # Rules keep their evaluation order (priority, then age) so a fresh import classifies alike.
    classification_rules = [
        {
            "task_type": r.task_type,
            "match_type": r.match_type,
            "pattern": r.pattern,
            "priority": r.priority,
            "enabled": r.enabled,
        }
        for r in ClassificationRule.objects.order_by("priority", "id")
    ]
    fallback_chain = list(
        FallbackChainEntry.objects.order_by("position", "id").values_list(
            "provider__name", flat=True
        )
    )
    sections: list[tuple[str, list[Any]]] = [
        ("providers", providers),
        ("models", models),
        ("task_routes", task_routes),
        ("caller_preferences", caller_preferences),
        ("classification_rules", classification_rules),
        ("fallback_chain", fallback_chain),
    ]
    parts = [_HEADER]
    for name, rows in sections:
        # Block style for items; the chain (a list of names) reads best on one line. A huge width
        # keeps long patterns and URLs on one line.
        parts.append(
            yaml.safe_dump(
                {name: rows},
                sort_keys=False,
                allow_unicode=True,
                default_flow_style=None if name == "fallback_chain" else False,
                width=1_000_000,
            )
        )
    return "\n".join(parts)


# --- Loading YAML with line numbers ----------------------------------------------------------


class _Map(dict[Any, Any]):
    """A YAML mapping that remembers its line, each key's line and any repeated keys (1-based)."""

    line: int = 0
    key_lines: dict[Any, int]
    repeated: list[tuple[Any, int]]

    def line_of(self, key: Any) -> int:
        return self.key_lines.get(key, self.line)


class _Seq(list[Any]):
    """A YAML sequence that remembers its line and the line of each item (1-based)."""

    line: int = 0
    item_lines: list[int]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences carry line numbers for error messages."""


def _construct_map(loader: yaml.SafeLoader, node: yaml.MappingNode) -> _Map:
    # Keys written in this mapping, before merge keys (<<) are flattened in: only these can repeat.
    own = [(k, v) for k, v in node.value if k.tag != "tag:yaml.org,2002:merge"]
    result = _Map(loader.construct_mapping(node, deep=True))
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    result.repeated = []
    for key_node, _ in own:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in result.key_lines:
            result.repeated.append((key, line))  # PyYAML would silently keep the last one
        else:
            result.key_lines[key] = line
    return result


def _construct_seq(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> _Seq:
    result = _Seq(loader.construct_sequence(node, deep=True))
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def _load(text: str) -> Any:
    try:
        # Safe: _LineLoader is a SafeLoader that only adds line numbers.
        return yaml.load(text, Loader=_LineLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}: " if mark else ""
        what = exc.problem or "syntax error"
        if exc.context:
            what = f"{what} ({exc.context})"
        raise ConfigImportError([f"{where}invalid YAML: {what}"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigImportError([f"invalid YAML: {exc}"]) from exc


# --- The file's schema ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    kind: str  # "str", "int", "float", "decimal" or "bool"
    required: bool = False
    # null reads as "", the empty value of an optional text field (None for a number)
    nullable: bool = False
    choices: tuple[str, ...] = ()
    attr: str = ""  # the model attribute, when it is not named like the field


_TIERS = tuple(TIER_ORDER)

_SCHEMAS: dict[str, dict[str, _Field]] = {
    "providers": {
        "name": _Field("str", required=True),
        "kind": _Field("str", required=True, choices=tuple(Provider.Kind.values)),
        "base_url": _Field("str", required=True),
        "api_key_env": _Field("str", nullable=True),
        "enabled": _Field("bool"),
        "connect_timeout_s": _Field("float"),
        "first_byte_timeout_s": _Field("float"),
        "total_timeout_s": _Field("float"),
        "max_concurrent_requests": _Field("int"),
        "daily_request_quota": _Field("int", nullable=True),
        "daily_token_quota": _Field("int", nullable=True),
    },
    "models": {
        "name": _Field("str", required=True, attr="upstream_model"),
        "public_name": _Field("str"),
        "provider": _Field("str", required=True),
        "tier": _Field("str", required=True, choices=_TIERS),
        "input_cost_per_mtok": _Field("decimal"),
        "output_cost_per_mtok": _Field("decimal"),
        "context_window": _Field("int"),
        "weight": _Field("int"),
        "enabled": _Field("bool"),
    },
    "task_routes": {
        "task_type": _Field("str", required=True),
        "start_tier": _Field("str", nullable=True, choices=_TIERS),
        "pinned_model": _Field("str", nullable=True),
        "description": _Field("str", nullable=True),
        "cache_ttl_s": _Field("int", nullable=True),
    },
    "caller_preferences": {
        "caller": _Field("str", required=True),
        "task_type": _Field("str", nullable=True),
        "start_tier": _Field("str", nullable=True, choices=_TIERS),
        "pinned_model": _Field("str", nullable=True),
    },
    "classification_rules": {
        "task_type": _Field("str", required=True),
        "match_type": _Field(
            "str", required=True, choices=tuple(ClassificationRule.MatchType.values)
        ),
        "pattern": _Field("str", required=True),
        "priority": _Field("int"),
        "enabled": _Field("bool"),
    },
}

# The fields naming an item: they pick the row to update, so they are never "changed".
_NATURAL_KEYS: dict[str, tuple[str, ...]] = {
    "providers": ("name",),
    "models": ("provider", "name", "tier"),
    "task_routes": ("task_type",),
    "caller_preferences": ("caller", "task_type"),
    "classification_rules": ("task_type", "match_type", "pattern"),
}

_EXPECTED = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "decimal": "a number",
    "bool": "a boolean (true or false)",
}


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__} ({value})"


def _check_value(value: Any, spec: _Field) -> Any:
    """The value as the model stores it; raises ValueError saying what is wrong with it."""
    if value is None and spec.nullable:
        return "" if spec.kind == "str" else None
    wrong_type = ValueError(f"expected {_EXPECTED[spec.kind]}, got {_describe(value)}")
    if spec.kind == "str":
        if not isinstance(value, str):
            raise wrong_type
        if spec.choices and value not in spec.choices and not (spec.nullable and value == ""):
            raise ValueError(f"{value!r} is not one of {', '.join(spec.choices)}")
        return value
    # bool is an int to Python, but true is no valid timeout and 1 no valid flag.
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise wrong_type
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wrong_type
    if spec.kind == "int":
        if not isinstance(value, int):
            raise wrong_type
        return value
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value}")
    # str() first: Decimal(0.1) would carry the float's binary noise into the cost.
    return Decimal(str(value)) if spec.kind == "decimal" else float(value)


# --- Reading and checking the document -------------------------------------------------------


class _Errors:
    """Every problem found, kept with its line so the report reads top to bottom."""

    def __init__(self) -> None:
        self._found: list[tuple[int, str]] = []

    def add(self, line: int, where: str, message: str) -> None:
        self._found.append((line, f"line {line}: {where}: {message}"))

    def __bool__(self) -> bool:
        return bool(self._found)

    def in_order(self) -> list[str]:
        return [message for _, message in sorted(self._found, key=lambda found: found[0])]


@dataclass
class _Item:
    """One entry of a section: its place in the file and its checked field values."""

    section: str
    index: int
    line: int
    key_lines: dict[Any, int]
    values: dict[str, Any] = field(default_factory=dict)  # only the fields that passed checks
    valid: bool = True
    bad_fields: set[str] = field(default_factory=set)  # reported already: not checked again

    @property
    def path(self) -> str:
        return f"{self.section}[{self.index}]"

    def line_of(self, name: str) -> int:
        return self.key_lines.get(name, self.line)

    def error(self, errors: _Errors, name: str | None, message: str) -> None:
        """Record a problem with one field (or with the whole item when ``name`` is None)."""
        self.valid = False
        if name is None:
            errors.add(self.line, self.path, message)
        else:
            self.bad_fields.add(name)
            errors.add(self.line_of(name), f"{self.path}.{name}", message)


@dataclass
class _Document:
    items: dict[str, list[_Item]]  # per list section present in the file
    chain: list[str] | None  # None: no fallback_chain section, or an invalid one
    present: list[str]


def _read_items(section: str, raw: Any, line: int, errors: _Errors) -> list[_Item]:
    schema = _SCHEMAS[section]
    if raw is None:
        return []  # "models:" with nothing under it: nothing to upsert
    if not isinstance(raw, list):
        errors.add(line, section, f"expected a list of items, got {_describe(raw)}")
        return []
    item_lines = raw.item_lines if isinstance(raw, _Seq) else [line] * len(raw)
    items: list[_Item] = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, _Map):
            where = f"{section}[{index}]"
            errors.add(item_lines[index], where, f"expected a mapping, got {_describe(entry)}")
            continue
        item = _Item(section, index, entry.line, entry.key_lines)
        items.append(item)
        for key, key_line in entry.repeated:
            item.valid = False
            errors.add(key_line, f"{item.path}.{key}", "given more than once")
        for key in entry:
            if section == "providers" and key in SECRET_FIELDS:
                item.error(
                    errors,
                    str(key),
                    "secrets are never imported: name the environment variable holding the key "
                    "in api_key_env, or set the key in the admin",
                )
            elif key not in schema:
                item.error(errors, str(key), f"unknown field (known: {', '.join(schema)})")
        for name, spec in schema.items():
            if name not in entry:
                if spec.required:
                    item.error(errors, None, f"missing required field {name!r}")
                    item.bad_fields.add(name)
                continue
            try:
                item.values[name] = _check_value(entry[name], spec)
            except ValueError as exc:
                item.error(errors, name, str(exc))
    return items


def _check_items(section: str, items: list[_Item], errors: _Errors) -> None:
    """Checks of one item's own values beyond their types."""
    for item in items:
        values = item.values
        if section == "providers" and "base_url" in values:
            url = urlsplit(values["base_url"])
            if url.scheme.lower() not in {"http", "https"} or not url.netloc:
                item.error(errors, "base_url", f"{values['base_url']!r} is not an http(s) URL")
        if section == "classification_rules" and values.get("match_type") == "regex":
            try:
                re.compile(values.get("pattern", ""))
            except re.error as exc:
                item.error(errors, "pattern", f"not a valid regular expression: {exc}")
        if section in {"task_routes", "caller_preferences"} and (
            "start_tier" in values or "pinned_model" in values
        ):
            # The route target is one setting: naming only a tier clears a pinned model (which
            # would otherwise keep overriding it), and the other way round.
            values.setdefault("start_tier", "")
            values.setdefault("pinned_model", "")
        if section == "caller_preferences":
            values.setdefault("task_type", "")  # absent means "every task type", part of the key


def _drop_repeats(items: list[_Item], errors: _Errors) -> None:
    """Two items with one natural key would fight over the same row: reject the later ones."""
    if not items:
        return
    key_fields = _NATURAL_KEYS[items[0].section]
    first: dict[tuple[Hashable, ...], _Item] = {}
    for item in items:
        if not item.valid:
            continue
        key = tuple(item.values[name] for name in key_fields)
        if key in first:
            earlier = first[key]
            item.error(
                errors,
                None,
                f"same {', '.join(key_fields)} as {earlier.path} (line {earlier.line})",
            )
        else:
            first[key] = item


def _read_chain(raw: Any, line: int, known: set[str], errors: _Errors) -> list[str] | None:
    if not isinstance(raw, list):
        # A bare "fallback_chain:" must not silently empty the chain; [] says so explicitly.
        errors.add(
            line,
            "fallback_chain",
            f"expected a list of provider names ([] empties the chain), got {_describe(raw)}",
        )
        return None
    item_lines = raw.item_lines if isinstance(raw, _Seq) else [line] * len(raw)
    names: list[str] = []
    ok = True
    for index, name in enumerate(raw):
        where = f"fallback_chain[{index}]"
        if not isinstance(name, str):
            errors.add(item_lines[index], where, f"expected a provider name, got {_describe(name)}")
            ok = False
        elif name not in known:
            errors.add(item_lines[index], where, f"no provider {name!r} in the file or database")
            ok = False
        elif name in names:
            errors.add(item_lines[index], where, f"{name!r} is listed more than once")
            ok = False
        else:
            names.append(name)
    return names if ok else None


def _read_document(doc: Any, errors: _Errors) -> _Document:
    if doc is None:
        raise ConfigImportError([f"the file is empty: expected sections ({', '.join(SECTIONS)})"])
    if not isinstance(doc, _Map):
        known = ", ".join(SECTIONS)
        raise ConfigImportError(
            [f"line 1: expected a mapping of sections ({known}), got {_describe(doc)}"]
        )
    for key, line in doc.repeated:
        errors.add(line, str(key), "section given more than once")
    for key in doc:
        if key not in SECTIONS:
            errors.add(
                doc.line_of(key), str(key), f"unknown section (known: {', '.join(SECTIONS)})"
            )
    present = [s for s in SECTIONS if s in doc]
    items: dict[str, list[_Item]] = {}
    for section in present:
        if section != "fallback_chain":
            items[section] = _read_items(section, doc[section], doc.line_of(section), errors)
            _check_items(section, items[section], errors)
            _drop_repeats(items[section], errors)

    # References may point at objects defined in this file (valid or not: an invalid item is
    # reported once, on itself) or already in the database.
    providers = set(Provider.objects.values_list("name", flat=True))
    providers.update(i.values["name"] for i in items.get("providers", []) if "name" in i.values)
    public_names = set(ModelDeployment.objects.values_list("public_name", flat=True))
    for item in items.get("models", []):
        public_name = item.values.get("public_name", item.values.get("name"))
        if public_name:
            public_names.add(public_name)
    for item in items.get("models", []):
        provider = item.values.get("provider")
        if provider is not None and provider not in providers:
            item.error(errors, "provider", f"no provider {provider!r} in the file or database")
    for section in ("task_routes", "caller_preferences"):
        for item in items.get(section, []):
            pinned = item.values.get("pinned_model")
            if pinned and pinned not in public_names:
                item.error(
                    errors,
                    "pinned_model",
                    f"no model with public name {pinned!r} in the file or database",
                )
    chain = None
    if "fallback_chain" in doc:
        chain = _read_chain(doc["fallback_chain"], doc.line_of("fallback_chain"), providers, errors)
    return _Document(items=items, chain=chain, present=present)


# --- Applying ---------------------------------------------------------------------------------


def _show(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(_number(value))
    if isinstance(value, str):
        return repr(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass
class _Run:
    errors: _Errors
    report: ImportReport


def _upsert(
    run: _Run,
    item: _Item,
    *,
    instance: Model | None,
    model: type[Model],
    key: dict[str, Any],
    label: str,
) -> None:
    """Apply the item's non-key fields to ``instance`` (or a new ``model(**key)``), check, save.

    An item that already failed a check is only run through the model's validation, so its
    remaining problems are reported too, and is never saved.
    """
    created = instance is None
    obj = model(**key) if instance is None else instance
    schema = _SCHEMAS[item.section]
    key_fields = _NATURAL_KEYS[item.section]
    attr_to_field = {spec.attr or name: name for name, spec in schema.items()}
    diffs: list[str] = []
    for name, value in item.values.items():
        if name in key_fields:
            continue
        attr = schema[name].attr or name
        old = getattr(obj, attr)
        if old != value:
            if not created:
                diffs.append(f"{name} {_show(old)} -> {_show(value)}")
            setattr(obj, attr, value)
    counts = run.report.sections[item.section]
    if not created and not diffs:
        if item.valid:
            counts.unchanged += 1
        return  # untouched rows are not re-validated: they are what the admin accepted
    try:
        if item.valid:
            obj.full_clean()
        else:
            bad = {schema[name].attr or name for name in item.bad_fields if name in schema}
            obj.clean_fields(exclude=bad)
            if not bad:
                obj.clean()  # cross-field rules would misfire on a field that was left out
    except ValidationError as exc:
        problems = (
            exc.message_dict if hasattr(exc, "error_dict") else {NON_FIELD_ERRORS: exc.messages}
        )
        for attr, messages in problems.items():
            field_name = None if attr == NON_FIELD_ERRORS else attr_to_field.get(attr, attr)
            for message in messages:
                item.error(run.errors, field_name, message)
        return
    if not item.valid:
        return
    obj.save()
    if created:
        counts.created += 1
        run.report.changes.append(f"create {label}")
    else:
        counts.updated += 1
        run.report.changes.append(f"update {label}: {'; '.join(diffs)}")


def _keyed(items: list[_Item]) -> list[_Item]:
    """The items whose natural key is complete: the ones that can be matched to a row."""
    if not items:
        return []
    key_fields = _NATURAL_KEYS[items[0].section]
    return [item for item in items if all(name in item.values for name in key_fields)]


def _apply_providers(run: _Run, items: Iterable[_Item]) -> None:
    for item in items:
        name = item.values["name"]
        _upsert(
            run,
            item,
            instance=Provider.objects.filter(name=name).first(),
            model=Provider,
            key={"name": name},
            label=f"provider {name}",
        )


def _apply_models(run: _Run, items: Iterable[_Item]) -> None:
    for item in items:
        v = item.values
        provider = Provider.objects.filter(name=v["provider"]).first()
        if provider is None:
            continue  # its provider item failed and was reported; the run will roll back
        key = {"provider": provider, "upstream_model": v["name"], "tier": v["tier"]}
        _upsert(
            run,
            item,
            instance=ModelDeployment.objects.filter(**key).first(),
            model=ModelDeployment,
            # A new deployment is asked for by its upstream name unless the file says otherwise.
            key={**key, "public_name": v.get("public_name", v["name"])},
            label=f"model {v['name']} ({provider.name}, {v['tier']})",
        )


def _apply_task_routes(run: _Run, items: Iterable[_Item]) -> None:
    for item in items:
        task_type = item.values["task_type"]
        _upsert(
            run,
            item,
            instance=TaskRoute.objects.filter(task_type=task_type).first(),
            model=TaskRoute,
            key={"task_type": task_type},
            label=f"task route {task_type}",
        )


def _apply_caller_preferences(run: _Run, items: Iterable[_Item]) -> None:
    for item in items:
        caller, task_type = item.values["caller"], item.values["task_type"]
        _upsert(
            run,
            item,
            instance=CallerPreference.objects.filter(caller=caller, task_type=task_type).first(),
            model=CallerPreference,
            key={"caller": caller, "task_type": task_type},
            label=f"caller preference {caller}/{task_type or '*'}",
        )


def _apply_classification_rules(run: _Run, items: Iterable[_Item]) -> None:
    for item in items:
        key = {name: item.values[name] for name in _NATURAL_KEYS["classification_rules"]}
        _upsert(
            run,
            item,
            # Rules have no unique constraint; the oldest of several identical ones is updated.
            instance=ClassificationRule.objects.filter(**key).order_by("id").first(),
            model=ClassificationRule,
            key=key,
            label=f"classification rule {key['task_type']}/{key['match_type']} {key['pattern']!r}",
        )


def _apply_chain(run: _Run, names: list[str]) -> bool:
    """Replace the fallback chain when it differs; True when it was written."""
    counts = run.report.sections["fallback_chain"]
    current = list(
        FallbackChainEntry.objects.order_by("position", "id").values_list(
            "provider__name", flat=True
        )
    )
    if current == names:
        counts.unchanged += 1
        return False
    if Provider.objects.filter(name__in=names).count() != len(names):
        return False  # a provider of the chain failed to import and was reported
    fallback_chain_set(provider_names=names)
    counts.updated += 1
    run.report.changes.append(f"fallback chain: [{', '.join(current)}] -> [{', '.join(names)}]")
    return True


def config_import(*, text: str, dry_run: bool) -> ImportReport:
    """Upsert the configuration in ``text`` (YAML) and report what changed.

    All or nothing: every error in the file is collected and raised as one
    :class:`ConfigImportError`, and then nothing is written. With ``dry_run`` the changes are
    made, counted and rolled back, and no gateway process is told to reload.
    """
    doc = _load(text)
    errors = _Errors()
    with transaction.atomic():
        document = _read_document(doc, errors)
        report = ImportReport(
            dry_run=dry_run, sections={name: SectionCounts() for name in document.present}
        )
        run = _Run(errors=errors, report=report)
        # Providers first: deployments and the chain refer to them, routes to deployments.
        appliers: list[tuple[str, Callable[[_Run, Iterable[_Item]], None]]] = [
            ("providers", _apply_providers),
            ("models", _apply_models),
            ("task_routes", _apply_task_routes),
            ("caller_preferences", _apply_caller_preferences),
            ("classification_rules", _apply_classification_rules),
        ]
        for section, apply in appliers:
            apply(run, _keyed(document.items.get(section, [])))
        signalled = False
        if document.chain is not None:
            # fallback_chain_set signals a reload itself; one signal per import is enough.
            signalled = _apply_chain(run, document.chain)
        if errors:
            raise ConfigImportError(errors.in_order())  # leaving the block rolls everything back
        if dry_run:
            transaction.set_rollback(True)  # also drops the chain's reload signal
        elif report.changed and not signalled:
            config_changed_on_commit()
    return report
