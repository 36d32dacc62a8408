#!/usr/bin/env bash
# Runs the suite on the embedded defaults (SQLite, in-process state), then on PostgreSQL + Redis.
# If those are not running, it tries to start them; if that fails too, it says so and the run on the
# embedded defaults stands alone.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PG_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
REDIS="${TEST_REDIS_URL:-redis://127.0.0.1:6379/0}"

echo "== ruff, mypy and the import contracts"
$BIN/ruff check . || exit 1
$BIN/ruff format --check . >/dev/null || { $BIN/ruff format --check .; exit 1; }
$BIN/mypy . || exit 1
# The one-way house of apps (docs/adr/0017-layers.md): layers, independence, no module cycle.
$BIN/lint-imports --no-cache || exit 1

services_up() {
  $BIN/python - "$PG_URL" "$REDIS" <<'PY'
import sys
import psycopg, redis
try:
    psycopg.connect(sys.argv[1].replace("postgres://", "postgresql://"), connect_timeout=3).close()
    redis.Redis.from_url(sys.argv[2], socket_connect_timeout=3).ping()
except Exception as exc:
    print(f"   not reachable: {exc}".splitlines()[0])
    sys.exit(1)
PY
}

start_services() {
  echo "== starting PostgreSQL and Redis"
  if command -v pg_ctlcluster >/dev/null && ls /etc/postgresql >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start 2>/dev/null || true
  fi
  if command -v redis-server >/dev/null; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null 2>&1 || true
  fi
  sleep 2
}

echo "== suite on the embedded defaults (SQLite, in-process cache)"
env -u DATABASE_URL -u REDIS_URL GATEWAY_DATA_DIR="$PWD/var/test-embedded" $BIN/pytest -q "$@"
embedded=$?

if ! services_up; then
  start_services
fi
if services_up; then
  echo "== suite on PostgreSQL + Redis ($PG_URL, $REDIS)"
  DATABASE_URL="$PG_URL" REDIS_URL="$REDIS" GATEWAY_DATA_DIR="$PWD/var/test-services" $BIN/pytest -q "$@"
  services=$?
else
  echo "== PostgreSQL/Redis not available and could not be started: ran on the embedded defaults only"
  services=0
fi

if [ $embedded -ne 0 ] || [ $services -ne 0 ]; then
  echo "== FAILED (embedded: $embedded, PostgreSQL+Redis: $services)"
  exit 1
fi
echo "== all suites passed"
