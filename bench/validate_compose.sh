#!/usr/bin/env bash
# Benchmark: `harness validate` of a generated 1,000-service file whose services merge an `x-`
# anchor, with two override files (`-f base.yaml -f override1.yaml -f override2.yaml`), must
# take <= 50 ms.
#
#   bench/validate_compose.sh                      # build release, generate, time, check
#   HARNESS_BIN=path bench/validate_compose.sh     # use an existing binary
#   SERVICES=2000 TARGET_MS=80 bench/validate_compose.sh
#
# Needs python3 (generator and timer; hyperfine is used instead when installed). Exits 1 if the
# mean is over the target.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
target_ms="${TARGET_MS:-50}"
services="${SERVICES:-1000}"
runs="${RUNS:-30}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [[ -z "${HARNESS_BIN:-}" ]]; then
    (cd "$root" && cargo build --release --quiet -p harness)
    HARNESS_BIN="${CARGO_TARGET_DIR:-$root/target}/release/harness"
fi

python3 "$root/bench/validate_gen.py" "$services" --compose "$work"
args=(validate -f "$work/base.yaml" -f "$work/override1.yaml" -f "$work/override2.yaml")
# The files must be valid, or the benchmark would time the error path.
"$HARNESS_BIN" "${args[@]}"

if command -v hyperfine > /dev/null; then
    hyperfine --warmup 5 --min-runs "$runs" --shell=none --export-json "$work/result.json" \
        "$HARNESS_BIN ${args[*]}"
    mean_ms="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["mean"]*1000)' "$work/result.json")"
else
    mean_ms="$(python3 - "$HARNESS_BIN" "$runs" "${args[@]}" <<'PY'
import subprocess, sys, time
binary, runs, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
for _ in range(5):
    subprocess.run([binary, *args], stdout=subprocess.DEVNULL, check=True)
times = []
for _ in range(runs):
    start = time.perf_counter()
    subprocess.run([binary, *args], stdout=subprocess.DEVNULL, check=True)
    times.append(time.perf_counter() - start)
times.sort()
print(f"{sum(times) / len(times) * 1000:.2f}")
print(f"min {times[0]*1000:.2f} ms, median {times[len(times)//2]*1000:.2f} ms, max {times[-1]*1000:.2f} ms", file=sys.stderr)
PY
)"
fi
echo "validate of $services services, anchors, 2 override files: mean ${mean_ms} ms (target <= ${target_ms} ms)"
python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)' "$mean_ms" "$target_ms"
