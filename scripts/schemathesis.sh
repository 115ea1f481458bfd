#!/usr/bin/env bash
# Fuzzes a live `fleetgate serve` against its own OpenAPI document with schemathesis (PyPI): no
# response may be a 5xx or break the schema. Starts Redis/PostgreSQL if needed, creates a scratch
# database, runs the server with the development echo pipeline (no upstream calls) and generous
# limits (so requests get past the limiters into the handlers), then tears everything down.
#
#   scripts/schemathesis.sh [extra schemathesis args]   e.g. --max-examples 50
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/services.sh
ensure_redis
ensure_postgres

VENV="${SCHEMATHESIS_VENV:-target/schemathesis-venv}"
if [ ! -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q schemathesis
fi

cargo build -q -p api --bin fleetgate
BIN=target/debug/fleetgate

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DB="fg_schemathesis_$$"
ADMIN_DB_URL="${FLEETGATE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
psql "$ADMIN_DB_URL" -qc "CREATE DATABASE $DB" >/dev/null

export FLEETGATE_LISTEN="127.0.0.1:$PORT"
export FLEETGATE_DATABASE_URL="${ADMIN_DB_URL%/*}/$DB"
export FLEETGATE_REDIS_PREFIX="schemathesis-$$"
export FLEETGATE_JWT_SECRET="schemathesis-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export FLEETGATE_ADMIN_TOKEN="schemathesis-admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export FLEETGATE_PIPELINE=echo
export FLEETGATE_CHAT_PER_IP_PER_MIN=1000000
export FLEETGATE_RESEARCH_PER_IP_PER_MIN=1000000
export FLEETGATE_EXPORT_PER_IP_PER_MIN=1000000
export FLEETGATE_FREE_DAILY_QUERIES=1000000
export RUST_LOG="${RUST_LOG:-warn}"

"$BIN" migrate >/dev/null
"$BIN" serve 2>target/schemathesis-server.log &
SERVER=$!
cleanup() {
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  redis-cli -h 127.0.0.1 --scan --pattern "schemathesis-$$:*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null
  psql "$ADMIN_DB_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break
  sleep 0.1
done

# A user token (HS256, Supabase-style claims) minted with the server's secret.
JWT=$(python3 - <<'PY'
import base64, hashlib, hmac, json, os, time
b = lambda d: base64.urlsafe_b64encode(d).rstrip(b"=").decode()
h = b(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
p = b(json.dumps({"sub": "schemathesis-user", "exp": int(time.time()) + 3600, "aud": "authenticated"}).encode())
sig = hmac.new(os.environ["FLEETGATE_JWT_SECRET"].encode(), f"{h}.{p}".encode(), hashlib.sha256).digest()
print(f"{h}.{p}.{b(sig)}")
PY
)

SCHEMA="http://127.0.0.1:$PORT/api/openapi.json"
# Every operation but the admin one with a user's token...
"$VENV/bin/schemathesis" run "$SCHEMA" -H "Authorization: Bearer $JWT" --checks all \
  --exclude-operation-id post_health "$@" || status=$?
# ...and the health/admin operations with the admin token.
"$VENV/bin/schemathesis" run "$SCHEMA" -H "Authorization: Bearer $FLEETGATE_ADMIN_TOKEN" \
  --checks all --include-path /api/system-health "$@" || status=$?
exit "${status:-0}"
