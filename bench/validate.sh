#!/usr/bin/env bash
# Benchmark: `harness validate` of a generated 100-service services.yaml must take < 20 ms.
#
#   bench/validate.sh            # build release, generate the file, run hyperfine, check the target
#   HARNESS_BIN=path bench/validate.sh   # use an existing binary
#
# Needs hyperfine and python3. Prints hyperfine's table; exits 1 if the mean is over the target.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
target_ms="${TARGET_MS:-20}"
services="${SERVICES:-100}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [[ -z "${HARNESS_BIN:-}" ]]; then
    (cd "$root" && cargo build --release --quiet -p harness)
    HARNESS_BIN="${CARGO_TARGET_DIR:-$root/target}/release/harness"
fi

python3 "$root/bench/validate_gen.py" "$services" > "$work/services.yaml"
# The file must be valid, or the benchmark would time the error path.
"$HARNESS_BIN" validate -f "$work/services.yaml" > /dev/null

hyperfine --warmup 10 --min-runs 50 --shell=none \
    --export-json "$work/result.json" \
    "$HARNESS_BIN validate -f $work/services.yaml" \
    "$HARNESS_BIN --version"

python3 - "$work/result.json" "$target_ms" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
target = float(sys.argv[2])
validate = results[0]["mean"] * 1000
version = results[1]["mean"] * 1000
print(f"validate ({results[0]['command'].split()[-1]}): mean {validate:.2f} ms (target < {target:g} ms)")
print(f"--version: mean {version:.2f} ms (target <= 3 ms)")
sys.exit(0 if validate < target and version <= 3 else 1)
PY
