#!/usr/bin/env bash
# Scenario 7 — replay speed.
#
# The demo tenant with two Rhai criteria (PREFERRED_CONTACT, ROLE_MATCH) and
# one Wasm attribute (loyalty_tier, the plugin instead of the Rhai file): BASE
# creates through the API, each keeping its decision input, then copied in SQL
# (new ids and keys, the same stored input) up to STORED activities. A
# candidate that tries the commerce rep before the preferred contact is
# replayed over all of them,
# ROUNDS times each way, alternating:
#   - api: POST /api/policies/replays, timed from the job's createdAt to its
#     finishedAt (the server's own replay thread);
#   - cli: `reten policy replay … --json`, timed from exec to exit (it also
#     loads both sets and connects).
# Each activity is decided by both the live and the candidate set. Prints
# activities per second per run and the medians.
#
# Usage: examples/load/replay.sh
#   STORED=100000 BASE=1000 ROUNDS=3
#   plus lib.sh's settings (LOAD_PORT, LOAD_DB, LOAD_RUST_LOG, LOAD_SKIP_BUILD)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STORED=${STORED:-100000}
BASE=${BASE:-1000}
ROUNDS=${ROUNDS:-3}
DEMO=de000000-0000-4000-8000-00000000de40

build_all
new_run replay
fresh_db
machine_before=$(machine_line)
mkdir -p "$RUN/policies/tenants"
cp -r "$ROOT/policies/tenants/$DEMO" "$RUN/policies/tenants/$DEMO"
rm "$RUN/policies/tenants/$DEMO/attributes/loyalty_tier.rhai"
cp "$ROOT/plugins/dist/loyalty_tier.wasm" "$RUN/policies/tenants/$DEMO/attributes/loyalty_tier.wasm"
# The candidate: the same folder, the commerce rep before the preferred contact.
mkdir -p "$RUN/candidate"
cp -r "$RUN/policies/tenants/$DEMO" "$RUN/candidate/$DEMO"
python3 - "$RUN/candidate/$DEMO/tenant.toml" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
swapped = text.replace('type = "PREFERRED_CONTACT"\npriority = 0', 'type = "PREFERRED_CONTACT"\npriority = 2')
assert swapped != text, "the demo's tenant.toml changed: update replay.sh"
open(path, "w").write(swapped)
PY
BODY=$(jq -n --rawfile c "$RUN/candidate/$DEMO/tenant.toml" --argjson n "$STORED" \
    '{files: [{path: "tenant.toml", content: $c}], limit: $n, message: "replay.sh"}')

start_server RETEN_DEMO=true RETEN_DISPATCH=false
TOKEN=$(grep -o "Bearer [^']*" "$RUN/server.log" | head -n 1 | cut -d' ' -f2)
[[ -n $TOKEN ]] || die "the demo printed no token"
H=(-H "authorization: Bearer $TOKEN" -H "x-tenant-id: $DEMO" -H 'content-type: application/json')
mapfile -t commerces < <(curl -fsS "${H[@]}" "$URL/api/commerces?per_page=10" | jq -r '.data[].id')

log "$BASE creates through the API"
for i in $(seq "$BASE"); do
    c=${commerces[$((i % ${#commerces[@]}))]}
    ch=$([[ $((i % 2)) == 0 ]] && echo WHATSAPP || echo SMS)
    printf '{"type":"MESSAGE","reason":"Promo","channel":"%s","commerce_id":"%s","idempotency_key":"replay-%s","scheduled_at":"2030-01-16T09:00:00Z","attribute_keys":["loyalty_tier"]}\n' "$ch" "$c" "$i"
done | xargs -P 4 -d '\n' -I{} curl -fsS -o /dev/null "${H[@]}" "$URL/api/activities" -d {}
[[ $(sql "SELECT count(*) FROM decision_inputs") == "$BASE" ]] || die "not every create kept its input"

log "copying them in SQL up to $STORED activities"
copies=$(((STORED + BASE - 1) / BASE - 1))
sql "CREATE TABLE copy_map AS SELECT a.id AS old_id, gen_random_uuid() AS new_id, g
     FROM activities a, generate_series(1, $copies) g WHERE a.tenant_id = '$DEMO'"
sql "INSERT INTO activities SELECT (jsonb_populate_record(NULL::activities, to_jsonb(a) || jsonb_build_object(
       'id', m.new_id, 'idempotency_key', a.idempotency_key || '-' || m.g,
       'created_at', a.created_at - make_interval(secs => m.g)))).*
     FROM copy_map m JOIN activities a ON a.id = m.old_id"
sql "INSERT INTO decision_inputs (tenant_id, activity_id, stage, recorded_at, input)
     SELECT d.tenant_id, m.new_id, d.stage, d.recorded_at, d.input FROM copy_map m JOIN decision_inputs d ON d.activity_id = m.old_id"
sql "DROP TABLE copy_map"
sql "VACUUM ANALYZE activities"
sql "VACUUM ANALYZE decision_inputs"
stored=$(sql "SELECT count(*) FROM decision_inputs")
echo "stored inputs: $stored ($(sql "SELECT pg_size_pretty(sum(length(input))) FROM decision_inputs"), $(sql "SELECT round(avg(length(input))) FROM decision_inputs") bytes each)"

api_run() {
    local id body
    id=$(curl -fsS "${H[@]}" "$URL/api/policies/replays" -d "$BODY" | jq -r .id)
    while :; do
        body=$(curl -fsS "${H[@]}" "$URL/api/policies/replays/$id")
        [[ $(jq -r .status <<<"$body") == RUNNING ]] || break
        sleep 0.2
    done
    jq -r '"\(.status) \(.evaluated) \(.changed) \(.createdAt) \(.finishedAt)"' <<<"$body" >"$RUN/api-$1.txt"
    read -r status evaluated changed from to <"$RUN/api-$1.txt"
    [[ $status == DONE ]] || die "the replay ended $status"
    python3 -c 'import sys, datetime as d
f = lambda s: d.datetime.fromisoformat(s.replace("Z", "+00:00"))
n, a, b = int(sys.argv[1]), f(sys.argv[2]), f(sys.argv[3])
print(f"api {n} {sys.argv[4]} {(b - a).total_seconds():.2f} {n / (b - a).total_seconds():.0f}")' "$evaluated" "$from" "$to" "$changed"
}

cli_run() {
    local start end
    start=$(date +%s.%N)
    RETEN_POLICIES_DIR="$RUN/policies" "$RETEN" policy replay "$RUN/candidate/$DEMO" --limit "$STORED" --json \
        >"$RUN/cli-$1.json"
    end=$(date +%s.%N)
    jq -r --arg s "$start" --arg e "$end" \
        '"cli \(.evaluated) \(.changed) \(($e | tonumber) - ($s | tonumber) | . * 100 | round / 100) \(.evaluated / (($e | tonumber) - ($s | tonumber)) | round)"' \
        "$RUN/cli-$1.json"
}

results=()
for round in $(seq "$ROUNDS"); do
    if ((round % 2)); then order=(api cli); else order=(cli api); fi
    for way in "${order[@]}"; do
        log "round $round: $way"
        line=$("${way}_run" "$round")
        echo "$line"
        results+=("$line")
    done
done
stop_server

median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
report="$RUN/report.md"
{
    echo "## Scenario 7: replay speed ($(date -u +%Y-%m-%dT%H:%MZ))"
    echo
    echo "$stored stored decision inputs of the demo tenant (two Rhai criteria, one Wasm attribute), each decided by"
    echo "the live and the candidate set. Machine: $machine_before."
    echo
    echo "| way | evaluated | changed | seconds | activities/s |"
    echo "| --- | --- | --- | --- | --- |"
    printf '%s\n' "${results[@]}" | awk '{ printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5 }'
    echo
    for way in api cli; do
        echo "- $way: median $(printf '%s\n' "${results[@]}" | awk -v w="$way" '$1 == w { print $5 }' | median) activities/s (target ≥ 5,000)"
    done
} | tee "$report"
cp "$report" "$RESULTS/latest-replay.md"
