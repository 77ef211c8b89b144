#!/usr/bin/env bash
# Benchmark: the web dashboard (ADR 0039) with N services (default 100), in headless Chromium
# driven by chromedriver (WebDriver; bench/dashboard_driver.py, Python standard library only).
#   (a) first paint of the services view on a warm daemon: from navigation start to the table's
#       first render with the services (the page's `harness:services-rendered` mark, plus one
#       animation frame), median of RUNS (default 7) full page loads. Target ≤ 300 ms.
#   (b) the daemon's RSS with the page open and connected and N services running. Target ≤ 12 MiB.
#
#   bench/dashboard.sh                    # builds release; prints the figures; exits 1 if over
#   HARNESS_BIN=path N=100 RUNS=7 bench/dashboard.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
n="${N:-100}"
runs="${RUNS:-7}"
work="$(mktemp -d)"
export HARNESS_HOME="$work/home" HARNESS_LISTEN=127.0.0.1:0 NO_COLOR=1
driver_pid=""
cleanup() {
    [[ -n "$driver_pid" ]] && kill "$driver_pid" 2>/dev/null || true
    "$HARNESS_BIN" --no-autostart daemon stop --stop-services >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
harness_bin

{
    echo "name: bench"
    echo "services:"
    for i in $(seq 1 "$n"); do
        printf '  s%03d:\n    command: "exec sleep 100000"\n' "$i"
    done
} > "$work/services.yaml"
cd "$work"
"$HARNESS_BIN" start >/dev/null
url=$("$HARNESS_BIN" dashboard --no-open -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])')
pid=$(daemon_pid)
spki=$(openssl x509 -in "$HARNESS_HOME/server.pem" -pubkey -noout | openssl pkey -pubin -outform der \
    | openssl dgst -sha256 -binary | base64)

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
chromedriver --port="$port" >/dev/null 2>&1 &
driver_pid=$!

python3 "$root/bench/dashboard_driver.py" "$port" "$url" "$spki" "$work/profile" "$n" "$runs" "$pid"
