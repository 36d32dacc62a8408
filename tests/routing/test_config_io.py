"""Configuration as code: ``gateway_config export|import`` and the services behind it.

The database starts with the migrations' defaults: nine providers (local-ollama enabled), the
fallback chain cerebras → groq → mistral → nvidia-nim → cloudflare, and the ``default`` route.
"""

from __future__ import annotations

import io
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from pytest_django import DjangoCaptureOnCommitCallbacks

from providers.models import FallbackChainEntry, ModelDeployment, Provider
from routing.config_io import ConfigImportError, config_export, config_import
from routing.models import CallerPreference, ClassificationRule, TaskRoute

pytestmark = pytest.mark.django_db

EXAMPLE = """\
providers:
  - {name: local-ollama, kind: ollama, base_url: "http://127.0.0.1:11434", api_key_env: null}
models:
  - {name: "qwen2.5:7b", provider: local-ollama, tier: fast, input_cost_per_mtok: 0, output_cost_per_mtok: 0, context_window: 32768}
task_routes:
  - {task_type: analysis, start_tier: fast}
fallback_chain: [cerebras, groq, mistral, nvidia-nim, cloudflare]
"""  # the long model line is the documented format, kept as written


def run_command(*args: str) -> str:
    out = io.StringIO()
    call_command("gateway_config", *args, stdout=out)
    return out.getvalue()


def chain() -> list[str]:
    return list(
        FallbackChainEntry.objects.order_by("position").values_list("provider__name", flat=True)
    )


def seed_richer_config() -> None:
    """Something in every section, with values that do not survive careless formatting."""
    groq = Provider.objects.get(name="groq")
    groq.set_api_key("gsk-super-secret-key")
    groq.enabled = True
    groq.max_concurrent_requests = 4
    groq.daily_request_quota = 14400
    groq.daily_token_quota = 500_000
    groq.save()
    ollama = Provider.objects.get(name="local-ollama")
    ModelDeployment.objects.create(
        provider=ollama, upstream_model="qwen2.5:7b", public_name="qwen-fast", tier="fast"
    )
    ModelDeployment.objects.create(
        provider=groq,
        upstream_model="llama-3.3-70b-versatile",
        public_name="llama-70b",
        tier="external",
        input_cost_per_mtok=Decimal("0.59"),
        output_cost_per_mtok=Decimal("0.000001"),
        context_window=131072,
        weight=3,
        enabled=False,
    )
    TaskRoute.objects.create(task_type="coding", pinned_model="llama-70b", description="yes")
    CallerPreference.objects.create(caller="ci-bot", start_tier="medium")
    CallerPreference.objects.create(caller="ci-bot", task_type="coding", pinned_model="qwen-fast")
    ClassificationRule.objects.create(task_type="coding", match_type="regex", pattern=r"\bdef\b: #")
    ClassificationRule.objects.create(task_type="analysis", pattern="analyse, compare", priority=5)


def test_example_imports_dry_run_then_create_then_unchanged(
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    """The documented example: a dry run writes nothing, a real run creates, a rerun is a no-op."""
    with django_capture_on_commit_callbacks() as callbacks:
        report = config_import(text=EXAMPLE, dry_run=True)
    assert report.dry_run
    assert report.sections["models"].created == 1
    assert report.sections["task_routes"].created == 1
    assert report.sections["providers"].unchanged == 1  # the migration's local-ollama already
    assert report.sections["fallback_chain"].unchanged == 1
    assert not ModelDeployment.objects.exists()
    assert not TaskRoute.objects.filter(task_type="analysis").exists()
    assert callbacks == []  # a dry run never tells the gateway to reload

    with django_capture_on_commit_callbacks() as callbacks:
        report = config_import(text=EXAMPLE, dry_run=False)
    assert report.changes == [
        "create model qwen2.5:7b (local-ollama, fast)",
        "create task route analysis",
    ]
    assert len(callbacks) == 1  # one reload signal for the whole import
    deployment = ModelDeployment.objects.get()
    assert (deployment.provider.name, deployment.public_name, deployment.tier) == (
        "local-ollama",
        "qwen2.5:7b",
        "fast",
    )
    assert deployment.context_window == 32768
    assert TaskRoute.objects.get(task_type="analysis").start_tier == "fast"

    with django_capture_on_commit_callbacks() as callbacks:
        report = config_import(text=EXAMPLE, dry_run=False)
    assert not report.changed
    assert all(c.created == c.updated == 0 for c in report.sections.values())
    assert callbacks == []


def test_cli_import_prints_summary_and_dry_run_writes_nothing(tmp_path: Path) -> None:
    """The command reports per-section counts and the changes; --dry-run leaves the database."""
    path = tmp_path / "gateway.yaml"
    path.write_text(EXAMPLE)

    output = run_command("import", str(path), "--dry-run")
    assert "nothing was written" in output
    assert "models: 1 created, 0 updated, 0 unchanged" in output
    assert "create task route analysis" in output
    assert not ModelDeployment.objects.exists()

    output = run_command("import", str(path))
    assert f"Imported {path}." in output
    assert ModelDeployment.objects.count() == 1

    assert "No changes." in run_command("import", str(path))


def test_export_import_round_trip_is_unchanged_and_byte_identical() -> None:
    """Importing an export changes nothing, and exporting again yields the same bytes."""
    seed_richer_config()
    exported = config_export()

    report = config_import(text=exported, dry_run=False)

    assert report.changes == []
    assert set(report.sections) == {
        "providers",
        "models",
        "task_routes",
        "caller_preferences",
        "classification_rules",
        "fallback_chain",
    }
    assert report.sections["providers"].unchanged == 9
    assert report.sections["classification_rules"].unchanged == 2
    assert config_export() == exported


def test_export_restores_deleted_objects_exactly() -> None:
    """An export recreates what was deleted, field for field (costs, flags, routes, rules)."""
    seed_richer_config()
    exported = config_export()
    ModelDeployment.objects.all().delete()
    TaskRoute.objects.filter(task_type="coding").delete()
    CallerPreference.objects.all().delete()
    ClassificationRule.objects.all().delete()
    FallbackChainEntry.objects.all().delete()

    report = config_import(text=exported, dry_run=False)

    assert report.sections["models"].created == 2
    assert report.sections["caller_preferences"].created == 2
    assert report.sections["fallback_chain"].updated == 1
    assert config_export() == exported
    llama = ModelDeployment.objects.get(public_name="llama-70b")
    assert llama.output_cost_per_mtok == Decimal("0.000001")
    assert (llama.weight, llama.enabled) == (3, False)


def test_free_tier_quotas_are_set_cleared_and_checked() -> None:
    """A provider's declared daily quotas travel in the file; null clears one, 0 is refused."""
    text = textwrap.dedent(
        """\
        providers:
          - {name: cerebras, kind: openai_compatible, base_url: "https://api.cerebras.ai/v1",
             daily_request_quota: 14400, daily_token_quota: 1000000}
        """
    )
    config_import(text=text, dry_run=False)
    cerebras = Provider.objects.get(name="cerebras")
    assert (cerebras.daily_request_quota, cerebras.daily_token_quota) == (14400, 1_000_000)
    assert "daily_request_quota: 14400" in config_export()

    cleared = text.replace("daily_token_quota: 1000000", "daily_token_quota: null")
    report = config_import(text=cleared, dry_run=False)
    cerebras.refresh_from_db()
    assert cerebras.daily_token_quota is None
    assert any("daily_token_quota 1000000 -> None" in change for change in report.changes)

    with pytest.raises(ConfigImportError) as error:
        config_import(text=text.replace("14400", "0"), dry_run=False)
    assert str(error.value) == (
        "line 3: providers[0].daily_request_quota: Ensure this value is greater than or equal to 1."
    )
    cerebras.refresh_from_db()
    assert cerebras.daily_request_quota == 14400


def test_errors_name_line_and_field_and_nothing_is_written() -> None:
    """Every error is reported with its line and path, and a partly valid file writes nothing."""
    text = textwrap.dedent(
        """\
        providers:
          - name: new-provider
            kind: openai_compatible
            base_url: https://api.example.com/v1
        models:
          - {name: good-model, provider: new-provider, tier: fast}
          - {name: big, provider: local-ollama, tier: huge}
          - {name: lost, provider: nowhere, tier: fast}
          - {name: odd, provider: local-ollama, tier: fast, colour: red}
        task_routes:
          - {task_type: analysis, pinned_model: ghost}
        classification_rules:
          - {task_type: coding, match_type: regex, pattern: "(unclosed"}
        """
    )
    with pytest.raises(ConfigImportError) as caught:
        config_import(text=text, dry_run=False)

    assert caught.value.errors == [
        "line 7: models[1].tier: 'huge' is not one of fast, medium, large, external",
        "line 8: models[2].provider: no provider 'nowhere' in the file or database",
        "line 9: models[3].colour: unknown field (known: name, public_name, provider, tier, "
        "input_cost_per_mtok, output_cost_per_mtok, context_window, weight, enabled)",
        "line 11: task_routes[0].pinned_model: no model with public name 'ghost' in the file or "
        "database",
        "line 13: classification_rules[0].pattern: not a valid regular expression: missing ), "
        "unterminated subpattern at position 0",
    ]
    # The valid provider and model were rolled back with the rest.
    assert not Provider.objects.filter(name="new-provider").exists()
    assert not ModelDeployment.objects.exists()


def test_api_key_is_rejected_with_a_pointer_to_api_key_env() -> None:
    """A provider carrying a key is refused: secrets go in api_key_env or the admin."""
    text = textwrap.dedent(
        """\
        providers:
          - name: groq
            kind: openai_compatible
            base_url: https://api.groq.com/openai/v1
            api_key: gsk-should-never-be-here
        """
    )
    with pytest.raises(ConfigImportError) as caught:
        config_import(text=text, dry_run=False)

    [error] = caught.value.errors
    assert error.startswith("line 5: providers[0].api_key: ")
    assert "api_key_env" in error and "admin" in error
    assert not Provider.objects.get(name="groq").has_stored_key


def test_yaml_syntax_error_reports_its_line() -> None:
    """Broken YAML is one error naming the line where the parser gave up."""
    text = "providers:\n  - name: groq\n    kind: [openai_compatible\n  - name: other\n"
    with pytest.raises(ConfigImportError) as caught:
        config_import(text=text, dry_run=False)

    [error] = caught.value.errors
    assert error.startswith("line 4: invalid YAML: ")


def test_model_validation_errors_are_line_numbered() -> None:
    """What the models' full_clean() rejects comes back with the item's line and field name."""
    text = textwrap.dedent(
        """\
        providers:
          - {name: local-ollama, kind: ollama, base_url: "http://127.0.0.1:11434"}
          - name: Not A Slug
            kind: ollama
            base_url: http://127.0.0.1:11435
          - name: slow
            kind: ollama
            base_url: http://127.0.0.1:11436
            total_timeout_s: 10
            first_byte_timeout_s: 20
        task_routes:
          - {task_type: analysis}
        """
    )
    with pytest.raises(ConfigImportError) as caught:
        config_import(text=text, dry_run=True)

    errors = caught.value.errors
    assert errors[0].startswith("line 3: providers[1].name: Enter a valid “slug”")
    assert errors[1:] == [
        "line 10: providers[2].first_byte_timeout_s: Cannot exceed the total timeout.",
        "line 12: task_routes[0]: Set a starting tier or a pinned model.",
    ]


def test_wrong_types_unknown_sections_and_repeats_are_all_reported() -> None:
    """Type errors, unknown sections, repeated keys and repeated items are each reported."""
    text = textwrap.dedent(
        """\
        providers:
          - {name: p1, kind: ollama, base_url: "ftp://files.example.com", enabled: "yes"}
          - {name: p2, kind: ollama, base_url: "http://127.0.0.1:1", max_concurrent_requests: 1.5}
        models:
          - {name: m, provider: local-ollama, tier: fast, tier: large}
          - {name: x, provider: local-ollama, tier: fast}
          - {name: x, provider: local-ollama, tier: fast}
        fallback_chain: [groq, groq]
        routes: []
        """
    )
    with pytest.raises(ConfigImportError) as caught:
        config_import(text=text, dry_run=False)

    assert caught.value.errors == [
        "line 2: providers[0].enabled: expected a boolean (true or false), got a string ('yes')",
        "line 2: providers[0].base_url: 'ftp://files.example.com' is not an http(s) URL",
        "line 3: providers[1].max_concurrent_requests: expected an integer, got a number (1.5)",
        "line 5: models[0].tier: given more than once",
        "line 7: models[2]: same provider, name, tier as models[1] (line 6)",
        "line 8: fallback_chain[1]: 'groq' is listed more than once",
        "line 9: routes: unknown section (known: providers, models, task_routes, "
        "caller_preferences, classification_rules, fallback_chain)",
    ]


def test_cli_reports_every_error_and_exits_with_status_1(tmp_path: Path) -> None:
    """An invalid file makes the command fail (status 1) listing all errors, writing nothing."""
    path = tmp_path / "bad.yaml"
    path.write_text("models:\n  - {name: a, provider: nowhere, tier: huge}\n")

    with pytest.raises(CommandError) as caught:
        run_command("import", str(path))

    message = str(caught.value)
    assert caught.value.returncode == 1
    assert "2 errors, nothing was imported" in message
    assert "line 2: models[0].provider: no provider 'nowhere'" in message
    assert "line 2: models[0].tier: 'huge' is not one of" in message


def test_fallback_chain_is_replaced_in_the_given_order(
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    """A fallback_chain section makes the chain exactly that list, in that order."""
    with django_capture_on_commit_callbacks() as callbacks:
        config_import(text="fallback_chain: [groq]\n", dry_run=True)
    assert chain() == ["cerebras", "groq", "mistral", "nvidia-nim", "cloudflare"]
    assert callbacks == []  # the dry run's chain write and its reload signal were rolled back

    with django_capture_on_commit_callbacks() as callbacks:
        report = config_import(text="fallback_chain: [mistral, openai, cerebras]\n", dry_run=False)

    assert chain() == ["mistral", "openai", "cerebras"]
    assert report.sections["fallback_chain"].updated == 1
    assert report.changes == [
        "fallback chain: [cerebras, groq, mistral, nvidia-nim, cloudflare] -> "
        "[mistral, openai, cerebras]"
    ]
    assert len(callbacks) == 1


def test_absent_fields_are_kept_and_changes_are_listed() -> None:
    """An update touches only the fields the file gives, and reports each old -> new value."""
    ollama = Provider.objects.get(name="local-ollama")
    ollama.total_timeout_s = 120.0
    ollama.save()
    text = textwrap.dedent(
        """\
        providers:
          - {name: local-ollama, kind: ollama, base_url: "http://127.0.0.1:11500", enabled: false}
        task_routes:
          - {task_type: default, pinned_model: "qwen2.5:7b"}
        models:
          - {name: "qwen2.5:7b", provider: local-ollama, tier: fast}
        """
    )
    report = config_import(text=text, dry_run=False)

    ollama.refresh_from_db()
    assert (ollama.base_url, ollama.enabled, ollama.total_timeout_s) == (
        "http://127.0.0.1:11500",
        False,
        120.0,
    )
    assert (
        "update provider local-ollama: base_url 'http://127.0.0.1:11434' -> " in report.changes[0]
    )
    # Naming only a pinned model clears the starting tier: the target is one setting.
    default = TaskRoute.objects.get(task_type="default")
    assert (default.start_tier, default.pinned_model) == ("", "qwen2.5:7b")
    assert default.description == "Task types without a route of their own."


def test_export_never_contains_a_secret(tmp_path: Path) -> None:
    """A stored API key never reaches the export, in any form; only api_key_env is written."""
    groq = Provider.objects.get(name="groq")
    groq.set_api_key("gsk-super-secret-key")
    groq.save()
    output = tmp_path / "gateway.yaml"

    run_command("export", "--output", str(output))

    text = output.read_text()
    assert "gsk-super-secret-key" not in text
    assert groq.api_key_encrypted not in text
    assert "api_key:" not in text
    assert "api_key_encrypted" not in text
    assert "api_key_env: GROQ_API_KEY" in text
    assert run_command("export") == text  # stdout carries the same document


def test_import_reads_standard_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """FILE may be '-' to read the configuration from standard input."""
    monkeypatch.setattr("sys.stdin", io.StringIO(EXAMPLE))

    output = run_command("import", "-")

    assert "Imported standard input." in output
    assert ModelDeployment.objects.filter(upstream_model="qwen2.5:7b").exists()
