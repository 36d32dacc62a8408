# ValidatorConfig, TunableOverride and TunableChange now belong to the scoring app
# (scoring/migrations/0001_initial.py), which keeps their tables: only Django's state changes here.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("learning", "0009_validators_per_caller"),
        ("scoring", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(model_name="tunablechange", name="actor"),
                migrations.DeleteModel(name="TunableOverride"),
                migrations.DeleteModel(name="ValidatorConfig"),
                migrations.DeleteModel(name="TunableChange"),
            ],
            database_operations=[],
        ),
    ]
