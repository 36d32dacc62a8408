"""Prometheus metrics of the request path (exported on /metrics with django-prometheus's)."""

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "gateway_requests_total", "Gateway API requests by endpoint and outcome", ["endpoint", "status"]
)
REQUEST_LATENCY = Histogram(
    "gateway_request_latency_seconds",
    "Time from request to answer (to first byte for streams)",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
UPSTREAM_ATTEMPTS = Counter(
    "gateway_upstream_attempts_total",
    "Attempts against upstream providers",
    ["provider", "outcome"],
)
QUOTA_SKIPS = Counter(
    "gateway_quota_skips_total",
    "Deployments skipped without a call because an upstream quota is spent (docs/adr/0011)",
    ["provider", "reason"],
)
PROVIDER_AUTH_FAILURES = Counter(
    "gateway_provider_auth_failures_total",
    "Upstream rejections of a provider's API key",
    ["provider"],
)
TOKENS = Counter("gateway_tokens_total", "Tokens by model and direction", ["model", "direction"])
COST = Counter("gateway_cost_usd_total", "Cost in USD by model", ["model"])
AUDIT_PENDING_WRITES = Counter(
    "gateway_audit_records_written_total", "Audit records written to the database"
)
ESCALATIONS = Counter(
    "gateway_escalations_total",
    "Answers escalated to the next tier for low confidence",
    ["task_type", "from_tier"],
)
GATE_STATUS = Counter(
    "gateway_gate_status_total", "Answered requests by confidence gate", ["status"]
)
CACHE_LOOKUPS = Counter(
    "gateway_cache_lookups_total",
    "Completion requests by response cache result (hit, miss, bypass)",
    ["result"],
)
CACHE_WRITES = Counter(
    "gateway_cache_writes_total",
    "Response cache writes (stored, too_large) and removals (evicted by a review, cleared)",
    ["action"],
)
