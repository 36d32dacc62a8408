from django.apps import AppConfig


class ReviewsConfig(AppConfig):
    name = "reviews"
    verbose_name = "Review queue"

    def ready(self) -> None:
        # Imported once the apps are loaded: the listeners' modules import models.
        from . import listeners

        listeners.register()
