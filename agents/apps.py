from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "Agents, keys and budgets"

    def ready(self) -> None:
        # Imported once the apps are loaded: the signal handlers' module imports models.
        from . import signals

        signals.connect()
