#!/usr/bin/env bash
# Benchmark: `harness validate` of a 10,000-service file that draws 10,000 warnings (no service has
# a health check, none is depended on), in table output (snippets drawn by miette) and in JSON.
# Target: table output <= 1 s (issue 11; it took 14 s when miette scanned the file from its first
# byte for every snippet).
#
#   bench/validate-large.sh                    # builds release, prints the figures, exits 1 if over
#   HARNESS_BIN=path SERVICES=N bench/validate-large.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
services="${SERVICES:-10000}"
target_ms="${TARGET_MS:-1000}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [[ -z "${HARNESS_BIN:-}" ]]; then
    (cd "$root" && cargo build --release --quiet -p harness)
    HARNESS_BIN="${CARGO_TARGET_DIR:-$root/target}/release/harness"
fi

python3 - "$services" > "$work/services.yaml" <<'PY'
import sys
print("name: large\nservices:")
for i in range(int(sys.argv[1])):
    print(f"  s{i}:\n    command: [sleep, '100']\n    env: {{INDEX: '{i}'}}")
PY

best() { # best of 3 wall times, in ms, of "$@" (output discarded)
    python3 - "$@" <<'PY'
import subprocess, sys, time
times = []
for _ in range(3):
    t = time.perf_counter()
    subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    times.append((time.perf_counter() - t) * 1000)
print(f"{min(times):.0f}")
PY
}

table=$(best "$HARNESS_BIN" validate -f "$work/services.yaml")
json=$(best "$HARNESS_BIN" validate -o json -f "$work/services.yaml")
warnings=$("$HARNESS_BIN" validate -o json -f "$work/services.yaml" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
echo "validate of $services services ($warnings diagnostics): table ${table} ms (target <= ${target_ms} ms), json ${json} ms"
[[ "$table" -le "$target_ms" ]]
