#!/usr/bin/env bash
# Regenerates harness/harnessd.order (ADR 0041): the functions `harnessd` runs while it starts, starts
# 100 services, answers `status`, `top`, `logs`, `health`, a restart and a stop, and serves the web
# dashboard to headless Chromium (when chromedriver is installed). The release link places them first
# in the daemon's code, so the code it runs sits together and the code it never runs is never mapped.
#
#   bash bench/harnessd_order.sh          # builds release first; needs valgrind (callgrind)
#   HARNESS_BIN=target/release/harness bash bench/harnessd_order.sh
#
# Symbol names carry a hash of their crate's build (version, features, dependencies, toolchain): run it
# again after a dependency or toolchain update (names that no longer exist are ignored by the link,
# so a stale list only costs memory, never correctness).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
harness_bin
daemon="$(dirname "$HARNESS_BIN")/harnessd"
out="$root/harness/harnessd.order"
work="$(mktemp -d)"
# Already set: harnessd does not run itself again (which valgrind would not follow).
export HARNESS_HOME="$work/home" NO_COLOR=1 GLIBC_TUNABLES=glibc.malloc.tcache_count=0
driver_pid=""
cleanup() {
    [[ -n "$driver_pid" ]] && kill "$driver_pid" 2>/dev/null || true
    "$HARNESS_BIN" --no-autostart daemon stop --stop-services >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

sleep_services "$work/services.yaml" 100

valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" --dump-instr=no \
    --compress-strings=no --compress-pos=no --demangle=no \
    "$daemon" --listen 127.0.0.1:0 > "$work/valgrind.log" 2>&1 &
valgrind_pid=$!
for _ in $(seq 1 120); do [[ -f $HARNESS_HOME/daemon.json ]] && break; sleep 0.5; done

h() { "$HARNESS_BIN" --no-autostart "$@"; }
h -f "$work/services.yaml" start > /dev/null
# A profile of a daemon whose services did not start would be the wrong list: stop here.
running=0
for _ in $(seq 1 120); do
    running=$(h -p bench status -o json | grep -c '"kind": "running"' || true)
    [[ $running == 100 ]] && break
    sleep 0.5
done
if [[ $running != 100 ]]; then
    echo "harnessd_order.sh: $running of 100 services run under valgrind; see its log:" >&2
    tail -n 30 "$work/valgrind.log" >&2
    h -p bench status >&2 || true
    exit 1
fi
for _ in 1 2 3; do h -p bench status -o json > /dev/null; h -p bench status > /dev/null; done
h -p bench top > /dev/null
h -p bench logs s001 > /dev/null
h -p bench health > /dev/null
h -p bench restart s001 > /dev/null
if command -v chromedriver > /dev/null && command -v chromium > /dev/null; then
    url=$(h dashboard --no-open -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])')
    spki=$(openssl x509 -in "$HARNESS_HOME/server.pem" -pubkey -noout | openssl pkey -pubin -outform der \
        | openssl dgst -sha256 -binary | base64)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    chromedriver --port="$port" > /dev/null 2>&1 &
    driver_pid=$!
    python3 "$root/bench/dashboard_driver.py" "$port" "$url" "$spki" "$work/profile" 100 2 \
        "$(daemon_pid)" > /dev/null || true
fi
h -p bench stop > /dev/null
h daemon stop > /dev/null
wait "$valgrind_pid"

# Every function of harnessd's own code that ran (callgrind's `fn=` under harnessd's `ob=`), kept
# when the executable defines it (callgrind marks recursion with a 'N suffix).
python3 "$root/bench/order_from_callgrind.py" "$daemon" "$out" "$work/cg.out"
