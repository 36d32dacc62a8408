from django.apps import AppConfig


class ScoringConfig(AppConfig):
    """Validators, confidence gates and their tunables: how every answer is scored and gated
    (docs/adr/0003-confidence-gates-and-validators.md)."""

    name = "scoring"
    verbose_name = "Validators and gates"
