"""Prometheus metrics of the request path (exported on /metrics with django-prometheus's)."""

from prometheus_client import Counter, Gauge, Histogram

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
# Set by each process's audit writer; with PROMETHEUS_MULTIPROC_DIR, /metrics adds up the live
# processes' values.
AUDIT_PENDING = Gauge(
    "gateway_audit_pending",
    "Audit records queued in memory, not yet written",
    multiprocess_mode="livesum",
)
AUDIT_WRITE_FAILURES = Counter(
    "gateway_audit_write_failures_total",
    "Audit writes that failed, by kind: unavailable (the database; the batch is kept), batch "
    "(refused for its data; rows written one by one), row (written in reduced form), reduced "
    "(parked as a dead letter), dead_letter (the record is lost)",
    ["kind"],
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
