#!/usr/bin/env bash
# Scenario 6 — what knowing before it serves costs a create.
#
# The load of run.sh (the same tenants, commerces and load tool, closed loop)
# against three servers on one database, each configuration restarted for
# every measurement and the order rotated each round:
#   - inputs off: RETEN_DECISION_INPUT_RETENTION_DAYS=0 (no decision input kept);
#   - inputs on:  the default (every create keeps its input);
#   - shadow:     the default, plus a shadow set on every tenant that decides
#                 differently (its Wasm criterion moved after the Rhai one), so
#                 every create is evaluated again and disagrees.
# Prints requests/s and p99 per run, and the medians and ratios over ROUNDS.
#
# Usage: examples/load/decisions.sh
#   TENANTS=10 COMMERCES=20 DURATION=20 WARMUP=3 CONCURRENCY=16 ROUNDS=3
#   plus lib.sh's settings (LOAD_PORT, LOAD_DB, LOAD_RUST_LOG, LOAD_SKIP_BUILD)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TENANTS=${TENANTS:-10}
COMMERCES=${COMMERCES:-20}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-3}
CONCURRENCY=${CONCURRENCY:-16}
ROUNDS=${ROUNDS:-3}

build_all
new_run decisions
fresh_db
machine_before=$(machine_line)
start_server
log "seeding $TENANTS tenants × $COMMERCES commerces through the API"
"$LOADTOOL" seed --url "$URL" --policies "$RUN/policies" --plugins "$ROOT/plugins/dist" \
    --tenants "$TENANTS" --commerces "$COMMERCES" --out "$RUN/targets.json"
stop_server

# PUT (or DELETE) every normal tenant's shadow set: its tenant.toml with the
# Wasm criterion after the Rhai one.
shadows() {
    local method=$1
    jq -r '.tenants[] | select(.role == "normal") | "\(.id) \(.token)"' "$RUN/targets.json" |
        while read -r id token; do
            local body=""
            if [[ $method == PUT ]]; then
                body=$(python3 -c 'import json, sys
t = open(sys.argv[1]).read().replace("config = { role = \"OWNER\" }\npriority = 0", "config = { role = \"OWNER\" }\npriority = 2")
print(json.dumps({"files": [{"path": "tenant.toml", "content": t}], "message": "decisions.sh"}))' \
                    "$RUN/policies/tenants/$id/tenant.toml")
            fi
            curl -fsS -o /dev/null -X "$method" "$URL/api/policies/shadow" -H "authorization: Bearer $token" \
                -H "x-tenant-id: $id" -H 'content-type: application/json' ${body:+-d "$body"} ||
                die "$method /api/policies/shadow failed for tenant $id"
        done
}

measure() {
    local config=$1 round=$2 out="$RUN/$1-$2.json"
    case $config in
        off) start_server RETEN_DECISION_INPUT_RETENTION_DAYS=0 ;;
        on) start_server ;;
        shadow) start_server; shadows PUT ;;
    esac
    settle_db
    "$LOADTOOL" load --targets "$RUN/targets.json" --concurrency "$CONCURRENCY" \
        --duration "$DURATION" --warmup "$WARMUP" --server-pid "$SERVER_PID" --out "$out" >/dev/null
    if [[ $config == shadow ]]; then
        # What the shadow sets saw, summed over tenants.
        sleep 1
        jq -r '.tenants[] | select(.role == "normal") | "\(.id) \(.token)"' "$RUN/targets.json" |
            while read -r id token; do
                curl -fsS "$URL/api/policies/shadow" -H "authorization: Bearer $token" -H "x-tenant-id: $id"
            done | jq -s '{evaluated: (map(.evaluated) | add), disagreed: (map(.disagreed) | add),
                          dropped: (map(.dropped) | add)}' >"$RUN/$config-$round.shadow.json"
        shadows DELETE
    fi
    stop_server
    jq -r --arg c "$config" --arg r "$round" '.streams[0] | "\($c) \($r) \(.requests_per_sec) \(.p99_ms) \(.non_2xx)"' "$out"
}

configs=(off on shadow)
results=()
for round in $(seq "$ROUNDS"); do
    for k in 0 1 2; do
        config=${configs[$(((k + round - 1) % 3))]}
        log "round $round: $config, C=$CONCURRENCY, $DURATION s"
        line=$(measure "$config" "$round")
        echo "$line"
        results+=("$line")
    done
done

median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
col() { printf '%s\n' "${results[@]}" | awk -v c="$1" -v f="$2" '$1 == c { print $f }' | median; }
report="$RUN/report.md"
{
    echo "## Scenario 6: decision inputs and shadow sets ($(date -u +%Y-%m-%dT%H:%MZ))"
    echo
    echo "$TENANTS tenants × $COMMERCES commerces, C=$CONCURRENCY, $DURATION s per run, $ROUNDS rounds in rotating"
    echo "order (a fresh server each run). Machine: $machine_before."
    echo
    echo "| run | config | requests/s | p99 ms | non-2xx |"
    echo "| --- | --- | --- | --- | --- |"
    printf '%s\n' "${results[@]}" | awk '{ printf "| %s | %s | %.0f | %.2f | %s |\n", $2, $1, $3, $4, $5 }'
    echo
    off_rps=$(col off 3) on_rps=$(col on 3) sh_rps=$(col shadow 3)
    off_p99=$(col off 4) on_p99=$(col on 4) sh_p99=$(col shadow 4)
    echo "| median | requests/s | p99 ms |"
    echo "| --- | --- | --- |"
    echo "| inputs off | $off_rps | $off_p99 |"
    echo "| inputs on | $on_rps | $on_p99 |"
    echo "| inputs on + shadow | $sh_rps | $sh_p99 |"
    echo
    awk -v a="$on_rps" -v b="$off_rps" 'BEGIN { printf "- keeping decision inputs: throughput %.3f× (cost %.1f %%; target ≤ 5 %%)\n", a / b, (1 - a / b) * 100 }'
    awk -v a="$sh_rps" -v b="$on_rps" -v p="$sh_p99" -v q="$on_p99" \
        'BEGIN { printf "- a shadow set on every tenant: throughput %.3f× (target ≥ 0.85×), p99 %.2f× (target ≤ 1.2×)\n", a / b, p / q }'
    echo "- shadow evaluations per run (evaluated / disagreed / dropped): $(cat "$RUN"/shadow-*.shadow.json | jq -sr 'map("\(.evaluated)/\(.disagreed)/\(.dropped)") | join(", ")')"
} | tee "$report"
cp "$report" "$RESULTS/latest-decisions.md"
