#!/usr/bin/env bash
# Where the CPU goes under load: seeds like run.sh, drives creates at one
# concurrency, records the whole machine (`perf record -a`) and then the
# server alone with DWARF call graphs, DURATION seconds each. Prints the CPU
# split by process (server, Postgres, load tool, anything else running) and
# the server's time by stage; the recordings stay in $RUN.
#
# Usage: examples/load/profile.sh
#   TENANTS=10 COMMERCES=20 CONCURRENCY=16 DURATION=10
#   plus lib.sh's settings (LOAD_PORT, LOAD_DB, LOAD_RUST_LOG, LOAD_SKIP_BUILD)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TENANTS=${TENANTS:-10}
COMMERCES=${COMMERCES:-20}
CONCURRENCY=${CONCURRENCY:-16}
DURATION=${DURATION:-10}

command -v perf >/dev/null || die "perf is not installed (apt-get install linux-perf)"
build_all
new_run profile
fresh_db
start_server
"$LOADTOOL" seed --url "$URL" --policies "$RUN/policies" --plugins "$ROOT/plugins/dist" \
    --tenants "$TENANTS" --commerces "$COMMERCES" --out "$RUN/targets.json"

log "creates at $CONCURRENCY connections; perf records the machine, then the server, $DURATION s each"
"$LOADTOOL" load --targets "$RUN/targets.json" --concurrency "$CONCURRENCY" --duration "$((2 * DURATION + 4))" \
    --warmup 0 --server-pid "$SERVER_PID" --out "$RUN/load.json" &
load_pid=$!
sleep 2
# The whole machine, no call graphs: who uses the CPU.
perf record -a -F 499 -o "$RUN/perf-machine.data" -- sleep "$DURATION" 2>/dev/null
# The server alone, with DWARF call graphs (the release build keeps line
# tables; it has no frame pointers): what it spends it on.
perf record -p "$SERVER_PID" -F 299 --call-graph dwarf,16384 -o "$RUN/perf-server.data" -- sleep "$DURATION" 2>/dev/null
wait "$load_pid"
stop_server

log "CPU by process (% of the samples of both cores)"
perf report -i "$RUN/perf-machine.data" --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -10
log "the server: inclusive time of the main stages (% of the server's samples)"
perf report -i "$RUN/perf-server.data" --children --sort sym --stdio -g none 2>/dev/null >"$RUN/perf-server.txt"
grep -E 'reten_host::|sqlx_[a-z]+::.*(fetch|execute|ping)|hyper::proto::h1::(dispatch|role)|tracing_subscriber::fmt|serde_json::(ser|de)::|wasmtime::.*(instantiate|call_async)|rhai::engine|jsonwebtoken::|do_syscall_64|malloc|sys_(sendto|recvfrom|writev|mprotect|futex|epoll)' \
    "$RUN/perf-server.txt" | head -45 | cut -c1-160
echo
echo "perf data: $RUN/perf-machine.data, $RUN/perf-server.data (perf report -i …); summary: $RUN/perf-server.txt"
