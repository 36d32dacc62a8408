from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "Agents, keys and budgets"

    def ready(self) -> None:
        from . import signals

        signals.connect()
