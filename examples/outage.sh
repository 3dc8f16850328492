#!/usr/bin/env bash
# Database outage drill: with creates flowing, stop PostgreSQL
# (`pg_ctlcluster … stop -m fast`), keep sending for a few seconds, start it
# again; then prove nothing was lost, duplicated or half-written.
#
# What it checks (and exits 1 on any failure):
#   - during the outage the service answers 503 with Retry-After (never
#     another 5xx, never a hang: every answer within the pool's acquire
#     timeout plus slack), and /readyz turns 503;
#   - after it, creates succeed again, from the same server process;
#   - every create that got no 201/409 (a 503, or a connection that failed
#     before or during the exchange: the client drops one request in 40
#     right after sending it, to make such failures happen) is retried with
#     the same key and resolves to 201 or 409;
#   - against the database: every 201 the client saw has its row (same id),
#     no row exists without a 201/409, no key has two activities, every
#     activity has its target user, its attributes and its CREATED event.
#
# It must run as root (it stops and starts the cluster) and always restarts
# PostgreSQL and stops the server on exit, even on failure or Ctrl-C.
# The outage is of the whole cluster: other clients of it (a test run) see
# it too.
#
#   OUTAGE_SECS (5)  BEFORE_SECS (4)  AFTER_SECS (6)  WORKERS (8)
#   OUTAGE_PORT (18087)  PG_VERSION (newest in /etc/postgresql)  PG_CLUSTER (main)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "outage.sh stops and starts PostgreSQL: run it as root" >&2
    exit 2
fi

outage_secs=${OUTAGE_SECS:-5}
before_secs=${BEFORE_SECS:-4}
after_secs=${AFTER_SECS:-6}
workers=${WORKERS:-8}
port=${OUTAGE_PORT:-18087}
pg_version=${PG_VERSION:-$(ls /etc/postgresql | sort -V | tail -n 1)}
pg_cluster=${PG_CLUSTER:-main}
acquire_ms=2000
database=reten_outage
admin_url=postgres://postgres@127.0.0.1:5432/postgres
db_url=postgres://postgres@127.0.0.1:5432/$database
work=$(mktemp -d -t reten-outage.XXXXXX)
server_pid=""
client_pid=""

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }

start_postgres() {
    if ! pg_up; then
        pg_ctlcluster --skip-systemctl-redirect "$pg_version" "$pg_cluster" start || true
    fi
    for _ in $(seq 1 120); do
        pg_up && return 0
        sleep 0.25
    done
    echo "outage.sh: PostgreSQL did not come back" >&2
    return 1
}

cleanup() {
    local rc=$?
    set +e
    # Whatever happened, PostgreSQL runs again and the server stops.
    start_postgres
    if [[ -n $client_pid ]]; then kill "$client_pid" 2>/dev/null; wait "$client_pid" 2>/dev/null; fi
    if [[ -n $server_pid ]]; then kill -TERM "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; fi
    if [[ $rc -eq 0 ]]; then
        rm -rf "$work"
    else
        echo "outage.sh: FAILED (exit $rc); outcomes and server log kept in $work" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== building"
cargo build --release --quiet --bin reten
cargo build --quiet -p reten-host --example outage_client
reten=target/release/reten
client=target/debug/examples/outage_client

start_postgres
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "outage.sh: port $port is in use; set OUTAGE_PORT" >&2
    exit 2
fi

echo "== fresh database $database"
psql "$admin_url" -qAt -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $database WITH (FORCE)"

RETEN_JWT_SECRET=$(head -c 48 /dev/urandom | base64 | tr -d '/+=' | head -c 48)
export RETEN_JWT_SECRET
DATABASE_URL=$db_url RETEN_LISTEN=127.0.0.1:$port RETEN_POLICIES_DIR=policies \
    RETEN_DB_ACQUIRE_TIMEOUT_MS=$acquire_ms RETEN_LOG_FORMAT=json RUST_LOG=info,sqlx=warn \
    "$reten" serve >"$work/server.log" 2>&1 &
server_pid=$!
url=http://127.0.0.1:$port
for _ in $(seq 1 240); do
    curl -sf "$url/healthz" >/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.25
done
curl -sf "$url/readyz" >/dev/null

echo "== seeding a tenant and its commerces through the API"
root=$("$reten" token --sub outage-drill --role SUPER_ADMIN --ttl 10m)
tenant=$(curl -sf -X POST "$url/api/tenant/setup" -H "Authorization: Bearer $root" \
    -H "Content-Type: application/json" -d "{\"name\": \"Outage drill\", \"slug\": \"outage-$(date +%s)\"}" | jq -r .id)
token=$("$reten" token --sub outage-drill --tenant "$tenant" --role ADMIN --ttl 1h)
curl -sf -X POST "$url/api/commerces/sync" -H "Authorization: Bearer $token" -H "x-tenant-id: $tenant" \
    -H "Content-Type: application/json" -d @examples/commerce.json >/dev/null
commerce=$(curl -sf "$url/api/commerces?external_id=c-1" -H "Authorization: Bearer $token" \
    -H "x-tenant-id: $tenant" | jq -r '.data[0].id')
echo "tenant $tenant, commerce $commerce"

echo "== load: ${before_secs}s before, ${outage_secs}s of outage, ${after_secs}s after; $workers workers"
"$client" load --addr "127.0.0.1:$port" --token "$token" --tenant "$tenant" --commerce "$commerce" \
    --run "drill$(date +%s)" --markers "$work" --workers "$workers" \
    --seconds $((before_secs + outage_secs + after_secs)) --out "$work/load.tsv" >"$work/load.txt" &
client_pid=$!
now_ms() { date +%s%3N; }
sleep "$before_secs"
echo "-- stopping PostgreSQL ($pg_version/$pg_cluster, -m fast)"
now_ms >"$work/stopping"
pg_ctlcluster --skip-systemctl-redirect "$pg_version" "$pg_cluster" stop -m fast
now_ms >"$work/stopped"
pg_up && { echo "outage.sh: PostgreSQL still answers after the stop" >&2; exit 1; }
sleep "$outage_secs"
echo "-- starting PostgreSQL"
now_ms >"$work/starting"
start_postgres
now_ms >"$work/started"
echo "-- PostgreSQL was down for $(( $(cat "$work/starting") - $(cat "$work/stopped") )) ms (stop returned -> start issued)"
wait "$client_pid"
client_pid=""
cat "$work/load.txt"

kill -0 "$server_pid" 2>/dev/null || { echo "outage.sh: the server died" >&2; exit 1; }
ready=$(curl -s -o /dev/null -w '%{http_code}' "$url/readyz")

echo "== retrying every create without a 201/409, same key"
"$client" retry --addr "127.0.0.1:$port" --token "$token" --tenant "$tenant" --commerce "$commerce" \
    --in "$work/load.tsv" --out "$work/retry.tsv"

echo "== checking the database"
report=$(psql "$db_url" -qAt -F= -v ON_ERROR_STOP=1 <<SQL
CREATE TEMP TABLE o (key text, phase text, outcome text, status int, activity_id text, latency_ms int, retry_after text, at_ms bigint);
\copy o FROM '$work/load.tsv'
\copy o FROM '$work/retry.tsv'
CREATE TEMP TABLE r AS
  SELECT a.idempotency_key AS key, a.id::text AS id,
         (SELECT count(*) FROM activity_target_users t WHERE t.tenant_id = a.tenant_id AND t.activity_id = a.id) AS targets,
         (SELECT count(*) FROM activity_attributes t WHERE t.tenant_id = a.tenant_id AND t.activity_id = a.id) AS attributes,
         (SELECT count(*) FROM activity_status_events t WHERE t.tenant_id = a.tenant_id AND t.activity_id = a.id) AS events,
         cardinality(a.attribute_keys) AS wanted
  FROM activities a WHERE a.tenant_id = '$tenant';
SELECT 'requests_sent', count(*) FROM o WHERE outcome <> 'notsent';
SELECT 'load_requests', count(*) FROM o WHERE phase <> 'retry';
SELECT 'retry_requests', count(*) FROM o WHERE phase = 'retry';
SELECT 'answered_201', count(*) FROM o WHERE status = 201;
SELECT 'answered_409', count(*) FROM o WHERE status = 409;
SELECT 'answered_503', count(*) FROM o WHERE status = 503;
SELECT 'answered_5xx_not_503', count(*) FROM o WHERE status >= 500 AND status <> 503;
SELECT 'answered_other_4xx', count(*) FROM o WHERE outcome = 'other4xx';
SELECT 'connection_not_sent', count(*) FROM o WHERE outcome = 'notsent';
SELECT 'connection_failed_mid_flight', count(*) FROM o WHERE outcome IN ('ambiguous', 'abandoned');
SELECT 'mid_flight_then_201', count(DISTINCT o.key) FROM o JOIN o AS q ON q.key = o.key
  WHERE o.outcome IN ('ambiguous', 'abandoned') AND q.phase = 'retry' AND q.status = 201;
SELECT 'mid_flight_then_409', count(DISTINCT o.key) FROM o JOIN o AS q ON q.key = o.key
  WHERE o.outcome IN ('ambiguous', 'abandoned') AND q.phase = 'retry' AND q.status = 409;
SELECT 'answered_503_without_retry_after', count(*) FROM o WHERE status = 503 AND retry_after = '-';
SELECT 'max_latency_ms', coalesce(max(latency_ms), 0) FROM o;
SELECT 'outage_201', count(*) FROM o WHERE phase = 'outage' AND status = 201;
SELECT 'answered_201_while_down', count(*) FROM o
  WHERE status = 201 AND at_ms >= $(cat "$work/stopped") AND at_ms + latency_ms <= $(cat "$work/starting");
SELECT 'requests_while_down', count(*) FROM o
  WHERE at_ms >= $(cat "$work/stopped") AND at_ms + latency_ms <= $(cat "$work/starting");
SELECT 'max_latency_while_down_ms', coalesce(max(latency_ms), 0) FROM o
  WHERE at_ms >= $(cat "$work/stopped") AND at_ms <= $(cat "$work/starting");
SELECT 'after_201', count(*) FROM o WHERE phase = 'after' AND status = 201;
SELECT 'keys', count(DISTINCT key) FROM o;
SELECT 'rows_found', count(*) FROM r;
SELECT 'rows_missing', count(*) FROM o WHERE status = 201 AND NOT EXISTS (SELECT 1 FROM r WHERE r.key = o.key AND r.id = o.activity_id);
SELECT 'rows_without_201_or_409', count(*) FROM r WHERE NOT EXISTS (SELECT 1 FROM o WHERE o.key = r.key AND o.status IN (201, 409));
SELECT 'keys_without_201_or_409', count(*) FROM (SELECT key FROM o GROUP BY key HAVING bool_or(status IN (201, 409)) IS NOT TRUE) k;
SELECT 'duplicates', (SELECT count(*) FROM (SELECT key FROM r GROUP BY key HAVING count(*) > 1) d)
                   + (SELECT count(*) FROM (SELECT key FROM o WHERE status IN (201, 409) GROUP BY key HAVING count(DISTINCT activity_id) > 1) d)
                   + (SELECT count(*) FROM (SELECT key FROM o WHERE status = 201 GROUP BY key HAVING count(*) > 1) d);
SELECT 'conflict_names_other_activity', count(*) FROM o WHERE status = 409 AND NOT EXISTS (SELECT 1 FROM r WHERE r.key = o.key AND r.id = o.activity_id);
SELECT 'half_written', count(*) FROM r WHERE targets <> 1 OR attributes <> wanted OR events <> 1;
SELECT 'failed_then_committed', count(DISTINCT o.key) FROM o JOIN o AS q ON q.key = o.key
  WHERE o.phase <> 'retry' AND o.outcome IN ('unavailable', 'error5xx') AND q.phase = 'retry' AND q.status = 409;
SQL
)
echo "$report" | sed 's/^/  /'
value() { echo "$report" | sed -n "s/^$1=//p"; }

failures=()
must_be_zero() { [[ $(value "$1") == 0 ]] || failures+=("$1 = $(value "$1") (must be 0)"); }
for k in answered_201_while_down answered_5xx_not_503 answered_other_4xx answered_503_without_retry_after rows_missing \
    rows_without_201_or_409 keys_without_201_or_409 duplicates conflict_names_other_activity half_written; do
    must_be_zero "$k"
done
[[ $(value answered_503) -gt 0 ]] || failures+=("no 503 during the outage: did it happen?")
[[ $(value connection_failed_mid_flight) -eq $(( $(value mid_flight_then_201) + $(value mid_flight_then_409) )) ]] ||
    failures+=("not every mid-flight failure was resolved by a retry")
[[ $(value after_201) -gt 0 ]] || failures+=("no 201 after the outage: the service did not recover")
(( $(value max_latency_ms) <= acquire_ms + 3000 )) || failures+=("a request took $(value max_latency_ms) ms (acquire timeout $acquire_ms ms)")
grep -Eq "(stopping|outage) +/readyz 503" "$work/load.txt" || failures+=("/readyz never answered 503 during the outage")
[[ $ready == 200 ]] || failures+=("/readyz answers $ready after the outage")

echo
echo "== report"
printf '  %-38s %s\n' \
    "requests sent" "$(value requests_sent)" \
    "  while Postgres was down" "$(value requests_while_down)" \
    "  retries (same key)" "$(value retry_requests)" \
    "201" "$(value answered_201)" \
    "409" "$(value answered_409)" \
    "503 (all with Retry-After)" "$(value answered_503)" \
    "201 while Postgres was down" "$(value answered_201_while_down)" \
    "other 5xx" "$(value answered_5xx_not_503)" \
    "connection failed mid-flight" "$(value connection_failed_mid_flight)" \
    "  resolved by retry: 201 (not done)" "$(value mid_flight_then_201)" \
    "  resolved by retry: 409 (done)" "$(value mid_flight_then_409)" \
    "connection refused (not sent)" "$(value connection_not_sent)" \
    "503, then 409 on retry" "$(value failed_then_committed)" \
    "max latency (ms)" "$(value max_latency_ms)" \
    "max latency while down (ms)" "$(value max_latency_while_down_ms)" \
    "rows found" "$(value rows_found)" \
    "rows missing" "$(value rows_missing)" \
    "rows without a 201/409" "$(value rows_without_201_or_409)" \
    "duplicates" "$(value duplicates)" \
    "half-written activities" "$(value half_written)" \
    "server restarted" "no (pid $server_pid throughout)" \
    "/readyz after" "$ready"
if ((${#failures[@]})); then
    printf 'FAIL: %s\n' "${failures[@]}" >&2
    exit 1
fi
echo "PASS"
