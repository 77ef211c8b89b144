#!/usr/bin/env bash
# Benchmark: the daemon's memory after a large `harness logs` read. A service prints LINES lines
# (default 500,000); we record the daemon's RSS before the read, at its peak during it, and 2 s
# after it ended. Target (issue 11): back to near the baseline (within 10 MiB) after the read; it
# stayed at 85 MB when glibc kept the freed history in its arenas.
#
#   bench/logs-memory.sh                   # builds release; prints the figures; exits 1 if over
#   HARNESS_BIN=path LINES=N bench/logs-memory.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
lines="${LINES:-500000}"
slack_kib="${SLACK_KIB:-10240}"
work="$(mktemp -d)"
export HARNESS_HOME="$work/home" HARNESS_LISTEN=127.0.0.1:0 NO_COLOR=1
cleanup() { "$HARNESS_BIN" --no-autostart daemon stop --stop-services >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
harness_bin

cat > "$work/services.yaml" <<YAML
name: logmem
services:
  chatty:
    command: "seq 1 $lines | sed 's/^/a log line of moderate length, number /'; exec sleep 100000"
YAML
cd "$work"
"$HARNESS_BIN" start >/dev/null
# Wait until every line is in the log.
for _ in $(seq 1 600); do
    n=$("$HARNESS_BIN" logs --tail 1 chatty | sed -n 's/.*number //p')
    [[ "$n" == "$lines" ]] && break
    sleep 0.1
done
pid=$(daemon_pid)
rss() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
sleep 1
before=$(rss)
peak=$before
"$HARNESS_BIN" logs > "$work/out.txt" &
reader=$!
while kill -0 "$reader" 2>/dev/null; do
    r=$(rss); (( r > peak )) && peak=$r
    sleep 0.05
done
wait "$reader"
got=$(wc -l < "$work/out.txt")
sleep 2
after=$(rss)
echo "logs of $got lines: daemon RSS before ${before} KiB, peak ${peak} KiB, 2 s after ${after} KiB (target: after <= before + ${slack_kib} KiB)"
[[ "$got" -eq "$lines" && "$after" -le $((before + slack_kib)) ]]
