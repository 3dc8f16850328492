#!/usr/bin/env bash
# How long a policy change takes to serve on another replica.
#
# Starts two `reten serve` processes on one fresh database and one copy of
# policies/: replica 1 watches the files, replica 2 does not
# (RETEN_POLICY_WATCH=false, no periodic rescan), so only the Postgres
# notification can bring it a change. Then, 20 times: a changeset on replica 1
# replaces a tenant's criterion, and replica 2's GET /api/policies is polled
# until the new version serves. Prints, in ms, p50 and p95 of
#   - changeset sent on replica 1 → the new version serves on replica 2;
#   - replica 1 answered → it serves on replica 2 (the propagation alone).
#
# Settings (environment):
#   RETEN_BIN      the server binary (default target/release/reten; a debug
#                  build works: cargo build --bin reten)
#   PROP_DB        the database, dropped and created again (default reten_propagation)
#   PROP_PORTS     the two ports (default "18181 18182")
#   PROP_CHANGES   how many changes (default 20)
#   PGHOST/PGPORT/PGUSER   Postgres (default 127.0.0.1, 5432, postgres; trust auth)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RETEN="${RETEN_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/reten}"
export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
export PGOPTIONS="--client-min-messages=warning"
DB="${PROP_DB:-reten_propagation}"
read -r PORT1 PORT2 <<<"${PROP_PORTS:-18181 18182}"
CHANGES="${PROP_CHANGES:-20}"
export RETEN_JWT_SECRET="propagation-harness-secret-not-for-production-0123"
export DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB"

for cmd in curl jq psql sha256sum; do
    command -v "$cmd" >/dev/null || { echo "error: $cmd is required" >&2; exit 1; }
done
[[ -x $RETEN ]] || { echo "error: $RETEN is missing; build it (cargo build --release --bin reten) or set RETEN_BIN" >&2; exit 1; }

WORK=$(mktemp -d -t reten-propagation.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    psql -q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

psql -q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
cp -r "$ROOT/policies" "$WORK/policies"
"$RETEN" migrate >/dev/null

start() {
    local port=$1; shift
    env "$@" RETEN_LISTEN="127.0.0.1:$port" RETEN_POLICIES_DIR="$WORK/policies" RETEN_POLICY_RESCAN_SECS=3600 \
        RUST_LOG=warn "$RETEN" serve >"$WORK/replica-$port.log" 2>&1 &
    PIDS+=($!)
}
start "$PORT1"
start "$PORT2" RETEN_POLICY_WATCH=false
for port in "$PORT1" "$PORT2"; do
    for _ in $(seq 600); do
        curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break
        sleep 0.1
    done
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$WORK/replica-$port.log"; exit 1; }
done

ROOT_TOKEN=$("$RETEN" token --sub propagation --role SUPER_ADMIN)
TENANT=$(curl -fs -X POST "http://127.0.0.1:$PORT1/api/tenant/setup" -H "authorization: Bearer $ROOT_TOKEN" \
    -H 'content-type: application/json' -d '{"name": "Propagation", "slug": "propagation"}' | jq -r .id)
TOKEN=$("$RETEN" token --sub propagation --tenant "$TENANT" --role ADMIN)
AUTH=(-H "authorization: Bearer $TOKEN" -H "x-tenant-id: $TENANT")

now_ms() { echo $(($(date +%s%N) / 1000000)); }
total=() after=()
for i in $(seq "$CHANGES"); do
    source="fn resolve(input) { [] } // change $i"
    version=$(printf '%s' "$source" | sha256sum | cut -d' ' -f1)
    body=$(jq -nc --arg s "$source" '{files: [{path: "criteria/bench.rhai", content: $s}], message: "propagation"}')
    sent=$(now_ms)
    curl -fs -X POST "http://127.0.0.1:$PORT1/api/policies/changes" "${AUTH[@]}" \
        -H 'content-type: application/json' -d "$body" >/dev/null
    answered=$(now_ms)
    until curl -fs "http://127.0.0.1:$PORT2/api/policies" "${AUTH[@]}" \
        | jq -e --arg v "$version" '.policies[] | select(.name == "bench" and .version == $v)' >/dev/null; do
        (( $(now_ms) - sent < 30000 )) || { echo "error: change $i never served on replica 2" >&2; exit 1; }
    done
    served=$(now_ms)
    total+=($((served - sent)))
    after+=($((served - answered)))
done

percentile() { # p values...
    local p=$1; shift
    local sorted=($(printf '%s\n' "$@" | sort -n))
    local n=${#sorted[@]}
    local rank=$(((p * n + 99) / 100))
    echo "${sorted[$((rank - 1))]}"
}
echo "changes: $CHANGES (binary: $RETEN)"
echo "sent on replica 1 -> serving on replica 2: p50 $(percentile 50 "${total[@]}") ms, p95 $(percentile 95 "${total[@]}") ms"
echo "answered on replica 1 -> serving on replica 2: p50 $(percentile 50 "${after[@]}") ms, p95 $(percentile 95 "${after[@]}") ms"
