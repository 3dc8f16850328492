#!/usr/bin/env bash
# Scenario 2 — a noisy neighbour.
#
# Tenant A's first criterion is test_loop.wasm: every call runs until its
# 20 ms deadline (then the Rhai ROLE_MATCH decides). Tenant B is a normal
# tenant (Wasm criterion, Rhai criterion, Wasm attribute). B sends creates
# at a fixed rate, first alone, then while A sends its own; B's latency
# counts from when each request was due, so queueing behind A shows.
# Prints (and writes to results/latest-noisy.md) B's p50/p99 alone and with
# A, and their ratio.
#
# Usage: examples/load/noisy.sh
#   DURATION=20        seconds per measurement (WARMUP=2 s before each)
#   COMMERCES=20       commerces per tenant
#   B_RATE=300         B's requests/s (0: closed loop), on B_CONCURRENCY=16 connections at most
#   A_RATE=20          A's requests/s (0: closed loop), on A_CONCURRENCY=4 connections at most
#   plus lib.sh's settings (LOAD_PORT, LOAD_DB, LOAD_RUST_LOG, LOAD_SKIP_BUILD)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-20}
WARMUP=${WARMUP:-2}
COMMERCES=${COMMERCES:-20}
B_RATE=${B_RATE:-300}
B_CONCURRENCY=${B_CONCURRENCY:-16}
A_RATE=${A_RATE:-20}
A_CONCURRENCY=${A_CONCURRENCY:-4}

build_all
new_run noisy
fresh_db
machine_before=$(machine_line)

log "starting the server on a fresh database ($LOAD_DB)"
start_server

log "seeding tenant A (looping criterion) and tenant B (normal), $COMMERCES commerces each"
"$LOADTOOL" seed --url "$URL" --policies "$RUN/policies" --plugins "$ROOT/plugins/dist" \
    --tenants 2 --loop-tenants 1 --commerces "$COMMERCES" --out "$RUN/targets.json"

b_stream="name=B,tenants=normal,concurrency=$B_CONCURRENCY,rate=$B_RATE"
a_stream="name=A,tenants=loop,concurrency=$A_CONCURRENCY,rate=$A_RATE"
rows() { sql "SELECT count(*) FROM activities"; }

# One measurement: the streams given; checks rows = 201s.
measure() {
    local out=$1
    shift
    settle_db
    local before after created
    before=$(rows)
    "$LOADTOOL" load --targets "$RUN/targets.json" --duration "$DURATION" --warmup "$WARMUP" \
        --server-pid "$SERVER_PID" --out "$out" "$@"
    after=$(rows)
    created=$(jq '[.streams[] | .created + .warmup_created] | add' "$out")
    [[ $((after - before)) -eq "$created" ]] || die "$((after - before)) rows for $created 201s"
}

log "B alone ($B_RATE req/s), $DURATION s"
measure "$RUN/b-alone.json" --stream "$b_stream"
log "B ($B_RATE req/s) with A looping ($A_RATE req/s), $DURATION s"
measure "$RUN/b-with-a.json" --stream "$b_stream" --stream "$a_stream"
stop_server

# A field of stream B (or A) of a run's report, rounded to 2 decimals.
b() { jq -r ".streams[] | select(.name == \"B\") | $2 * 100 | round / 100" "$RUN/$1.json"; }
a() { jq -r ".streams[] | select(.name == \"A\") | $1 * 100 | round / 100" "$RUN/b-with-a.json"; }
ratio=$(awk -v w="$(b b-with-a .p99_ms)" -v o="$(b b-alone .p99_ms)" 'BEGIN { printf "%.2f", w / o }')
report="$RUN/report.md"
{
    echo "## Scenario 2: noisy neighbour ($(date -u +%Y-%m-%dT%H:%MZ))"
    echo
    echo "B: $B_RATE req/s (≤ $B_CONCURRENCY connections), Wasm + Rhai criteria, Wasm attribute. A: $A_RATE req/s"
    echo "(≤ $A_CONCURRENCY connections), first criterion test_loop.wasm (runs to its 20 ms deadline on every call)."
    echo "Latency counts from when each request was due. ${DURATION} s each. Machine: $machine_before."
    echo
    echo "| | B req/s | B p50 ms | B p99 ms | B max ms | B non-2xx | A req/s | A p50 ms | server CPU % | other processes' CPU % |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for run in b-alone b-with-a; do
        if [[ $run == b-alone ]]; then label="B alone"; a_cols="| – | –"; else label="B with A"; a_cols="| $(a .requests_per_sec) | $(a .p50_ms)"; fi
        echo "| $label | $(b $run .requests_per_sec) | $(b $run .p50_ms) | $(b $run .p99_ms) | $(b $run .max_ms) | $(b $run .non_2xx) $a_cols | $(jq '.cpu.server | round' "$RUN/$run.json") | $(jq '.cpu.rest | round' "$RUN/$run.json") |"
    done
    echo
    echo "B's p99 with A ÷ alone: **$ratio** (target ≤ 2). \"Other processes\" is CPU used by neither the server,"
    echo "Postgres nor the load tool: anything above a few % means a busy machine and unreliable tails."
} >"$report"
cp "$report" "$RESULTS/latest-noisy.md"
echo
cat "$report"
