"""Create the benchmark's routing config in the gateway database (run by bench/run.py).

Usage: ``DJANGO_SETTINGS_MODULE=gateway_project.settings python bench/setup_gateway.py URL``
where URL is the simulator's OpenAI base URL (``http://127.0.0.1:PORT/v1``). It is idempotent:
the provider and its deployments are updated in place when they already exist. The writes go
through the app's own services so the usual config-change signal is sent.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROVIDER_NAME = "bench-sim"
MODELS = ("bench-model", "bench-slow")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    base_url = argv[1]
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
    import django

    django.setup()

    from providers.models import ModelDeployment, Provider, Tier
    from providers.services import config_object_save, provider_save

    provider = Provider.objects.filter(name=PROVIDER_NAME).first() or Provider(name=PROVIDER_NAME)
    provider.kind = Provider.Kind.OPENAI_COMPATIBLE
    provider.base_url = base_url
    provider.enabled = True
    provider.full_clean()
    provider_save(provider=provider)

    for model in MODELS:
        deployment = ModelDeployment.objects.filter(
            provider=provider, upstream_model=model, tier=Tier.FAST
        ).first() or ModelDeployment(provider=provider, upstream_model=model, tier=Tier.FAST)
        deployment.public_name = model
        deployment.enabled = True
        deployment.full_clean()
        config_object_save(obj=deployment)

    names = ", ".join(MODELS)
    print(f"provider {PROVIDER_NAME} -> {base_url}; deployments (tier fast): {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
