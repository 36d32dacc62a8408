from decimal import Decimal

from django.db import migrations


def create_default_cap(apps, schema_editor):  # type: ignore[no-untyped-def]
    """A hard cap of $10 a day on everything, as the gateway's first design asked: an admin raises
    it or switches it off in the admin."""
    budget = apps.get_model("agents", "Budget")
    if not budget.objects.filter(scope="global", period="day").exists():
        budget.objects.create(scope="global", period="day", limit_usd=Decimal("10"))


class Migration(migrations.Migration):
    dependencies = [("agents", "0003_profiles_budgets_spend")]

    operations = [migrations.RunPython(create_default_cap, migrations.RunPython.noop)]
