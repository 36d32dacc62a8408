"""Default providers: local Ollama, and the hosted ones (disabled until a key is given)."""

from django.db import migrations

# name, kind, base URL, environment variable holding the key
DEFAULT_PROVIDERS = [
    ("local-ollama", "ollama", "http://127.0.0.1:11434", ""),
    ("cerebras", "openai_compatible", "https://api.cerebras.ai/v1", "CEREBRAS_API_KEY"),
    ("groq", "openai_compatible", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    ("mistral", "openai_compatible", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    ("nvidia-nim", "openai_compatible", "https://integrate.api.nvidia.com/v1", "NVIDIA_API_KEY"),
    (
        "cloudflare",
        "openai_compatible",
        # Replace ACCOUNT_ID with the Cloudflare account id in the admin.
        "https://api.cloudflare.com/client/v4/accounts/ACCOUNT_ID/ai/v1",
        "CLOUDFLARE_API_TOKEN",
    ),
    ("openai", "openai_compatible", "https://api.openai.com/v1", "OPENAI_API_KEY"),
    ("anthropic", "anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY"),
    ("gemini", "gemini", "https://generativelanguage.googleapis.com", "GEMINI_API_KEY"),
]
# Seed ADR-0004's order: free tiers first, paid APIs last.
DEFAULT_CHAIN = ["cerebras", "groq", "mistral", "nvidia-nim", "cloudflare"]


def create_defaults(apps, schema_editor):
    Provider = apps.get_model("providers", "Provider")
    FallbackChainEntry = apps.get_model("providers", "FallbackChainEntry")
    for name, kind, base_url, key_env in DEFAULT_PROVIDERS:
        Provider.objects.get_or_create(
            name=name,
            defaults={
                "kind": kind,
                "base_url": base_url,
                "api_key_env": key_env,
                "enabled": name == "local-ollama",
            },
        )
    for position, name in enumerate(DEFAULT_CHAIN, start=1):
        FallbackChainEntry.objects.get_or_create(
            provider=Provider.objects.get(name=name), defaults={"position": position}
        )


class Migration(migrations.Migration):
    dependencies = [("providers", "0001_initial")]
    operations = [migrations.RunPython(create_defaults, migrations.RunPython.noop)]
