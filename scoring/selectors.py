"""Reads of gate and validator configuration, in the shape the routing snapshot keeps."""

from __future__ import annotations

from collections import defaultdict

from .gates import GateConfig
from .models import TunableOverride, ValidatorConfig
from .validators.base import ValidatorSetting


def gate_configs() -> tuple[GateConfig, dict[str, GateConfig]]:
    """The global gate config and one per task type that overrides anything (callers' own
    overrides are in ``caller_gate_configs``)."""
    global_layer, per_task, _ = _override_layers()
    default = GateConfig.from_overrides(global_layer)
    return default, {
        task: GateConfig.from_overrides(global_layer, layer) for task, layer in per_task.items()
    }


def caller_gate_configs() -> dict[tuple[str, str], GateConfig]:
    """Gate configs of callers with overrides of their own, by (caller, task type); task type
    "" is the caller's config for task types without a pair of their own. Layers, most specific
    last: global, task type, the caller's for all task types, the caller's for the task type."""
    global_layer, per_task, per_caller = _override_layers()
    configs: dict[tuple[str, str], GateConfig] = {}
    for caller, layers in per_caller.items():
        all_tasks = layers.get("", {})
        for task in {*per_task, *layers} - {""}:
            configs[(caller, task)] = GateConfig.from_overrides(
                global_layer, per_task.get(task, {}), all_tasks, layers.get(task, {})
            )
        configs[(caller, "")] = GateConfig.from_overrides(global_layer, all_tasks)
    return configs


def _override_layers() -> tuple[
    dict[str, float], dict[str, dict[str, float]], dict[str, dict[str, dict[str, float]]]
]:
    global_layer: dict[str, float] = {}
    per_task: dict[str, dict[str, float]] = defaultdict(dict)
    per_caller: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for override in TunableOverride.objects.all():
        if override.caller:
            per_caller[override.caller][override.task_type][override.name] = override.value
        elif override.task_type:
            per_task[override.task_type][override.name] = override.value
        else:
            global_layer[override.name] = override.value
    return global_layer, per_task, per_caller


def validator_settings(
    defaults: tuple[ValidatorSetting, ...],
) -> tuple[tuple[ValidatorSetting, ...], dict[str, tuple[ValidatorSetting, ...]]]:
    """The validators to run: the defaults, changed by rows for all task types, then per task."""
    global_rows, per_task, _ = _validator_layers()

    def merged(*layers: dict[str, ValidatorSetting]) -> tuple[ValidatorSetting, ...]:
        return _merged(defaults, *layers)

    return merged(global_rows), {task: merged(global_rows, rows) for task, rows in per_task.items()}


def caller_validator_settings(
    defaults: tuple[ValidatorSetting, ...],
) -> dict[tuple[str, str], tuple[ValidatorSetting, ...]]:
    """The validators of callers with rows of their own, by (caller, task type); task type ""
    is the caller's set for task types without a pair of their own (layers as for the gates)."""
    global_rows, per_task, per_caller = _validator_layers()
    settings: dict[tuple[str, str], tuple[ValidatorSetting, ...]] = {}
    for caller, layers in per_caller.items():
        all_tasks = layers.get("", {})
        for task in {*per_task, *layers} - {""}:
            settings[(caller, task)] = _merged(
                defaults, global_rows, per_task.get(task, {}), all_tasks, layers.get(task, {})
            )
        settings[(caller, "")] = _merged(defaults, global_rows, all_tasks)
    return settings


def _merged(
    defaults: tuple[ValidatorSetting, ...], *layers: dict[str, ValidatorSetting]
) -> tuple[ValidatorSetting, ...]:
    by_name = {s.name: s for s in defaults}
    for layer in layers:
        by_name.update(layer)
    return tuple(s for s in by_name.values() if s.enabled)


def _validator_layers() -> tuple[
    dict[str, ValidatorSetting],
    dict[str, dict[str, ValidatorSetting]],
    dict[str, dict[str, dict[str, ValidatorSetting]]],
]:
    global_rows: dict[str, ValidatorSetting] = {}
    per_task: dict[str, dict[str, ValidatorSetting]] = defaultdict(dict)
    per_caller: dict[str, dict[str, dict[str, ValidatorSetting]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for row in ValidatorConfig.objects.all():
        setting = ValidatorSetting(
            name=row.validator, weight=row.weight, enabled=row.enabled, params=dict(row.params)
        )
        if row.caller:
            per_caller[row.caller][row.task_type][row.validator] = setting
        elif row.task_type:
            per_task[row.task_type][row.validator] = setting
        else:
            global_rows[row.validator] = setting
    return global_rows, per_task, per_caller
