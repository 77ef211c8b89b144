#!/usr/bin/env bash
# Benchmark: what sampling costs the daemon (issue 15, ADR 0037). 100 local services run; the
# daemon's CPU time (utime + stime from /proc/PID/stat) is measured over SECS seconds (default 60)
# twice: idle, then while `harness top --watch` reads all 100 every 2 s. Target: sampling adds
# at most 1 % of one core.
#
#   bench/top.sh                          # builds release; prints the figures; exits 1 if over
#   HARNESS_BIN=target/debug/harness SERVICES=100 SECS=60 bench/top.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
services="${SERVICES:-100}"
secs="${SECS:-60}"
work="$(mktemp -d)"
export HARNESS_HOME="$work/home" HARNESS_LISTEN=127.0.0.1:0 NO_COLOR=1
watcher=""
cleanup() {
    [[ -n "$watcher" ]] && kill "$watcher" 2>/dev/null || true
    "$HARNESS_BIN" --no-autostart daemon stop --stop-services >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
harness_bin

{
    echo "name: topbench"
    echo "services:"
    for i in $(seq 1 "$services"); do
        echo "  s$i:"
        echo "    command: [sleep, '86400']"
    done
} > "$work/services.yaml"
cd "$work"
"$HARNESS_BIN" start >/dev/null
pid=$(daemon_pid)
hz=$(getconf CLK_TCK)
ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
cpu_over() { # seconds -> percent of one core used by the daemon over that time
    local a b
    a=$(ticks); sleep "$1"; b=$(ticks)
    python3 -c "print(round(($b - $a) / $hz / $1 * 100, 3))"
}
sleep 2
idle=$(cpu_over "$secs")
"$HARNESS_BIN" top --watch -o json > "$work/top.json" &
watcher=$!
sleep 3   # the first reading (two, 1 s apart) is done
sampling=$(cpu_over "$secs")
kill "$watcher"; wait "$watcher" 2>/dev/null || true
watcher=""
readings=$(grep -c '"elapsed_ms"' "$work/top.json" || true)
last_ms=$(grep '"elapsed_ms"' "$work/top.json" | tail -1 | tr -dc '0-9')
extra=$(python3 -c "print(round($sampling - $idle, 3))")
echo "daemon CPU with $services services over ${secs}s: idle ${idle} %, with top --watch ${sampling} % (${readings} readings, last took ${last_ms} ms); sampling adds ${extra} % of one core (target <= 1 %)"
python3 -c "import sys; sys.exit(0 if $extra <= 1.0 else 1)"
