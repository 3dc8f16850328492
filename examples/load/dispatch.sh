#!/usr/bin/env bash
# Dispatch under load: creates of due activities at a fixed rate over
# TENANTS tenants, each with a WEBHOOK config pointing at a receiver on the
# loopback (`loadtool receive`), while the dispatcher sends them.
#
# Measures, per run: the creates' rate and latency (loadtool load), and the
# due-to-dispatched lag of every activity of the run (dispatched_at −
# created_at: every create is due at once), p50/p95/p99. Then the same runs
# with the dispatcher off (RETEN_DISPATCH=false), for the creates' cost of
# dispatching. RUNS of each; the report gives each and the median.
# Target: lag p95 <= 2 s at 300 creates/s over 10 tenants for 60 s.
#
# Everything stays on 127.0.0.1: the server may only send to the
# receiver (RETEN_DISPATCH_ALLOW_HOSTS=127.0.0.1, RETEN_DISPATCH_ALLOW_PUBLIC=false),
# which exits by itself after a bounded time.
#
# Usage: examples/load/dispatch.sh
#   DURATION=60     seconds measured per run (WARMUP=2 s before)
#   RATE=300        creates per second, over CONCURRENCY=32 connections at most
#   TENANTS=10      tenants (COMMERCES=20 commerces each)
#   RUNS=3          runs with dispatch, and as many without
#   DRAIN=30        seconds a run waits for the last dispatches
#   RECV_PORT=18090 the receiver's port
#   plus lib.sh's settings (LOAD_PORT, LOAD_DB, LOAD_RUST_LOG, LOAD_SKIP_BUILD)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-60}
WARMUP=${WARMUP:-2}
RATE=${RATE:-300}
CONCURRENCY=${CONCURRENCY:-32}
TENANTS=${TENANTS:-10}
COMMERCES=${COMMERCES:-20}
RUNS=${RUNS:-3}
DRAIN=${DRAIN:-30}
RECV_PORT=${RECV_PORT:-18090}
RECEIVER_PID=""

stop_receiver() {
    [[ -n "$RECEIVER_PID" ]] || return 0
    kill -TERM "$RECEIVER_PID" 2>/dev/null || true
    wait "$RECEIVER_PID" 2>/dev/null || true
    RECEIVER_PID=""
}
trap 'stop_server; stop_receiver' EXIT

build_all
new_run dispatch
machine_before=$(machine_line)
secrets_key=$(head -c 32 /dev/urandom | base64)
dispatch_env=(RETEN_SECRETS_KEY="$secrets_key" RETEN_DISPATCH_ALLOW_HOSTS=127.0.0.1 RETEN_DISPATCH_ALLOW_PUBLIC=false)

log "starting the receiver on 127.0.0.1:$RECV_PORT"
"$LOADTOOL" receive --listen "127.0.0.1:$RECV_PORT" \
    --max-secs $(( (DURATION + WARMUP + DRAIN + 120) * RUNS * 2 + 600 )) >"$RUN/receiver.log" 2>&1 &
RECEIVER_PID=$!

# One run on a fresh database: seed, configs, creates at RATE; prints
# "<rate> <p50> <p99> <lag p50> <lag p95> <lag p99> <created> <dispatched>".
one_run() {
    local dispatch=$1 n=$2
    local out="$RUN/run-$dispatch-$n.json"
    fresh_db
    rm -rf "$RUN/policies/tenants"
    start_server "${dispatch_env[@]}" RETEN_DISPATCH="$dispatch"
    "$LOADTOOL" seed --url "$URL" --policies "$RUN/policies" --plugins "$ROOT/plugins/dist" \
        --tenants "$TENANTS" --commerces "$COMMERCES" --out "$RUN/targets.json" >/dev/null
    local token provider
    token=$("$RETEN" token --sub load --role SUPER_ADMIN --ttl 2h)
    provider=$(curl -sf "$URL/api/dispatch-providers" -H "Authorization: Bearer $token" \
        -H "x-tenant-id: $(jq -r '.tenants[0].id' "$RUN/targets.json")" | jq -r '.[] | select(.code == "WEBHOOK") | .id')
    for tenant in $(jq -r '.tenants[].id' "$RUN/targets.json"); do
        curl -sf -o /dev/null "$URL/api/dispatch-configs" -H "Authorization: Bearer $token" -H "x-tenant-id: $tenant" \
            -H 'Content-Type: application/json' \
            -d "{\"dispatch_provider_id\":\"$provider\",\"channel\":\"WHATSAPP\",\"base_url\":\"http://127.0.0.1:$RECV_PORT/hooks\",\"credentials\":{\"api_key\":\"load-key\",\"signing_secret\":\"load-signing-secret-0123\"}}" \
            || die "could not create the dispatch config of $tenant"
    done
    settle_db
    local since
    since=$(sql "SELECT now()")
    "$LOADTOOL" load --targets "$RUN/targets.json" --duration "$DURATION" --warmup "$WARMUP" \
        --server-pid "$SERVER_PID" --out "$out" --stream "name=creates,tenants=all,concurrency=$CONCURRENCY,rate=$RATE" >/dev/null
    local created dispatched
    created=$(sql "SELECT count(*) FROM activities WHERE created_at >= '$since'")
    if [[ $dispatch == true ]]; then
        for _ in $(seq $(( DRAIN * 10 ))); do
            dispatched=$(sql "SELECT count(*) FROM activities WHERE created_at >= '$since' AND status = 'DISPATCHED'")
            [[ $dispatched -ge $created ]] && break
            sleep 0.1
        done
    fi
    dispatched=$(sql "SELECT count(*) FROM activities WHERE created_at >= '$since' AND status = 'DISPATCHED'")
    local lag
    lag=$(sql "SELECT coalesce(string_agg(round(x::numeric, 3)::text, ' '), '- - -') FROM (
        SELECT unnest(percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
          ORDER BY extract(epoch FROM dispatched_at - created_at))) AS x
        FROM activities WHERE created_at >= '$since' AND dispatched_at IS NOT NULL) p")
    stop_server
    printf '%s %s %s %s %s %s\n' \
        "$(jq '.streams[0].requests_per_sec' "$out")" "$(jq '.streams[0].p50_ms' "$out")" "$(jq '.streams[0].p99_ms' "$out")" \
        "$lag" "$created" "$dispatched"
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

declare -a with=() without=()
for n in $(seq "$RUNS"); do
    log "run $n/$RUNS with the dispatcher: $RATE creates/s over $TENANTS tenants for $DURATION s"
    with+=("$(one_run true "$n")")
    echo "  ${with[-1]}"
    log "run $n/$RUNS without the dispatcher (RETEN_DISPATCH=false)"
    without+=("$(one_run false "$n")")
    echo "  ${without[-1]}"
done
stop_receiver

report="$RUN/report.md"
{
    echo "# Dispatch under load ($(date -u +%Y-%m-%dT%H:%MZ), $(git -C "$ROOT" rev-parse --short HEAD))"
    echo
    echo "$RATE creates/s of due WHATSAPP activities over $TENANTS tenants × $COMMERCES commerces, $DURATION s per run; each"
    echo "tenant's WEBHOOK config sends to a receiver on 127.0.0.1. Lag: dispatched_at − created_at of every activity of the run."
    echo
    echo "| run | dispatcher | creates/s | create p50 ms | create p99 ms | lag p50 s | lag p95 s | lag p99 s | created | dispatched |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for n in $(seq "$RUNS"); do
        echo "| $n | on | $(tr ' ' '|' <<<"${with[$((n - 1))]}" | sed 's/|/ | /g') |"
        echo "| $n | off | $(tr ' ' '|' <<<"${without[$((n - 1))]}" | sed 's/|/ | /g') |"
    done
    echo
    echo "Medians: creates/s with $(printf '%s\n' "${with[@]}" | cut -d' ' -f1 | median) vs without \
$(printf '%s\n' "${without[@]}" | cut -d' ' -f1 | median); create p99 with $(printf '%s\n' "${with[@]}" | cut -d' ' -f3 | median) ms \
vs without $(printf '%s\n' "${without[@]}" | cut -d' ' -f3 | median) ms; lag p95 $(printf '%s\n' "${with[@]}" | cut -d' ' -f5 | median) s (target ≤ 2 s)."
    echo
    echo "Machine before: $machine_before"
} | tee "$report"
cp "$report" "$RESULTS/latest-dispatch.md"
