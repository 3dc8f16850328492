#!/usr/bin/env bash
# Scenario 1 — the service against its Postgres ceiling.
#
# For each concurrency C: pgbench replays, for D seconds with C clients, the
# exact statements one `POST /api/activities` sends (generated from the
# service's own SQL constants and the values a real create bound); then the
# load tool drives `POST /api/activities` over HTTP for D seconds with C
# connections. Prints (and writes to results/latest.md) requests/s, p50/p99,
# non-2xx, pgbench tps and the ratio, and checks that the activity rows the
# HTTP run added are exactly its 201s.
#
# Then latency the right way: closed-loop latency at C connections is bound
# by C / throughput (Little's law), so the load tool also sends at fixed
# rates — OPEN_LOOP percent of the highest closed-loop rate measured above —
# with latency counted from each request's due time (queueing included, no
# coordinated omission), and reports p50/p99 at each.
#
# Usage: examples/load/run.sh
#   TENANTS=10 COMMERCES=20   tenants × commerces seeded through the API
#   DURATION=20               seconds measured, after WARMUP=3 s of the same load
#   CONCURRENCY="16 64"       client counts
#   OPEN_LOOP="50 80"         open-loop rates, in percent of the measured maximum ("" to skip)
#   OPEN_CONNECTIONS=64       connections of the open-loop runs (at most that many requests in flight)
#   LOADGEN=loadtool          the HTTP load generator: loadtool (host/examples/loadtool), or wrk
#                             (examples/load/wrk/create.lua; installed if missing) as a cross-check
#   LOADGEN_THREADS=1         worker threads of the load tool (WRK_THREADS=2 for wrk)
#   PGBENCH_THREADS=2         pgbench -j
#   plus lib.sh's settings (LOAD_PORT, LOAD_DB, LOAD_RUST_LOG, LOAD_SKIP_BUILD)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TENANTS=${TENANTS:-10}
COMMERCES=${COMMERCES:-20}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-3}
CONCURRENCY=${CONCURRENCY:-16 64}
OPEN_LOOP=${OPEN_LOOP-50 80}
OPEN_CONNECTIONS=${OPEN_CONNECTIONS:-64}
LOADGEN_THREADS=${LOADGEN_THREADS:-1}
PGBENCH_THREADS=${PGBENCH_THREADS:-2}
LOADGEN=${LOADGEN:-loadtool}
WRK_THREADS=${WRK_THREADS:-2}

build_all
[[ $LOADGEN == wrk ]] && need wrk
new_run throughput
fresh_db
machine_before=$(machine_line)

log "starting the server on a fresh database ($LOAD_DB)"
start_server

log "seeding $TENANTS tenants × $COMMERCES commerces through the API"
"$LOADTOOL" seed --url "$URL" --policies "$RUN/policies" --plugins "$ROOT/plugins/dist" \
    --tenants "$TENANTS" --commerces "$COMMERCES" --out "$RUN/targets.json"

if [[ $LOADGEN == wrk ]]; then
    # The (tenant, commerce) pairs and tokens, as a Lua table for create.lua.
    jq -r '"return {\n" + ([.tenants[] | select(.role == "normal") | . as $t | .commerces[]
        | "  {tenant = \"\($t.id)\", auth = \"Bearer \($t.token)\", commerce = \"\(.id)\"},"] | join("\n")) + "\n}"' \
        "$RUN/targets.json" >"$RUN/targets.lua"
fi

log "writing the pgbench script from the warm-up creates"
"$LOADTOOL" pgbench --targets "$RUN/targets.json" --out-dir "$RUN/pgbench"

rows() { sql "SELECT count(*) FROM activities"; }

# The HTTP measurement with wrk instead (LOADGEN=wrk), as a cross-check of the
# load tool: a warm-up run, then the measured one. wrk abandons the requests
# in flight when its time is up; the server may still finish them, so rows
# can exceed the 201s wrk saw by at most C.
wrk_run() {
    local c=$1 out="$RUN/http-$c.wrk.txt" cpu_pid
    WRK_TARGETS="$RUN/targets.lua" WRK_RUN="w$c" wrk -t "$WRK_THREADS" -c "$c" -d "${WARMUP}s" \
        -s "$LOAD_DIR/wrk/create.lua" "$URL" >/dev/null
    sleep 1
    before=$(rows)
    "$LOADTOOL" cpu --delay 0.5 --duration "$((DURATION - 1))" --out "$RUN/http-$c.cpu.json" >/dev/null &
    cpu_pid=$!
    WRK_TARGETS="$RUN/targets.lua" WRK_RUN="m$c" wrk -t "$WRK_THREADS" -c "$c" -d "${DURATION}s" --latency \
        -s "$LOAD_DIR/wrk/create.lua" "$URL" >"$out"
    wait "$cpu_pid"
    sleep 1
    after=$(rows)
    # The wrk figures, with the CPU use (the server's is not split out: the
    # `rest` includes it and wrk).
    sed -n 's/^WRK_JSON //p' "$out" | jq --slurpfile cpu "$RUN/http-$c.cpu.json" '{streams: [.], cpu: $cpu[0]}' \
        >"$RUN/http-$c.json"
    read -r rps p50 p99 non2xx created < <(jq -r '.streams[0] | "\(.requests_per_sec) \(.p50_ms) \(.p99_ms) \(.non_2xx) \(.created)"' "$RUN/http-$c.json")
    added=$((after - before))
    if ((added >= created && added - created <= c)); then
        check="yes: $added rows, $created 201s seen (+$((added - created)) in flight at the stop)"
    else
        check="NO: $added rows, $created 201s"
        rows_ok=false
    fi
}

rows_ok=true
table=()
cpu_lines=()
verdict=()
for c in $CONCURRENCY; do
    log "concurrency $c: pgbench, $DURATION s (after $WARMUP s of warm-up)"
    settle_db
    # Per-second progress; the first WARMUP seconds (connections, and each
    # client preparing its statements) are left out, as for the HTTP run.
    "$LOADTOOL" cpu --delay "$WARMUP" --duration "$((DURATION - 1))" --out "$RUN/pgbench-$c.cpu.json" >/dev/null &
    cpu_pid=$!
    "$PGBENCH" -n -M prepared -D n=0 -D keybase="$(date +%s)000000000" -c "$c" -j "$PGBENCH_THREADS" -T "$((WARMUP + DURATION))" -P 1 \
        -f "$RUN/pgbench/create.pgbench" "$LOAD_DB" >"$RUN/pgbench-$c.txt" 2>&1 ||
        { cat "$RUN/pgbench-$c.txt"; die "pgbench failed"; }
    wait "$cpu_pid"
    grep -q 'aborted' "$RUN/pgbench-$c.txt" && die "pgbench aborted (see $RUN/pgbench-$c.txt)"
    grep -E '^(number of failed|latency average)' "$RUN/pgbench-$c.txt"
    tps=$(awk -v w="$WARMUP" '/^progress: / && $2 + 0 > w { sum += $4; n++ } END { if (n) printf "%.1f", sum / n }' \
        "$RUN/pgbench-$c.txt")
    [[ -n "$tps" ]] || die "no pgbench progress after the warm-up (see $RUN/pgbench-$c.txt)"
    echo "tps after the warm-up = $tps"

    log "concurrency $c: POST /api/activities over HTTP with $LOADGEN, $DURATION s (after $WARMUP s of warm-up)"
    settle_db
    if [[ $LOADGEN == wrk ]]; then
        wrk_run "$c"
    else
        before=$(rows)
        "$LOADTOOL" --threads "$LOADGEN_THREADS" load --targets "$RUN/targets.json" --concurrency "$c" \
            --duration "$DURATION" --warmup "$WARMUP" --server-pid "$SERVER_PID" --out "$RUN/http-$c.json"
        after=$(rows)
        # Every request started is awaited: the rows added are exactly the 201s.
        created=$(jq '.streams[0].created + .streams[0].warmup_created' "$RUN/http-$c.json")
        added=$((after - before))
        if [[ "$added" -eq "$created" ]]; then check="yes ($added)"; else check="NO: $added rows, $created 201s"; rows_ok=false; fi
        read -r rps p50 p99 non2xx < <(jq -r '.streams[0] | "\(.requests_per_sec) \(.p50_ms) \(.p99_ms) \(.non_2xx)"' "$RUN/http-$c.json")
    fi
    # CPU per create, in ms of one core: % of a core × 10 / rate.
    cpu_lines+=("$(jq -rn --arg c "$c" --argjson tps "$tps" --argjson rps "$rps" \
        --slurpfile p "$RUN/pgbench-$c.cpu.json" --slurpfile h "$RUN/http-$c.json" '
        def ms(pct; rate): if pct == null then "–" else (pct * 10 / rate * 1000 | round / 1000 | tostring) end;
        ($p[0]) as $p | ($h[0].cpu) as $h |
        "| \($c) | \(ms($p.postgres; $tps)) | \(ms($p.pgbench; $tps)) | \(ms($h.postgres; $rps)) | \(ms($h.server; $rps)) | \(ms(if $h.loadgen > 0.5 then $h.loadgen else null end; $rps)) | \($p.rest | round)% / \($h.rest | round)% |"')")
    ratio=$(awk -v a="$rps" -v b="$tps" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    # The targets: ratio ≥ 0.70 with no non-2xx at every concurrency (and the
    # open-loop p99 below).
    verdict+=("C=$c: ratio $ratio $(awk -v r="$ratio" 'BEGIN { print (r >= 0.70 ? "≥" : "<") }') 0.70, $non2xx non-2xx")
    table+=("$(printf '| %s | %.0f | %.2f | %.2f | %s | %.0f | %s | %s |' \
        "$c" "$rps" "$p50" "$p99" "$non2xx" "$tps" "$ratio" "$check")")
done

# The highest closed-loop rate measured: what the open-loop rates are a share of.
max_rps=0
for row in "${table[@]}"; do
    max_rps=$(awk -v m="$max_rps" -v r="$(cut -d'|' -f3 <<<"$row")" 'BEGIN { print (r + 0 > m ? r + 0 : m) }')
done
open_table=()
for pct in $OPEN_LOOP; do
    rate=$(awk -v m="$max_rps" -v p="$pct" 'BEGIN { printf "%.0f", m * p / 100 }')
    log "open loop at $pct% of $max_rps req/s: $rate req/s, $DURATION s (after $WARMUP s of warm-up)"
    settle_db
    before=$(rows)
    "$LOADTOOL" --threads "$LOADGEN_THREADS" load --targets "$RUN/targets.json" \
        --stream "name=open,tenants=normal,concurrency=$OPEN_CONNECTIONS,rate=$rate" \
        --duration "$DURATION" --warmup "$WARMUP" --server-pid "$SERVER_PID" --out "$RUN/open-$pct.json"
    after=$(rows)
    created=$(jq '.streams[0].created + .streams[0].warmup_created' "$RUN/open-$pct.json")
    added=$((after - before))
    if [[ "$added" -eq "$created" ]]; then check="yes ($added)"; else check="NO: $added rows, $created 201s"; rows_ok=false; fi
    read -r rps p50 p99 non2xx < <(jq -r '.streams[0] | "\(.requests_per_sec) \(.p50_ms) \(.p99_ms) \(.non_2xx)"' "$RUN/open-$pct.json")
    open_table+=("$(printf '| %s%% | %s | %.0f | %.2f | %.2f | %s | %s |' "$pct" "$rate" "$rps" "$p50" "$p99" "$non2xx" "$check")")
    [[ $pct == 80 ]] && verdict+=("open loop at 80%: p99 $(printf %.1f "$p99") ms $(awk -v p="$p99" 'BEGIN { print (p <= 25 ? "≤" : ">") }') 25 ms")
done

rss=$(rss_mib "$SERVER_PID" VmRSS)
stop_server

report="$RUN/report.md"
{
    echo "## Scenario 1: service vs pgbench ($(date -u +%Y-%m-%dT%H:%MZ))"
    echo
    echo "$TENANTS tenants × $COMMERCES commerces, ${DURATION} s per measurement; criteria: Wasm ROLE_MATCH_WASM then"
    echo "Rhai ROLE_MATCH; attribute: Wasm loyalty_tier. Machine: $machine_before. Server RSS at the end: ${rss} MiB."
    echo
    echo "| concurrency | service req/s | p50 ms | p99 ms | non-2xx | pgbench tps | service ÷ pgbench | rows = 201s |"
    echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    printf '%s\n' "${table[@]}"
    echo
    echo "CPU per create, in ms of one core (HTTP load: $LOADGEN; with wrk, the server's share is in \"other\"):"
    echo
    echo "| concurrency | pgbench: Postgres | pgbench: client | service: Postgres | service: server | service: load tool | other processes (pgbench run / HTTP run) |"
    echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    printf '%s\n' "${cpu_lines[@]}"
    echo
    if ((${#open_table[@]})); then
        echo "Open loop ($OPEN_CONNECTIONS connections; latency from each request's due time), at a share of the highest"
        echo "closed-loop rate above ($max_rps req/s):"
        echo
        echo "| share | rate sent | req/s served | p50 ms | p99 ms | non-2xx | rows = 201s |"
        echo "| ---: | ---: | ---: | ---: | ---: | ---: | --- |"
        printf '%s\n' "${open_table[@]}"
        echo
    fi
    echo "Targets (ratio ≥ 0.70 at 16 and 64 with zero non-2xx and rows = 201s; open-loop p99 at 80% ≤ 25 ms):"
    printf -- '- %s\n' "${verdict[@]}"
} >"$report"
cp "$report" "$RESULTS/latest.md"
echo
cat "$report"
$rows_ok || die "the activity rows do not match the 201s"
