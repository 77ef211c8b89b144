#!/usr/bin/env bash
# Regenerates harness/harness.order (ADR 0045, addendum): the functions the CLI `harness` runs for
# `status` (table and `-o json`) first, then those of `--version`, `start`, `logs`, `health`,
# `restart`, `stop`, `validate` and `daemon status`. The release link places them first in the
# CLI's code, in that order, so a short-lived `harness status` maps a few dozen pages of code instead
# of a page here and there over 10 MB (bench/results-status3-2026-12-06.md).
#
#   bash bench/harness_order.sh          # builds release first; needs valgrind (callgrind)
#   HARNESS_BIN=target/release/harness bash bench/harness_order.sh
#
# Only the CLI runs under valgrind (the daemon it talks to runs normally). Symbol names carry a hash
# of their crate's build: run it again after a dependency or toolchain update (names that no longer
# exist are ignored by the link, so a stale list only costs page faults, never correctness).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
harness_bin
out="$root/harness/harness.order"
work="$(mktemp -d)"
export HARNESS_HOME="$work/home" NO_COLOR=1
cleanup() {
    "$HARNESS_BIN" --no-autostart daemon stop --stop-services >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

sleep_services "$work/services.yaml" 100
"$HARNESS_BIN" -f "$work/services.yaml" start > /dev/null

n=0
run() {
    n=$((n + 1))
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.$(printf %02d $n)" --dump-instr=no \
        --compress-strings=no --compress-pos=no --demangle=no \
        "$HARNESS_BIN" --no-autostart "$@" > /dev/null 2>> "$work/valgrind.log"
}
run -p bench status -o json
run -p bench status
run --version
run -f "$work/services.yaml" start
run -p bench logs s001
run -p bench health
run -p bench restart s001
run -f "$work/services.yaml" validate
run daemon status
run -p bench stop

# Every function of the CLI's own code that ran (callgrind's `fn=` under its `ob=`), kept when the
# executable defines it (callgrind marks recursion with a 'N suffix), in the order of the runs.
python3 "$root/bench/order_from_callgrind.py" "$HARNESS_BIN" "$out" "$work"/cg.*
