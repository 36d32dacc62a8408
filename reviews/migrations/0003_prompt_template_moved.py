# PromptTemplate now belongs to the routing app (routing/migrations/0006_prompt_template.py), which
# keeps its table: only Django's state changes here.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("reviews", "0002_explored_reason"),
        ("routing", "0006_prompt_template"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="PromptTemplate")],
            database_operations=[],
        ),
    ]
