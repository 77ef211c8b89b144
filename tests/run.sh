#!/usr/bin/env bash
# The test command: installs what the tests need, brings up the testbed (tests/testbed/up.sh), runs every
# test of the workspace against it, and tears it down again, also after a failure or Ctrl-C.
#
#   bash tests/run.sh                 # everything
#   bash tests/run.sh -p testbed      # extra arguments go to `cargo test --workspace --all-targets --no-fail-fast`
#   HARNESS_TESTBED_KEEP=1 bash tests/run.sh   # leave the testbed up afterwards (down: tests/testbed/down.sh)
#   HARNESS_TESTBED_INSTANCE=1 bash tests/run.sh # a second testbed, beside one that others are using
#
# Runs as root (re-executes itself with sudo otherwise): it creates network namespaces, users and daemons.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [ "$(id -u)" != 0 ]; then
    echo "tests/run.sh: not root, re-running with sudo" >&2
    exec sudo -E env "PATH=$PATH" bash "$ROOT/tests/run.sh" "$@"
fi

T0=$(date +%s.%N)
TESTS_PID=
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
section() { printf '\n==== %s  [%s s]\n' "$*" "$(elapsed "$T0")"; }

# --- packages ---------------------------------------------------------------------------------------------
section "packages"
PACKAGES="openssh-server openssh-client sudo docker.io busybox-static iproute2 netcat-openbsd python3 wireguard-go wireguard-tools tcpdump iperf3 chromium chromium-driver firefox-esr curl openssl"
missing=()
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    # Package scripts must not start a system sshd or dockerd (with docker0 and iptables rules) on the way.
    made_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
    rc=$?
    [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
    [ $rc = 0 ] || {
        echo "tests/run.sh: apt-get install ${missing[*]} failed" >&2
        exit $rc
    }
else
    echo "all present: $PACKAGES"
fi
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then PATH=$HOME/.cargo/bin:$PATH; fi
command -v cargo >/dev/null || {
    echo "tests/run.sh: cargo not found (install Rust with rustup)" >&2
    exit 1
}
mkdir -p /run/sshd

# --- testbed ----------------------------------------------------------------------------------------------
# shellcheck disable=SC2317 # invoked by the trap
teardown() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "${TESTS_PID:-}" ] && kill -0 "$TESTS_PID" 2>/dev/null; then
        section "stopping the tests"
        kill -TERM -- "-$TESTS_PID" 2>/dev/null
        sleep 1
        kill -KILL -- "-$TESTS_PID" 2>/dev/null
    fi
    if [ -n "${HARNESS_TESTBED_KEEP:-}" ]; then
        section "testbed left up (HARNESS_TESTBED_KEEP): $HARNESS_TESTBED_ENV; down: bash tests/testbed/down.sh"
    else
        section "testbed down"
        bash "$ROOT/tests/testbed/down.sh"
    fi
    section "done, exit $rc"
    exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The state dir of this instance (HARNESS_TESTBED_INSTANCE, HARNESS_TESTBED_DIR), as up.sh computes it.
HARNESS_TESTBED_DIR=$(. "$ROOT/tests/testbed/common.sh" && echo "$TB_DIR") || exit 2
export HARNESS_TESTBED_DIR
export HARNESS_TESTBED_ENV=$HARNESS_TESTBED_DIR/testbed.env
section "testbed up"
bash "$ROOT/tests/testbed/up.sh" || {
    echo "tests/run.sh: the testbed did not come up" >&2
    exit 1
}

# --- tests ------------------------------------------------------------------------------------------------
section "cargo test --workspace --all-targets --no-fail-fast $*"
cd "$ROOT" || exit 2
# In its own process group, waited for in the background: a TERM or INT to this script then tears down at
# once (bash runs traps only between commands) and takes the test binaries down with it. --no-fail-fast: one
# failing test binary does not hide what the others would say (the exit status is still non-zero).
setsid cargo test --workspace --all-targets --no-fail-fast "$@" </dev/null &
TESTS_PID=$!
wait "$TESTS_PID"
rc=$?
TESTS_PID=
section "cargo test exit $rc"
exit $rc
