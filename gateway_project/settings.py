"""Settings, read from the environment.

Nothing set: a SQLite file, an in-process cache and an embedded (filesystem) Celery broker, so the
gateway runs with one command. ``DATABASE_URL`` switches to PostgreSQL, ``REDIS_URL`` to Redis for
the cache, the shared hot-path state and the Celery broker.
See docs/adr/0008-embedded-defaults-and-shared-state.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("GATEWAY_DATA_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


DEBUG = env_bool("DEBUG", True)
TESTING = env_bool("GATEWAY_TESTING", False)

_DEV_SECRET_KEY = "dev-only-insecure-secret-key-do-not-use-in-production"
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off: export SECRET_KEY=<50+ random characters>."
        )
    SECRET_KEY = _DEV_SECRET_KEY
elif not DEBUG and (SECRET_KEY == _DEV_SECRET_KEY or len(SECRET_KEY) < 50):
    raise ImproperlyConfigured("SECRET_KEY is too weak for production: use 50+ random characters.")

ALLOWED_HOSTS = [h for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h]
if DEBUG:
    ALLOWED_HOSTS += ["testserver", "[::1]"]
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_celery_beat",
    "django_prometheus",
    "adminsortable2",
    "agents",
    "providers",
    "scoring",
    "routing",
    "learning",
    "reviews",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Before anything reads the query or form: a NUL would reach the database (ADR 0014).
    "gateway_project.middleware.RefuseNulMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "gateway_project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "gateway_project.wsgi.application"
ASGI_APPLICATION = "gateway_project.asgi.application"

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    # Mapping: dj_database_url types its config as a TypedDict, not a dict.
    DATABASES: dict[str, Mapping[str, Any]] = {
        "default": dj_database_url.parse(DATABASE_URL, conn_max_age=600, conn_health_checks=True)
    }
else:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "gateway.sqlite3",
            # WAL and immediate transactions let the gateway, the worker and beat share the file.
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
            "TEST": {"NAME": DATA_DIR / "test-gateway.sqlite3"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache, shared state and Celery ---------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # Apart from the shared state's "gw:" namespace (gateway_project/state_keys.py).
            "KEY_PREFIX": os.environ.get("GATEWAY_KEY_PREFIX", "gw-cache"),
        }
    }
    CELERY_BROKER_URL = REDIS_URL
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    _queue_dir = DATA_DIR / "celery-broker"
    (_queue_dir / "out").mkdir(parents=True, exist_ok=True)
    (_queue_dir / "processed").mkdir(parents=True, exist_ok=True)
    (_queue_dir / "control").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir / "out"),
        "data_folder_out": str(_queue_dir / "out"),
        "processed_folder": str(_queue_dir / "processed"),
        # Exchange bindings; kombu's default is a "control" folder in the working directory.
        "control_folder": str(_queue_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"

# --- Auth, i18n, static -----------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # collectstatic's target; WhiteNoise expects it
# The admin's CSS and JS, served by the gateway itself (straight from the apps, so no collectstatic).
WHITENOISE_USE_FINDERS = True

# --- Production hardening (checked by `manage.py check --deploy`) ------------------------------
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    # The API is called over plain HTTP on loopback by local agents; exempt it from the redirect.
    SECURE_REDIRECT_EXEMPT = [r"^v1/", r"^health", r"^metrics"]

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # The gateway's body rules (size, depth, NUL) and error shape on DRF endpoints too (ADR 0014).
    "DEFAULT_PARSER_CLASSES": ["gateway_project.drf.GatewayJSONParser"],
    "EXCEPTION_HANDLER": "gateway_project.drf.exception_handler",
    "UNAUTHENTICATED_USER": None,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.request": {"level": "ERROR"},
        # One line per upstream call would drown everything else.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        "aiohttp.access": {"level": "WARNING"},
    },
}

# --- Gateway tunables -------------------------------------------------------------------------
# Secrets at rest (provider API keys) are encrypted with this key; in DEBUG it derives from
# SECRET_KEY so a new user needs nothing. See providers/crypto.py.
GATEWAY_ENCRYPTION_KEY = os.environ.get("GATEWAY_ENCRYPTION_KEY", "")
if not GATEWAY_ENCRYPTION_KEY and not DEBUG:
    raise ImproperlyConfigured(
        "GATEWAY_ENCRYPTION_KEY must be set when DEBUG is off (python -c 'from cryptography."
        "fernet import Fernet; print(Fernet.generate_key().decode())')."
    )


class GatewaySettings(TypedDict):
    """The value types of ``GATEWAY`` (mixed, so without this mypy sees each value as ``object``)."""

    MAX_RETRIES: int
    BACKOFF_BASE_S: float
    BACKOFF_CAP_S: float
    RETRY_AFTER_CAP_S: float
    FAILURE_THRESHOLD: int
    COOLDOWN_S: float
    MAX_COOLDOWN_S: float
    AUTH_FAILURE_COOLDOWN_S: float
    REQUEST_DEADLINE_S: float
    MAX_BODY_BYTES: int
    MAX_JSON_DEPTH: int
    BODY_READ_TIMEOUT_S: float
    MAX_OUTPUT_TOKENS: int
    AUDIT_STORE: str
    AUDIT_FLUSH_INTERVAL_S: float
    AUDIT_BATCH_SIZE: int
    AUDIT_MAX_PENDING: int
    SHARED_STATE_READ_CACHE_S: float
    CONFIG_CHECK_INTERVAL_S: float
    API_KEY_CACHE_S: float
    ACCESS_CHECK_INTERVAL_S: float
    BUDGET_MAX_OUTPUT_TOKENS: int
    FALLBACK_PROCESSES: int
    BUDGET_ALERT_WEBHOOK_URL: str
    OUTBOUND_ALLOWED_HOSTS: tuple[str, ...]
    HEALTH_CHECK_INTERVAL_S: float
    HEALTH_DOWN_AFTER_FAILED_CHECKS: int
    CLASSIFIER_MODEL: str
    EXPLORATION: bool
    DEFAULT_TASK_TYPE: str
    CACHE_ENABLED: bool
    CACHE_TTL_S: int
    CACHE_MAX_TTL_S: int
    CACHE_MAX_ENTRY_BYTES: int
    CACHE_LOCAL_MAX_BYTES: int
    TOKENIZER: str


# Signs verdict callbacks to agents (HMAC-SHA256 of the body); give it to the agents that verify.
GATEWAY_CALLBACK_SECRET = os.environ.get("GATEWAY_CALLBACK_SECRET", "")

GATEWAY: GatewaySettings = {
    # Retries of one deployment before falling over to the next (transient errors only).
    "MAX_RETRIES": env_int("GATEWAY_MAX_RETRIES", 1),
    "BACKOFF_BASE_S": env_float("GATEWAY_BACKOFF_BASE_S", 0.1),
    "BACKOFF_CAP_S": env_float("GATEWAY_BACKOFF_CAP_S", 2.0),
    # A Retry-After longer than this is not waited for: the deployment cools down instead.
    "RETRY_AFTER_CAP_S": env_float("GATEWAY_RETRY_AFTER_CAP_S", 2.0),
    # Circuit breaker: this many consecutive failures cool a deployment down for COOLDOWN_S.
    "FAILURE_THRESHOLD": env_int("GATEWAY_FAILURE_THRESHOLD", 3),
    "COOLDOWN_S": env_float("GATEWAY_COOLDOWN_S", 30.0),
    "MAX_COOLDOWN_S": env_float("GATEWAY_MAX_COOLDOWN_S", 600.0),
    "AUTH_FAILURE_COOLDOWN_S": env_float("GATEWAY_AUTH_FAILURE_COOLDOWN_S", 300.0),
    "REQUEST_DEADLINE_S": env_float("GATEWAY_REQUEST_DEADLINE_S", 120.0),
    "MAX_BODY_BYTES": env_int("GATEWAY_MAX_BODY_BYTES", 2 * 1024 * 1024),
    # Deepest nesting of a JSON body (a JSON schema in response_format needs some room).
    "MAX_JSON_DEPTH": env_int("GATEWAY_MAX_JSON_DEPTH", 64),
    # A request body must have arrived whole this long after the request began, or it gets 408.
    "BODY_READ_TIMEOUT_S": env_float("GATEWAY_BODY_READ_TIMEOUT_S", 30.0),
    "MAX_OUTPUT_TOKENS": env_int("GATEWAY_MAX_OUTPUT_TOKENS", 131072),
    # "full" keeps prompts and outputs in the audit log; "hash" keeps only their SHA-256.
    "AUDIT_STORE": os.environ.get("GATEWAY_AUDIT_STORE", "full"),
    "AUDIT_FLUSH_INTERVAL_S": env_float("GATEWAY_AUDIT_FLUSH_INTERVAL_S", 0.25),
    "AUDIT_BATCH_SIZE": env_int("GATEWAY_AUDIT_BATCH_SIZE", 500),
    # Audit records a process may hold unwritten; at this many it refuses completion requests
    # (503 audit_backlog) rather than answer requests it cannot record (docs/adr/0007).
    "AUDIT_MAX_PENDING": env_int("GATEWAY_AUDIT_MAX_PENDING", 50_000),
    # With Redis, how long a process reuses one read of the cooldown keys (its own writes apply at once).
    "SHARED_STATE_READ_CACHE_S": env_float("GATEWAY_SHARED_STATE_READ_CACHE_S", 0.25),
    # How often a process asks the shared cache whether the routing config changed.
    "CONFIG_CHECK_INTERVAL_S": env_float("GATEWAY_CONFIG_CHECK_INTERVAL_S", 0.5),
    # Cached callers (keys, limits, budgets) are dropped at once when the access version moves
    # (checked every ACCESS_CHECK_INTERVAL_S), so a revoked key stops within a second everywhere.
    "API_KEY_CACHE_S": env_float("GATEWAY_API_KEY_CACHE_S", 60.0),
    "ACCESS_CHECK_INTERVAL_S": env_float("GATEWAY_ACCESS_CHECK_INTERVAL_S", 0.5),
    # A request under a budget without max_tokens is capped at this many output tokens upstream,
    # so its reserved worst-case cost really is its worst case.
    "BUDGET_MAX_OUTPUT_TOKENS": env_int("GATEWAY_BUDGET_MAX_OUTPUT_TOKENS", 4096),
    # While Redis is unreachable each process enforces 1/N of every rate limit and of every
    # budget's remainder (N gateway processes share them); docs/adr/0012-limits-and-budgets.md.
    "FALLBACK_PROCESSES": env_int("GATEWAY_FALLBACK_PROCESSES", 4),
    # Where budget alerts are POSTed (signed) when a budget names no URL of its own.
    "BUDGET_ALERT_WEBHOOK_URL": os.environ.get("GATEWAY_BUDGET_ALERT_WEBHOOK_URL", ""),
    # Hosts (names or addresses, comma-separated) that callbacks and webhooks may reach although
    # they are internal; every other outbound URL must lead to public addresses (ADR 0015).
    "OUTBOUND_ALLOWED_HOSTS": tuple(
        h.strip()
        for h in os.environ.get("GATEWAY_OUTBOUND_ALLOWED_HOSTS", "").split(",")
        if h.strip()
    ),
    "HEALTH_CHECK_INTERVAL_S": env_float("GATEWAY_HEALTH_CHECK_INTERVAL_S", 30.0),
    # Routing skips a provider after this many failed health checks in a row; a real success
    # clears the mark (docs/adr/0002-cost-first-tiers.md).
    "HEALTH_DOWN_AFTER_FAILED_CHECKS": env_int("GATEWAY_HEALTH_DOWN_AFTER_FAILED_CHECKS", 3),
    # Whether a share of routed traffic explores neighbouring tiers (tunable exploration_share).
    "EXPLORATION": env_bool("GATEWAY_EXPLORATION", True),
    # Public model name of a cheap model that classifies inputs no rule matched (optional).
    "CLASSIFIER_MODEL": os.environ.get("GATEWAY_CLASSIFIER_MODEL", ""),
    "DEFAULT_TASK_TYPE": os.environ.get("GATEWAY_DEFAULT_TASK_TYPE", "general"),
    # The response cache (docs/adr/0010-response-cache.md): approved answers to identical requests
    # of one agent, in Redis when configured, else in this process (at most CACHE_LOCAL_MAX_BYTES).
    "CACHE_ENABLED": env_bool("GATEWAY_CACHE_ENABLED", True),
    # Kept this long unless the task route says otherwise (0 there: never cached).
    "CACHE_TTL_S": env_int("GATEWAY_CACHE_TTL_S", 3600),
    # The longest a request may ask an answer to be kept (X-Gateway-Cache-TTL, cache_ttl).
    "CACHE_MAX_TTL_S": env_int("GATEWAY_CACHE_MAX_TTL_S", 7 * 86400),
    # Answers whose entry is larger are not cached.
    "CACHE_MAX_ENTRY_BYTES": env_int("GATEWAY_CACHE_MAX_ENTRY_BYTES", 256 * 1024),
    "CACHE_LOCAL_MAX_BYTES": env_int("GATEWAY_CACHE_LOCAL_MAX_BYTES", 64 * 1024 * 1024),
    # The BPE vocabulary that counts tokens when a provider reports no usage ("cl100k_base",
    # "o200k_base"; "none": about four characters a token). Loaded on first need, about 100 MB.
    "TOKENIZER": os.environ.get("GATEWAY_TOKENIZER", "cl100k_base"),
}
