from django.apps import AppConfig

from gateway_project.versions import ROUTING_CONFIG_VERSION


class RoutingConfig(AppConfig):
    name = "routing"
    verbose_name = "Routing and audit"

    def ready(self) -> None:
        # Imported once the apps are loaded: the configuration's module imports models.
        from .config import snapshot_cache

        # Any app may change the routing configuration (gateway_project/versions.py); this
        # process drops its snapshot at once, the others when they see the new version.
        ROUTING_CONFIG_VERSION.on_bump(snapshot_cache.clear)
