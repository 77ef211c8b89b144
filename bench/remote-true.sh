#!/bin/sh
# Remote `true` through command-executor over the testbed: a cold ssh connection vs. the warm multiplexed
# master, ssh → sudo, a jump host. Prints medians (issue 3: warm ≤ 30 ms). Not a test.
#   bash bench/remote-true.sh                         # brings a testbed up and down around the run (root)
#   HARNESS_TESTBED_ENV=/var/lib/harness-testbed/testbed.env bash bench/remote-true.sh   # use a running one
#   HARNESS_TESTBED_INSTANCE=1 bash bench/remote-true.sh   # a second testbed, beside one others are using
#   BENCH_N=200 ...                                   # runs per measurement (default 50)
set -eu
cd "$(dirname "$0")/.."
if [ -n "${HARNESS_TESTBED_ENV:-}" ] && [ -f "$HARNESS_TESTBED_ENV" ]; then
    exec cargo bench -p command-executor --bench remote_true
fi
. tests/testbed/common.sh
bash tests/testbed/up.sh
trap 'bash tests/testbed/down.sh' EXIT INT TERM
HARNESS_TESTBED_ENV=$TB_DIR/testbed.env cargo bench -p command-executor --bench remote_true
