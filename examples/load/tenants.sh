#!/usr/bin/env bash
# Scenario 3 — many tenants.
#
# TENANTS tenant folders, each a tenant.toml, one Wasm criterion
# (role_match_wasm: the first half share the same bytes, the second half each
# have their own — a distinct custom section, so a distinct sha256 and
# compilation) and one Rhai criterion (pick_rep.rhai). Measures:
#   - start-up to ready: `reten serve` over all the folders, from exec to the
#     first 200 of /readyz — cold (empty RETEN_WASM_CACHE_DIR), then a restart
#     with the compile cache the cold start filled;
#   - right after the cold start is ready, the first create of FIRST random
#     tenants: each must be decided by the tenant's own Wasm policy, and its
#     trace must say which tier (Winch's BASELINE or Cranelift's OPTIMIZED) ran;
#   - RSS: after ready, and after LOAD_SECS of creates spread over every
#     tenant, on the cold-started server (both tiers' code in memory);
#   - hot reload: CHANGES edits of one tenant's pick_rep.rhai, then of its
#     role_match_wasm.wasm, each timed from the file write to the new version
#     serving (GET /api/policies), p50/p95.
# Prints (and writes to results/latest-tenants.md) the figures.
#
# Usage: examples/load/tenants.sh
#   TENANTS=1000 COMMERCES=2 LOAD_SECS=10 LOAD_CONCURRENCY=16 CHANGES=50 FIRST=50
#   SERVER_ENV="VAR=value …" (extra settings for both starts, e.g. RETEN_WASM_BASELINE=false)
#   plus lib.sh's settings (LOAD_PORT, LOAD_DB, LOAD_RUST_LOG, LOAD_SKIP_BUILD)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TENANTS=${TENANTS:-1000}
COMMERCES=${COMMERCES:-2}
LOAD_SECS=${LOAD_SECS:-10}
LOAD_CONCURRENCY=${LOAD_CONCURRENCY:-16}
CHANGES=${CHANGES:-50}
FIRST=${FIRST:-50}
read -r -a server_env <<<"${SERVER_ENV:-}"
SHARED=$((TENANTS / 2))

build_all
new_run tenants
fresh_db
machine_before=$(machine_line)
folder_args=(--policies "$RUN/policies" --plugins "$ROOT/plugins/dist" --layout tenants --distinct-wasm-from "$SHARED")

log "provisioning $TENANTS tenants × $COMMERCES commerces through the API (no policy folders yet)"
start_server
"$LOADTOOL" seed --url "$URL" "${folder_args[@]}" --tenants "$TENANTS" --commerces "$COMMERCES" \
    --no-folders --out "$RUN/targets.json"
stop_server

log "writing $TENANTS tenant folders ($SHARED sharing one Wasm, $((TENANTS - SHARED)) with their own)"
"$LOADTOOL" folders --targets "$RUN/targets.json" "${folder_args[@]}" --write
du -sh "$RUN/policies/tenants" | awk '{ print "policies: " $1 }'

# Starts the server with the clock started right before the exec (not
# start_server, which starts its clock later); sets ready_ms.
timed_start() {
    local t0
    port_free
    t0=$(date +%s%N)
    cold_t0=${cold_t0:-$t0}
    env "${server_env[@]}" RETEN_LISTEN="127.0.0.1:$LOAD_PORT" RETEN_POLICIES_DIR="$RUN/policies" \
        RETEN_WASM_CACHE_DIR="$RUN/wasm-cache" \
        ${LOAD_RUST_LOG:+RUST_LOG="$LOAD_RUST_LOG"} "$RETEN" serve >>"$RUN/server.log" 2>&1 9>&- &
    SERVER_PID=$!
    ready_ms=$("$LOADTOOL" ready --url "$URL" --since-ns "$t0" --pid "$SERVER_PID" --timeout-secs 600)
}

log "cold start over $TENANTS tenant folders (empty Wasm compile cache)"
timed_start
cold_ms=$ready_ms
echo "ready after $cold_ms ms"
log "the first create of $FIRST random tenants, right after ready"
"$LOADTOOL" first-creates --targets "$RUN/targets.json" --policies "$RUN/policies" --tenants "$FIRST" \
    --out "$RUN/first.json"
rss_cold=$(rss_mib "$SERVER_PID" VmRSS)
load_errors=$(curl -sf "$URL/readyz" | jq '.checks.policies.loadErrors')
"$LOADTOOL" folders --targets "$RUN/targets.json" "${folder_args[@]}" --wait

log "creates over all $TENANTS tenants, $LOAD_SECS s at $LOAD_CONCURRENCY connections (the cold-started server)"
"$LOADTOOL" load --targets "$RUN/targets.json" --stream "name=all,tenants=all,concurrency=$LOAD_CONCURRENCY" \
    --duration "$LOAD_SECS" --warmup 0 --server-pid "$SERVER_PID" --out "$RUN/load.json"
rss_load=$(rss_mib "$SERVER_PID" VmRSS)
[[ $(jq '.streams[0].non_2xx' "$RUN/load.json") -eq 0 ]] || echo "warning: some creates failed (see $RUN/load.json)" >&2
hwm_load=$(rss_mib "$SERVER_PID" VmHWM)
echo "RSS after the load phase: $rss_load MiB (peak $hwm_load MiB)"

# The background compiler keeps Cranelift's code of each component in the
# compile cache: wait (at most 10 min) until all of them are there, so that
# the restart below measures a warm cache.
distinct=$((TENANTS - SHARED + 1))
log "waiting for Cranelift's code of all $distinct components (background compiler)"
for _ in $(seq 600); do
    cached=$(find "$RUN/wasm-cache" -name '*.cwasm' | wc -l)
    ((cached >= distinct)) && break
    sleep 1
done
optimized_s=$(( ($(date +%s%N) - cold_t0) / 1000000000 ))
echo "$cached of $distinct components optimised, $optimized_s s after the cold start's exec"
stop_server

log "restart over the same folders (RETEN_WASM_CACHE_DIR filled by the cold start)"
timed_start
warm_ms=$ready_ms
echo "ready after $warm_ms ms"
rss_ready=$(rss_mib "$SERVER_PID" VmRSS)

log "$CHANGES changes of one tenant's Rhai file, then of its Wasm file"
"$LOADTOOL" reload --targets "$RUN/targets.json" --policies "$RUN/policies" --tenant 0 \
    --file criteria/pick_rep.rhai --changes "$CHANGES" --out "$RUN/reload.json"
"$LOADTOOL" reload --targets "$RUN/targets.json" --policies "$RUN/policies" --tenant 0 \
    --file criteria/role_match_wasm.wasm --changes "$CHANGES" --out "$RUN/reload-wasm.json"
stop_server

r() { jq -r "$1 * 10 | round / 10" "$RUN/reload.json"; }
rw() { jq -r "$1 * 10 | round / 10" "$RUN/reload-wasm.json"; }
f() { jq -r "$1" "$RUN/first.json"; }
report="$RUN/report.md"
{
    echo "## Scenario 3: $TENANTS tenants ($(date -u +%Y-%m-%dT%H:%MZ))"
    echo
    echo "$TENANTS tenant folders: tenant.toml, role_match_wasm.wasm ($SHARED sharing one file's bytes,"
    echo "$((TENANTS - SHARED)) distinct) and pick_rep.rhai; $COMMERCES commerces each. Machine: $machine_before."
    echo
    echo "| measure | value | target |"
    echo "| --- | ---: | ---: |"
    echo "| cold start to ready (/readyz 200), empty Wasm compile cache | $cold_ms ms | ≤ 5,000 ms |"
    echo "| first create of $FIRST random tenants after ready: decided by the tenant's own policy (tiers in the trace) | $(f .own_decision) / $(f .creates) ($(f '.tiers | to_entries | map("\(.key) \(.value)") | join(", ")')) | all |"
    echo "| those first creates, p50 / max | $(f '.p50_ms * 10 | round / 10') / $(f '.max_ms * 10 | round / 10') ms | |"
    echo "| cold start: every component on Cranelift's code (all in the compile cache) | $cached of $distinct after ${optimized_s} s | |"
    echo "| restart to ready, compile cache filled (RETEN_WASM_CACHE_DIR) | $warm_ms ms | ≤ 5,000 ms |"
    echo "| policy load errors at ready | $load_errors | 0 |"
    echo "| RSS at ready (cold start, after the first creates / restart) | $rss_cold / $rss_ready MiB | |"
    echo "| RSS after ${LOAD_SECS} s of creates over all tenants on the cold-started server ($(jq '.streams[0].requests_per_sec | round' "$RUN/load.json") req/s, $(jq '.streams[0].non_2xx' "$RUN/load.json") non-2xx) | $rss_load MiB (peak $hwm_load) | ≤ 400 MiB |"
    echo "| changed Rhai file → serving, p50 / p95 / max over $CHANGES | $(r .p50_ms) / $(r .p95_ms) / $(r .max_ms) ms | p95 ≤ 50 ms |"
    echo "| changed Wasm file → serving, p50 / p95 / max over $CHANGES | $(rw .p50_ms) / $(rw .p95_ms) / $(rw .max_ms) ms | |"
} >"$report"
cp "$report" "$RESULTS/latest-tenants.md"
echo
cat "$report"
