"""The default route: unknown task types start on the cheapest tier."""

from django.db import migrations


def create_default_route(apps, schema_editor):
    TaskRoute = apps.get_model("routing", "TaskRoute")
    TaskRoute.objects.get_or_create(
        task_type="default",
        defaults={"start_tier": "fast", "description": "Task types without a route of their own."},
    )


class Migration(migrations.Migration):
    dependencies = [("routing", "0001_initial")]
    operations = [migrations.RunPython(create_default_route, migrations.RunPython.noop)]
