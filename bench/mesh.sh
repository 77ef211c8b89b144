#!/usr/bin/env bash
# WireGuard mesh (issue 13, ADR 0034) on the testbed, through the real daemon and CLI:
#   up      — a mesh of 4 members (this machine, h1, h2, h3; wireguard-go on each) brought up by
#             `harness start`, from nothing (no interface; first run also without keys), as the
#             daemon logs it ("mesh up in N ms")                               (target ≤ 2 s)
#   latency — ICMP round trip h1 → h2 over the mesh vs the underlay, p50 of 200 pings
#                                                                   (target: mesh adds ≤ 0.5 ms)
#   iperf3  — TCP throughput h1 → h2 over the mesh vs the underlay, 5 s each (target ≥ 200 Mbit/s)
# Needs the testbed up (tests/testbed/up.sh), iperf3, and a built harness (HARNESS_BIN, default
# target/release/harness, else target/debug/harness). Run as root.
# Usage: bash bench/mesh.sh [RUNS]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
ENV_FILE=${HARNESS_TESTBED_ENV:-/var/lib/harness-testbed/testbed.env}
# shellcheck disable=SC1090
. "$ENV_FILE"
BIN=${HARNESS_BIN:-target/release/harness}
[ -x "$BIN" ] || BIN=target/debug/harness
[ -x "$BIN" ] || { echo "build first: cargo build -p harness (or set HARNESS_BIN)" >&2; exit 2; }
BIN=$(realpath "$BIN")
PORT=$((51900 + 10 * TB_INSTANCE))

work=$(mktemp -d /tmp/harness-bench-mesh.XXXXXX)
export HARNESS_HOME="$work/home" XDG_RUNTIME_DIR="$work/run" HARNESS_KNOWN_HOSTS="$TB_SSH_KNOWN_HOSTS"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
cleanup() {
    if cd "$work"; then "$BIN" stop >/dev/null 2>&1 || true; fi
    "$BIN" daemon stop >/dev/null 2>&1 || true
    for c in "$XDG_RUNTIME_DIR"/harness-ssh/*.conf; do
        if [ -e "$c" ]; then ssh -F "$c" -O exit "$(basename "$c" .conf)" >/dev/null 2>&1 || true; fi
    done
    for f in $ifaces; do rm -f "/var/lib/harness/wireguard/$f.key"; done
    ip netns exec "$TB_H2_NETNS" pkill -f "iperf3 -s -p 5201$TB_INSTANCE" 2>/dev/null || true
    rm -rf "$work"
}
ifaces=""
trap cleanup EXIT

{
    echo "name: benchmesh"
    echo "hosts:"
    for h in 1 2 3; do
        addr_var="TB_H${h}_ADDR"
        echo "  h$h: {address: ${!addr_var}, user: $TB_SSH_USER, identity_file: $TB_SSH_KEY, sudo: true}"
    done
    echo "networks:"
    echo "  mesh:"
    echo "    type: wireguard"
    echo "    subnet: 10.79.$TB_INSTANCE.0/24"
    echo "    listen_port: $PORT"
    echo "    nodes: [{host: local}, {host: h1}, {host: h2}, {host: h3}]"
    echo "services:"
    echo "  idle:"
    echo "    host: h1"
    echo "    command: sleep 600"
} >"$work/services.yaml"
cd "$work"
ifaces=$("$BIN" network list -o json | grep -o '"interface": *"[^"]*"' | sed 's/.*"\(hw[^"]*\)"/\1/' | tr '\n' ' ')

ups=()
for i in $(seq 1 "$RUNS"); do
    "$BIN" start >/dev/null
    ms=$("$BIN" daemon logs 2>/dev/null | sed -n 's/.*mesh up in \([0-9]*\) ms.*/\1/p' | tail -1)
    ups+=("$ms")
    echo "run $i: mesh of 4 up in $ms ms" >&2
    [ "$i" -lt "$RUNS" ] && "$BIN" stop >/dev/null
done
"$BIN" network test -o json >"$work/test.json" || { cat "$work/test.json"; exit 1; }

addr() { "$BIN" network list -o json | tr -d '\n ' | grep -o "\"member\":\"$1\"[^}]*" | sed 's/.*"address":"\([0-9.]*\)\/.*/\1/'; }
M2=$(addr h2)
p50() { # busybox ping times → median
    ip netns exec "$TB_H1_NETNS" busybox ping -c 200 -i 0.01 -q "$1" >/dev/null 2>&1 || true
    ip netns exec "$TB_H1_NETNS" busybox ping -c 200 -i 0.01 "$1" 2>/dev/null |
        sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
lat_mesh=$(p50 "$M2")
lat_under=$(p50 "$TB_H2_ADDR")
ip netns exec "$TB_H2_NETNS" iperf3 -s -p "5201$TB_INSTANCE" -D >/dev/null
sleep 0.3
bw() {
    ip netns exec "$TB_H1_NETNS" iperf3 -c "$1" -p "5201$TB_INSTANCE" -t 5 -J |
        python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))'
}
bw_mesh=$(bw "$M2")
bw_under=$(bw "$TB_H2_ADDR")

sorted=$(printf '%s\n' "${ups[@]}" | sort -n | tr '\n' ' ')
echo "mesh up (ms, runs sorted; run 1 also makes the keys): ${ups[*]} -> sorted $sorted"
echo "latency p50 h1->h2: mesh $lat_mesh ms, underlay $lat_under ms"
echo "throughput h1->h2: mesh $bw_mesh Mbit/s, underlay $bw_under Mbit/s"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
