#!/usr/bin/env bash
# `harness drift` benchmark (issue 15): 100 local services, 30 remote services (10 on each of the
# testbed hosts h1, h2, h3) and 10 containers on the local engine, all running; then `harness drift
# -o json` ROUNDS times (default 20): the median and worst wall time of the CLI call, and the
# daemon's own `elapsed_ms` (probe + compare). Target: <= 500 ms. One round is also run with a
# hand-started orphan, to check the probe finds it at this size.
#
# Needs the testbed (HARNESS_TESTBED_ENV, e.g. HARNESS_TESTBED_INSTANCE=3 bash tests/testbed/up.sh)
# and a release build (cargo build --release -p harness, or HARNESS_BIN). Writes the figures to
# stdout and, with RESULTS=FILE, appends them there.
set -euo pipefail
cd "$(dirname "$0")/.."
ENV_FILE=${HARNESS_TESTBED_ENV:-/var/lib/harness-testbed/testbed.env}
# shellcheck disable=SC1090
. "$ENV_FILE"
LOCAL=${LOCAL:-100}
PER_HOST=${PER_HOST:-10}
CONTAINERS=${CONTAINERS:-10}
ROUNDS=${ROUNDS:-20}
BIN=${HARNESS_BIN:-target/release/harness}
[ -x "$BIN" ] || { echo "build first: cargo build --release -p harness (or set HARNESS_BIN)" >&2; exit 2; }
BIN=$(realpath "$BIN")

work=$(mktemp -d /tmp/harness-bench-drift.XXXXXX)
export HARNESS_HOME="$work/home" XDG_RUNTIME_DIR="$work/run" HARNESS_KNOWN_HOSTS="$TB_SSH_KNOWN_HOSTS" NO_COLOR=1
export DOCKER_HOST="$TB_DOCKER_LOCAL" HARNESS_LISTEN=127.0.0.1:0
mkdir -p "$XDG_RUNTIME_DIR" "$work/p" && chmod 700 "$XDG_RUNTIME_DIR"
orphan=
cleanup() {
    [ -z "$orphan" ] || kill "$orphan" 2>/dev/null || true
    (cd "$work/p" && "$BIN" --no-autostart stop --force >/dev/null 2>&1) || true
    "$BIN" --no-autostart daemon stop --stop-services >/dev/null 2>&1 || true
    mapfile -t left < <(pgrep -f "ssh -F $work/" || true)
    [ "${#left[@]}" -eq 0 ] || kill "${left[@]}" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s%N; }
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
max() { printf '%s\n' "$@" | sort -n | tail -1; }

{
    echo "name: driftbench"
    echo "hosts:"
    for h in h1 h2 h3; do
        v="TB_${h^^}_ADDR"
        echo "  $h: {address: ${!v}, user: $TB_SSH_USER, identity_file: $TB_SSH_KEY}"
    done
    echo "services:"
    for i in $(seq 1 "$LOCAL"); do echo "  l$i: {command: \"sleep 100000\"}"; done
    for h in h1 h2 h3; do
        for i in $(seq 1 "$PER_HOST"); do echo "  r$h-$i: {host: $h, command: \"sleep 100000\"}"; done
    done
    for i in $(seq 1 "$CONTAINERS"); do
        echo "  c$i: {type: docker, image: \"$TB_IMAGE\", command: [\"sleep\", \"100000\"]}"
    done
} >"$work/p/services.yaml"
cd "$work/p"
a=$(now)
"$BIN" start >/dev/null
b=$(now)
total=$(( LOCAL + 3 * PER_HOST + CONTAINERS ))
running=$("$BIN" status -o json | python3 -c 'import json,sys; print(sum(1 for s in json.load(sys.stdin) if s["state"]["kind"] == "running"))')
[ "$running" -eq "$total" ] || { echo "only $running of $total running" >&2; exit 1; }
echo "started $total services in $(( (b - a) / 1000000 )) ms"

wall=(); daemon=()
for _ in $(seq 1 "$ROUNDS"); do
    a=$(now)
    out=$("$BIN" drift -o json) || { echo "drift found something:" >&2; echo "$out" >&2; exit 1; }
    b=$(now)
    wall+=("$(( (b - a) / 1000000 ))")
    daemon+=("$(python3 -c 'import json,sys; print(json.load(sys.stdin)["elapsed_ms"])' <<<"$out")")
done
probes=$(python3 -c '
import json,sys
d=json.load(sys.stdin)
print("; ".join("%s: %d seen in %d ms" % (p["place"], p["seen"], p["elapsed_ms"]) for p in d["probes"]))' <<<"$out")

# One orphan among them: a hand-started sleep with l1's launch id.
l1=$("$BIN" status -o json | python3 -c 'import json,sys; print([s for s in json.load(sys.stdin) if s["name"]=="l1"][0]["runtime"]["pid"])')
id=$(tr '\0' '\n' <"/proc/$l1/environ" | sed -n 's/^HARNESS_LAUNCH_ID=//p')
HARNESS_LAUNCH_ID=$id setsid sleep 100001 </dev/null >/dev/null 2>&1 &
orphan=$!
sleep 0.2
found=$("$BIN" drift -o json | python3 -c 'import json,sys; print(sum(1 for f in json.load(sys.stdin)["findings"] if f["category"]=="orphaned" and f["service"]=="l1"))' || true)

report=$(cat <<EOT
drift over $LOCAL local + $((3 * PER_HOST)) remote (h1 h2 h3) + $CONTAINERS containers, $ROUNDS rounds:
  CLI wall time: median $(med "${wall[@]}") ms, worst $(max "${wall[@]}") ms (target <= 500 ms)
  daemon elapsed_ms: median $(med "${daemon[@]}") ms, worst $(max "${daemon[@]}") ms
  last probes: $probes
  hand-started orphan found: $found
EOT
)
echo "$report"
[ -z "${RESULTS:-}" ] || echo "$report" >>"$RESULTS"
