#!/usr/bin/env bash
# 30 remote services, 10 on each of the testbed's h1..h3, through the real daemon and CLI:
#   cold start   — no ssh connection open yet — until `harness start` reports all running and
#                  healthy (a command check each, every 200 ms) (target ≤ 1 s)
#   warm start   — the same with the connections already up
#   stop         — all 30, nothing left behind
#   per-command  — one command round trip over a host's shared connection (hosts check, best of 3),
#                  and `harness exec` of `true` on a remote service (CLI → daemon → ssh → back)
# Needs the testbed up (tests/testbed/up.sh) and a built harness (cargo build --release -p harness).
# Usage: bash bench/remote-services.sh [RUNS]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
ENV_FILE=${HARNESS_TESTBED_ENV:-/var/lib/harness-testbed/testbed.env}
# shellcheck disable=SC1090
. "$ENV_FILE"
BIN=${HARNESS_BIN:-${CARGO_TARGET_DIR:-target}/release/harness}
[ -x "$BIN" ] || { echo "build first: cargo build --release -p harness (or set HARNESS_BIN)" >&2; exit 2; }
BIN=$(realpath "$BIN")

work=$(mktemp -d /tmp/harness-bench-remote.XXXXXX)
export HARNESS_HOME="$work/home" XDG_RUNTIME_DIR="$work/run" HARNESS_KNOWN_HOSTS="$TB_SSH_KNOWN_HOSTS"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
cleanup() {
    if cd "$work"; then "$BIN" stop >/dev/null 2>&1 || true; fi
    "$BIN" daemon stop >/dev/null 2>&1 || true
    for c in "$XDG_RUNTIME_DIR"/harness-ssh/*.conf; do
        if [ -e "$c" ]; then ssh -F "$c" -O exit "$(basename "$c" .conf)" >/dev/null 2>&1 || true; fi
    done
    rm -rf "$work"
}
trap cleanup EXIT

{
    echo "name: benchremote"
    echo "hosts:"
    for h in 1 2 3; do
        addr_var="TB_H${h}_ADDR"
        echo "  h$h: {address: ${!addr_var}, user: $TB_SSH_USER, identity_file: $TB_SSH_KEY}"
    done
    echo "services:"
    for h in 1 2 3; do
        for i in $(seq 1 10); do
            echo "  s$h-$i: {host: h$h, command: \"while :; do sleep 1; done\", health_check: {command: [\"true\"], interval: 200ms}}"
        done
    done
} > "$work/services.yaml"
cd "$work"

ms() { echo $(( ($2 - $1) / 1000000 )); }
close_masters() {
    for c in "$XDG_RUNTIME_DIR"/harness-ssh/*.conf; do
        [ -e "$c" ] || continue
        for s in "$XDG_RUNTIME_DIR"/harness-ssh/*.sock "$XDG_RUNTIME_DIR"/harness-ssh/cm-*; do
            if [ -S "$s" ]; then ssh -F "$c" -o ControlPath="$s" -O exit x >/dev/null 2>&1 || true; fi
        done
    done
}

"$BIN" daemon start >/dev/null
cold=() warm=() stop=()
for _ in $(seq 1 "$RUNS"); do
    "$BIN" daemon stop >/dev/null 2>&1 || true
    close_masters
    "$BIN" daemon start >/dev/null
    t0=$(date +%s%N); "$BIN" start >/dev/null; t1=$(date +%s%N)
    cold+=("$(ms "$t0" "$t1")")
    t0=$(date +%s%N); "$BIN" stop >/dev/null; t1=$(date +%s%N)
    stop+=("$(ms "$t0" "$t1")")
    t0=$(date +%s%N); "$BIN" start >/dev/null; t1=$(date +%s%N)
    warm+=("$(ms "$t0" "$t1")")
    "$BIN" stop >/dev/null
done
left=0
for h in h1 h2 h3; do
    n=$(ssh -F "$TB_SSH_CONFIG" "$h" 'pgrep -c -f "[w]hile :; do sleep 1; done" || true')
    left=$((left + n))
done

"$BIN" start >/dev/null
sleep 2
masters=$(pgrep -c -f "ssh -F $XDG_RUNTIME_DIR/harness-ssh/.* -M " || true)
t0=$(date +%s%N)
for _ in $(seq 1 20); do "$BIN" exec s1-1 -- true; done
t1=$(date +%s%N)
exec_ms=$(( $(ms "$t0" "$t1") / 20 ))
rtt=$("$BIN" hosts check -o json | sed -n 's/.*"latency_ms": \([0-9.]*\).*/\1/p' | tr '\n' ' ')
"$BIN" stop >/dev/null

med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "30 remote services (10 on each of h1..h3), $RUNS runs, median (all runs):"
echo "  cold start until all running+healthy: $(med "${cold[@]}") ms   (${cold[*]})"
echo "  warm start until all running+healthy: $(med "${warm[@]}") ms   (${warm[*]})"
echo "  stop all 30:                  $(med "${stop[@]}") ms   (${stop[*]})"
echo "  processes left on the hosts after stop: $left"
echo "  ssh connections (masters) for 3 hosts, 30 services health-checked every 200 ms: $masters"
echo "  harness exec s1-1 -- true (CLI → daemon → ssh → h1): $exec_ms ms per command"
echo "  one command over a host's shared ssh connection (h1 h2 h3): $rtt ms"
