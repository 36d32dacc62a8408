# PromptTemplate is routing configuration (part of every process's routing snapshot) and moved here
# from the reviews app (docs/adr/0017). Its table stays as it is (the model names it): this
# migration only tells Django's state that the model belongs to routing now, and moves its
# content type so permissions and admin history follow. reviews/migrations/0003 removes it from
# reviews' state.

import django.core.validators
from django.db import migrations, models


def move_content_type(apps, schema_editor, source="reviews", target="routing"):
    content_type = apps.get_model("contenttypes", "ContentType")
    if not content_type.objects.filter(app_label=target, model="prompttemplate").exists():
        content_type.objects.filter(app_label=source, model="prompttemplate").update(
            app_label=target
        )


def move_content_type_back(apps, schema_editor):
    move_content_type(apps, schema_editor, source="routing", target="reviews")


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("reviews", "0002_explored_reason"),
        ("routing", "0005_audit_dead_letter"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="PromptTemplate",
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
                        ("task_type", models.SlugField(max_length=100, unique=True)),
                        ("system_prompt", models.TextField(blank=True)),
                        (
                            "include_examples",
                            models.BooleanField(
                                default=False,
                                help_text="Add the latest approved or corrected answers as examples.",
                            ),
                        ),
                        (
                            "max_examples",
                            models.PositiveSmallIntegerField(
                                default=3,
                                validators=[
                                    django.core.validators.MinValueValidator(1),
                                    django.core.validators.MaxValueValidator(20),
                                ],
                            ),
                        ),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                    ],
                    options={
                        "db_table": "reviews_prompttemplate",
                        "ordering": ["task_type"],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(move_content_type, move_content_type_back),
    ]
