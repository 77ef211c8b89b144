#!/usr/bin/env bash
# harness in the peers' lifecycle benchmark (/work/shared/peers, see its README): the same hooks the
# peer scripts define, timed by the same lib.sh, so harness and the peers are measured in one run.
#
#   bash bench/bench_harness.sh                 # builds release, runs harness + supervisord-ss0 (best peer)
#   PEERS_TOO="pm2 circus" bash bench/bench_harness.sh
#   REPS=5 NS="10 100" bash bench/bench_harness.sh
#
# As a hook script alone (what run_all.sh calls): HARNESS_BENCH_HOOKS=1 bash bench/bench_harness.sh
# Targets (issue 5): cold start of 100 `sleep` services, no daemon running, until `status -o json` shows
# all running <= 150 ms; one status call with 100 running <= 5 ms; stop-all until all exited <= 50 ms;
# daemon RSS with 100 services <= 10 MiB; `harness --version` <= 3 ms.
set -u
ROOT=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
export PEERBENCH_LIB=${PEERBENCH_LIB:-/work/shared/peers}
export HARNESS_BIN=${HARNESS_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/harness}

if [[ ${HARNESS_BENCH_HOOKS:-0} != 1 ]]; then
    # Driver: build, then one run_all.sh over harness and the peers.
    (cd "$ROOT" && cargo build --release -q -p harness) || exit 1
    [[ -x $PEERBENCH_LIB/lib.sh || -f $PEERBENCH_LIB/lib.sh ]] || { echo "no $PEERBENCH_LIB/lib.sh" >&2; exit 1; }
    [[ -x /tmp/peerbench/venv-supervisor/bin/supervisord ]] || bash "$PEERBENCH_LIB/install.sh"
    export REPS=${REPS:-5} NS=${NS:-"10 100"}
    export PB=${PB:-/tmp/peerbench} RES=${RES:-/tmp/peerbench/results-harness}
    rm -rf "$RES"; mkdir -p "$RES"
    PEERS="${PEERS_TOO:-supervisord-ss0} $(readlink -f "$0")" SKIP_BASELINE=1 \
        HARNESS_BENCH_HOOKS=1 bash "$PEERBENCH_LIB/run_all.sh"
    exit $?
fi

source "$PEERBENCH_LIB/lib.sh"
PEER_LABEL=${PEER_LABEL:-harness}
W=$RUN/$PEER_LABEL
export HARNESS_HOME=$W/home
export NO_COLOR=1
unset HARNESS_DAEMON HARNESS_NO_AUTOSTART HARNESS_FILE
H="timeout $CLI_T $HARNESS_BIN"
mkdir -p "$W"

write_yaml() { # lines of "name|argv-json"
    { echo "name: bench"; echo "services:"
      local p; for p in "$@"; do printf '  %s:\n    command: %s\n' "${p%%|*}" "${p#*|}"; done
    } > "$W/services.yaml"
}
# A cold start: no daemon and no state but the credentials (what a user has after the first run).
fresh_state() {
    [[ -f $HARNESS_HOME/daemon.pid ]] && alive "$(cat "$HARNESS_HOME/daemon.pid")" && $H daemon stop --stop-services
    rm -rf "$HARNESS_HOME/projects" "$HARNESS_HOME/registry.redb" "$HARNESS_HOME/daemon.log"
}
peer_prepare() {
    fresh_state
    local i a=(); for ((i = 1; i <= $1; i++)); do a+=("$(printf 's%03d' "$i")|[sleep, \"100000\"]"); done
    write_yaml "${a[@]}"
}
peer_start() { $H -f "$W/services.yaml" start; }     # auto-starts the daemon
peer_count_running() { $H -p bench status -o json | grep -c '"kind": "running"'; }
peer_status() { $H -p bench status -o json; }
peer_stop() { $H -p bench stop; }
peer_daemon_pid() { cat "$HARNESS_HOME/daemon.pid" 2>/dev/null; }
peer_shutdown() { $H --no-autostart daemon stop --stop-services; }
peer_cleanup_stale() { fresh_state; :; }
peer_cli() { echo "$HARNESS_BIN --version"; }

peer_crash_prepare() {
    fresh_state
    write_yaml "crasher|[sh, -c, \"sleep 0.2; exit 1\"]"
    printf '    restart: always\n' >> "$W/services.yaml"
}
peer_crash_start() { $H -f "$W/services.yaml" start; }
peer_crash_state() { $H -p bench status -o json | tr -d ' \n' | grep -o '"state":{[^}]*}'; }

main_bench
