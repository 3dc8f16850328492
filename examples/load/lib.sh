# Shared by run.sh, noisy.sh, tenants.sh and profile.sh (sourced, not run): building,
# a fresh database, starting and always stopping the release server.
#
# Settings (environment):
#   LOAD_PORT      the server's port (default 18080)
#   LOAD_DB        the database, dropped and created again each run (default reten_load)
#   PGHOST/PGPORT/PGUSER   Postgres (default 127.0.0.1, 5432, postgres; trust auth)
#   LOAD_RUST_LOG  RUST_LOG for the server (default: the service's own default)
#   LOAD_SKIP_BUILD=1      use the binaries already built
#   LOAD_RETEN_BIN         another server binary to measure (an experimental build)
#   LOAD_PG_SETTINGS       settings for the load database, for experiments, e.g.
#                          "plan_cache_mode=force_generic_plan synchronous_commit=off"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LOAD_DIR="$ROOT/examples/load"
RESULTS="$LOAD_DIR/results"
export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
LOAD_PORT="${LOAD_PORT:-18080}"
LOAD_DB="${LOAD_DB:-reten_load}"
URL="http://127.0.0.1:$LOAD_PORT"
DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$LOAD_DB"
# The tokens the harness mints are signed with this; it never leaves the machine.
RETEN_JWT_SECRET="load-harness-secret-not-for-production-0123456789"
export DATABASE_URL RETEN_JWT_SECRET

RETEN="${LOAD_RETEN_BIN:-$ROOT/target/release/reten}"
LOADTOOL="$ROOT/target/release/examples/loadtool"
SERVER_PID=""

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# One run at a time per database: a second run would drop the first one's
# database and fight for its port.
exec 9>"/tmp/reten-load-$LOAD_DB.lock"
flock -n 9 || die "another load run is using $LOAD_DB (lock /tmp/reten-load-$LOAD_DB.lock); wait, or set LOAD_DB and LOAD_PORT"

# Installs an apt package when its command is missing.
need() {
    local cmd=$1 pkg=${2:-$1}
    command -v "$cmd" >/dev/null && return
    log "installing $pkg"
    if [[ $(id -u) -eq 0 ]]; then apt-get install -y "$pkg"; else sudo apt-get install -y "$pkg"; fi
}

# pgbench ships with the server packages; it is not always on PATH.
find_pgbench() {
    if command -v pgbench >/dev/null; then PGBENCH=pgbench; return; fi
    PGBENCH=$(ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -n 1)
    [[ -x "$PGBENCH" ]] || die "pgbench not found (it comes with the postgresql packages)"
}

# The release server, the load tool (a cargo example of reten-host) and the
# Wasm plugins.
build_all() {
    need jq
    need curl
    need psql postgresql-client
    find_pgbench
    pg_isready -q || die "Postgres is not accepting connections on $PGHOST:$PGPORT"
    if [[ "${LOAD_SKIP_BUILD:-0}" == 1 ]]; then return; fi
    log "building the release server, the load tool and the plugins"
    (cd "$ROOT" && cargo build --release --bin reten && cargo build --release -p reten-host --example loadtool)
    "$ROOT/plugins/build.sh" >/dev/null
}

# A new results folder for this run: $RUN (with the policies the server reads).
new_run() {
    local name=$1
    RUN="$RESULTS/$name-$(date +%Y%m%d-%H%M%S)"
    mkdir -p "$RUN/policies"
    # The global policies only; tenant folders are written by `loadtool seed`.
    cp -r "$ROOT/policies/global" "$RUN/policies/global"
    echo "results in $RUN"
}

# Drops and creates the database (the server applies the migrations), with
# LOAD_PG_SETTINGS applied to every session on it.
fresh_db() {
    dropdb --if-exists --force "$LOAD_DB"
    createdb "$LOAD_DB"
    local setting
    for setting in ${LOAD_PG_SETTINGS:-}; do
        psql -X -q -d "$LOAD_DB" -c "ALTER DATABASE $LOAD_DB SET ${setting%%=*} = '${setting#*=}'"
    done
}

# Starts the release server on $RUN/policies in the background, logging to
# $RUN/server.log, and waits until /readyz answers. Extra arguments are
# environment assignments (VAR=value).
start_server() {
    [[ -z "$SERVER_PID" ]] || die "the server is already running"
    port_free
    env "$@" \
        RETEN_LISTEN="127.0.0.1:$LOAD_PORT" \
        RETEN_POLICIES_DIR="$RUN/policies" \
        ${LOAD_RUST_LOG:+RUST_LOG="$LOAD_RUST_LOG"} \
        "$RETEN" serve >>"$RUN/server.log" 2>&1 9>&- &
    SERVER_PID=$!
    if ! "$LOADTOOL" ready --url "$URL" --pid "$SERVER_PID" --timeout-secs 300 >/dev/null; then
        tail -n 20 "$RUN/server.log" >&2
        die "the server did not get ready"
    fi
}

# Dies if something already listens on LOAD_PORT (its /readyz would pass
# for ours).
port_free() {
    if (exec 3<>"/dev/tcp/127.0.0.1/$LOAD_PORT") 2>/dev/null; then
        die "something already listens on 127.0.0.1:$LOAD_PORT; stop it or set LOAD_PORT"
    fi
}

# Stops the server (SIGTERM, then SIGKILL after 30 s) and waits for it.
stop_server() {
    [[ -n "$SERVER_PID" ]] || return 0
    local pid=$SERVER_PID
    SERVER_PID=""
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Always stop the server, whatever happens.
trap stop_server EXIT
trap 'exit 130' INT TERM

# SQL on the load database, unaligned.
sql() { psql -X -q -At -d "$LOAD_DB" -c "$1"; }

# Vacuums and checkpoints so that each measurement starts from the same
# state (no pending dirty pages or dead tuples from the previous one).
settle_db() {
    sql "VACUUM ANALYZE" >/dev/null
    sql "CHECKPOINT" >/dev/null
}

# VmRSS / VmHWM of a process, in MiB.
rss_mib() { awk -v k="$2:" '$1 == k { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

# A short description of the machine and of how busy it was.
machine_line() {
    echo "$(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), \
load average $(cut -d' ' -f1-3 /proc/loadavg), $(git -C "$ROOT" rev-parse --short HEAD)$(
        git -C "$ROOT" diff --quiet HEAD -- host 2>/dev/null || echo '+changes')"
}
