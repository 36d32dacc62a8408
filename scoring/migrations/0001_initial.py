# The validator settings and the tunables moved here from the learning app (docs/adr/0017). Their
# tables stay as they are (each model names its table): this migration only tells Django's state
# that the models now belong to scoring, and moves their content types, so permissions and admin
# history follow them. learning/migrations/0010 removes them from learning's state.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import scoring.models

MOVED = ("validatorconfig", "tunableoverride", "tunablechange")


def move_content_types(apps, schema_editor, source="learning", target="scoring"):
    content_type = apps.get_model("contenttypes", "ContentType")
    for model in MOVED:
        if not content_type.objects.filter(app_label=target, model=model).exists():
            content_type.objects.filter(app_label=source, model=model).update(app_label=target)


def move_content_types_back(apps, schema_editor):
    move_content_types(apps, schema_editor, source="scoring", target="learning")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("learning", "0009_validators_per_caller"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="TunableChange",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("name", models.CharField(max_length=50)),
                        ("task_type", models.CharField(blank=True, max_length=100)),
                        ("caller", models.CharField(blank=True, max_length=100)),
                        (
                            "old_value",
                            models.FloatField(help_text="Empty: it was the default.", null=True),
                        ),
                        (
                            "new_value",
                            models.FloatField(help_text="Empty: back to the default.", null=True),
                        ),
                        ("source", models.CharField(default="admin", max_length=50)),
                        ("reason", models.CharField(blank=True, max_length=300)),
                        ("changed_at", models.DateTimeField(auto_now_add=True, db_index=True)),
                        (
                            "actor",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "db_table": "learning_tunablechange",
                        "ordering": ["-changed_at"],
                    },
                ),
                migrations.CreateModel(
                    name="TunableOverride",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        (
                            "name",
                            models.CharField(
                                choices=scoring.models._tunable_choices, max_length=50
                            ),
                        ),
                        (
                            "task_type",
                            models.SlugField(
                                blank=True, help_text="Empty: all task types.", max_length=100
                            ),
                        ),
                        (
                            "caller",
                            models.SlugField(
                                blank=True,
                                help_text="An agent's name; empty: every caller.",
                                max_length=100,
                            ),
                        ),
                        ("value", models.FloatField()),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                    ],
                    options={
                        "db_table": "learning_tunableoverride",
                        "ordering": ["name", "task_type", "caller"],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("name", "task_type", "caller"),
                                name="unique_tunable_override_caller",
                            )
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="ValidatorConfig",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        (
                            "task_type",
                            models.SlugField(
                                blank=True, help_text="Empty: all task types.", max_length=100
                            ),
                        ),
                        (
                            "caller",
                            models.SlugField(
                                blank=True,
                                help_text="An agent's name; empty: every caller.",
                                max_length=100,
                            ),
                        ),
                        ("validator", models.CharField(max_length=50)),
                        ("enabled", models.BooleanField(default=True)),
                        (
                            "weight",
                            models.FloatField(
                                default=1.0,
                                help_text="0 runs it in shadow mode: recorded in the breakdown, not counted.",
                            ),
                        ),
                        (
                            "params",
                            models.JSONField(
                                blank=True, default=dict, help_text="Validator parameters (JSON)."
                            ),
                        ),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                    ],
                    options={
                        "db_table": "learning_validatorconfig",
                        "ordering": ["task_type", "caller", "validator"],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("task_type", "caller", "validator"),
                                name="unique_validator_config_caller",
                            )
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(move_content_types, move_content_types_back),
    ]
