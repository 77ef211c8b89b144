#!/usr/bin/env bash
# Scale benchmark (issue 11), with the real daemon and CLI:
#   remote: 500 services, 10 on each of 50 testbed hosts s1..s50 —
#     cold start (no ssh connection open) until `harness start` reports all running; `status` (one
#     call, median of 20); daemon RSS and open fds with all 500 running; stop-all until the CLI
#     returns, then processes left on the hosts; and, in the same run, Ansible ad-hoc `async` shell
#     starting 10 background processes on each of the same 50 hosts (forks=50) for comparison.
#   local: 2,500 local services — start until all running, `status` (median of 20), stop.
# Targets: remote cold <= 5 s and <= 0.2x Ansible, stop <= 3 s, status <= 20 ms, RSS <= 40 MiB;
# local start <= 4 s, status <= 50 ms.
#
# Needs the testbed with 50 scale hosts, e.g.
#   HARNESS_TESTBED_INSTANCE=5 HARNESS_TESTBED_HOSTS=50 bash tests/testbed/up.sh
#   HARNESS_TESTBED_ENV=/var/lib/harness-testbed-5/testbed.env bash bench/scale.sh
# and a release build (cargo build --release -p harness, or HARNESS_BIN). LOCAL_ONLY=1 runs only the
# local part (no testbed needed), with the daemon's CPU (user+sys from /proc/PID/stat) over the start
# and over IDLE_S seconds (default 5) idle with all running; LOCAL_ONLY=1 RUNS=N repeats it N times
# on a fresh daemon each time. Ansible (ansible-core)
# is installed with pip into bench/.scratch/ansible-venv on first use (not committed); set
# NO_ANSIBLE=1 to skip it, NO_LOCAL=1 to skip the local part. Writes the figures to stdout and, with RESULTS=FILE, appends them there.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
LOCAL_ONLY=${LOCAL_ONLY:-}
ENV_FILE=${HARNESS_TESTBED_ENV:-/var/lib/harness-testbed/testbed.env}
# shellcheck disable=SC1090
[ -n "$LOCAL_ONLY" ] || . "$ENV_FILE"
HOSTS=${HOSTS:-50}
PER_HOST=${PER_HOST:-10}
LOCAL=${LOCAL:-2500}
read -r -a scale <<<"${TB_SCALE_HOSTS:-}"
[ -n "$LOCAL_ONLY" ] || [ "${#scale[@]}" -ge "$HOSTS" ] || {
    echo "the testbed has ${#scale[@]} scale hosts, $HOSTS needed: HARNESS_TESTBED_HOSTS=$HOSTS bash tests/testbed/up.sh" >&2
    exit 2
}
BIN=${HARNESS_BIN:-${CARGO_TARGET_DIR:-target}/release/harness}
[ -x "$BIN" ] || { echo "build first: cargo build --release -p harness (or set HARNESS_BIN)" >&2; exit 2; }
BIN=$(realpath "$BIN")

work=$(mktemp -d "${TMPDIR:-/tmp}/harness-bench-scale.XXXXXX")
export HARNESS_HOME="$work/home" XDG_RUNTIME_DIR="$work/run" HARNESS_KNOWN_HOSTS="${TB_SSH_KNOWN_HOSTS:-/dev/null}" NO_COLOR=1
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
tag="$$"
cleanup() {
    for d in "$work"/remote "$work"/local; do
        if [ -d "$d" ]; then (cd "$d" && "$BIN" --no-autostart stop >/dev/null 2>&1) || true; fi
    done
    "$BIN" --no-autostart daemon stop --stop-services >/dev/null 2>&1 || true
    # What is still running of this run on the hosts (Ansible's processes, and anything a stop
    # left behind, counted in the figures) and the daemon's ssh masters: by pid (the hosts share
    # this machine's pid namespace).
    mapfile -t left < <(pgrep -f "sleep 1000[678][678].$tag" || true; pgrep -f "ssh -F $work/" || true)
    [ "${#left[@]}" -eq 0 ] || kill "${left[@]}" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
status_ms() { # median wall time of 20 `harness status -o json` calls
    local t=() a b
    for _ in $(seq 1 20); do
        a=$(now); "$BIN" status -o json >/dev/null; b=$(now)
        t+=("$(( (b - a) / 100000 ))")
    done
    awk -v v="$(med "${t[@]}")" 'BEGIN { printf "%.1f", v / 10 }'
}
daemon_pid() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$HARNESS_HOME/daemon.json"; }
rss_mib() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
cpu_ms() { # user+sys CPU of pid, ms (fields 14 and 15 of /proc/PID/stat, clock ticks)
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%d", ($12 + $13) * 1000 / hz }' "/proc/$1/stat"
}
load1() { cut -d' ' -f1 /proc/loadavg; }
running() { "$BIN" status -o json | python3 -c 'import json,sys; print(sum(1 for s in json.load(sys.stdin) if s["state"]["kind"] == "running"))'; }

mkdir -p "$work/remote" "$work/local"
if [ -n "$LOCAL_ONLY" ]; then
    {
        echo "name: scalelocal"
        echo "services:"
        for i in $(seq 1 "$LOCAL"); do echo "  l$i: {command: [sleep, '100088.$tag']}"; done
    } >"$work/local/services.yaml"
    cd "$work/local"
    echo "local only: $LOCAL services, $BIN, $(git -C "$root" rev-parse --short HEAD), $(nproc) cores"
    echo "| run | load before | start until all running | running | daemon CPU during start (user+sys) | status (median of 20) | daemon CPU idle, ${IDLE_S:-5} s | RSS / fds | stop all |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for run in $(seq 1 "${RUNS:-1}"); do
        export HARNESS_HOME="$work/home$run" XDG_RUNTIME_DIR="$work/run$run"
        mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
        "$BIN" daemon start >/dev/null
        pid=$(daemon_pid)
        l0=$(load1); c0=$(cpu_ms "$pid")
        t0=$(now); "$BIN" start >"$work/local-start.log" 2>&1 || { tail -20 "$work/local-start.log"; exit 1; }; t1=$(now)
        c1=$(cpu_ms "$pid")
        lup=$(running)
        lstatus=$(status_ms)
        i0=$(cpu_ms "$pid"); sleep "${IDLE_S:-5}"; i1=$(cpu_ms "$pid")
        lrss=$(rss_mib "$pid")
        lfds=$(find "/proc/$pid/fd" -mindepth 1 | wc -l)
        s0=$(now); "$BIN" stop >/dev/null; s1=$(now)
        "$BIN" --no-autostart daemon stop >/dev/null 2>&1 || true
        echo "| $run | $l0 | $(ms "$t0" "$t1") ms | $lup | $((c1 - c0)) ms | $lstatus ms | $(( (i1 - i0) / ${IDLE_S:-5} )) ms/s | $lrss MiB / $lfds | $(ms "$s0" "$s1") ms |"
    done
    exit 0
fi

# --- remote --------------------------------------------------------------------------------------
{
    echo "name: scaleremote"
    echo "hosts:"
    for h in "${scale[@]:0:$HOSTS}"; do
        v="TB_${h^^}_ADDR"
        echo "  $h: {address: ${!v}, user: $TB_SSH_USER, identity_file: $TB_SSH_KEY}"
    done
    echo "services:"
    for h in "${scale[@]:0:$HOSTS}"; do
        for i in $(seq 1 "$PER_HOST"); do
            echo "  $h-$i: {host: $h, command: \"exec sleep 100066.$tag\"}"
        done
    done
} >"$work/remote/services.yaml"
n_remote=$((HOSTS * PER_HOST))
cd "$work/remote"
"$BIN" daemon start >/dev/null
pid=$(daemon_pid)
t0=$(now); "$BIN" start >"$work/remote-start.log" 2>&1 || { tail -20 "$work/remote-start.log"; exit 1; }; t1=$(now)
cold=$(ms "$t0" "$t1")
up=$(running)
rstatus=$(status_ms)
rrss=$(rss_mib "$pid")
rfds=$(find "/proc/$pid/fd" -mindepth 1 | wc -l)
# A stop that could not reach a host exits 1 (pending, ADR 0032): reported, not fatal.
rstop_rc=0
t0=$(now); "$BIN" stop >"$work/remote-stop.log" 2>&1 || rstop_rc=$?; t1=$(now)
rstop=$(ms "$t0" "$t1")
rpending=$(grep -c "not stopped yet" "$work/remote-stop.log" || true)
sleep 0.5
rleft=$(pgrep -c -f "sleep 100066.$tag" || true)

# --- Ansible over the same hosts -------------------------------------------------------------------
ansible_ms=skipped
if [ -z "${NO_ANSIBLE:-}" ]; then
    venv=$root/bench/.scratch/ansible-venv
    if [ ! -x "$venv/bin/ansible" ]; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q ansible-core
    fi
    {
        echo "[scale]"
        for h in "${scale[@]:0:$HOSTS}"; do
            v="TB_${h^^}_ADDR"
            echo "$h ansible_host=${!v}"
        done
        echo "[scale:vars]"
        echo "ansible_user=$TB_SSH_USER"
        echo "ansible_ssh_private_key_file=$TB_SSH_KEY"
        echo "ansible_ssh_common_args='-o UserKnownHostsFile=$TB_SSH_KNOWN_HOSTS -o StrictHostKeyChecking=yes'"
        echo "ansible_python_interpreter=/usr/bin/python3"
    } >"$work/inventory"
    export ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_LOCAL_TEMP="$work/ansible-tmp" ANSIBLE_REMOTE_TEMP=/tmp/.ansible-$tag
    t0=$(now)
    "$venv/bin/ansible" scale -i "$work/inventory" -f 50 -B 3600 -P 0 -m shell \
        -a "for i in \$(seq 1 $PER_HOST); do nohup sleep 100077.$tag >/dev/null 2>&1 & done" >"$work/ansible.log" 2>&1 ||
        { tail -20 "$work/ansible.log"; exit 1; }
    # Ansible's `async` returns once each host has started the job: wait until all processes run.
    while [ "$(pgrep -c -f "sleep 100077.$tag" || true)" -lt "$n_remote" ]; do sleep 0.05; done
    t1=$(now)
    ansible_ms=$(ms "$t0" "$t1")
    mapfile -t left < <(pgrep -f "sleep 100077.$tag" || true)
    [ "${#left[@]}" -eq 0 ] || kill "${left[@]}" 2>/dev/null || true
fi

# --- local -----------------------------------------------------------------------------------------
lstart=skipped lup=0 lstatus=skipped lrss=skipped lfds=skipped lstop=skipped
if [ -z "${NO_LOCAL:-}" ]; then
{
    echo "name: scalelocal"
    echo "services:"
    for i in $(seq 1 "$LOCAL"); do echo "  l$i: {command: [sleep, '100088.$tag']}"; done
} >"$work/local/services.yaml"
cd "$work/local"
t0=$(now); "$BIN" start >"$work/local-start.log" 2>&1 || { tail -20 "$work/local-start.log"; exit 1; }; t1=$(now)
lstart=$(ms "$t0" "$t1")
lup=$(running)
lstatus=$(status_ms)
lrss=$(rss_mib "$pid")
lfds=$(find "/proc/$pid/fd" -mindepth 1 | wc -l)
t0=$(now); "$BIN" stop >/dev/null; t1=$(now)
lstop=$(ms "$t0" "$t1")
fi

ratio=n/a
[ "$ansible_ms" = skipped ] || ratio=$(awk -v a="$cold" -v b="$ansible_ms" 'BEGIN { printf "%.2f", a / b }')
report=$(cat <<TXT
scale benchmark, $(date -u +%FT%TZ), $(git -C "$root" rev-parse --short HEAD), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)
| measure | figure | target |
|---|---|---|
| remote: cold start of $n_remote services ($PER_HOST on each of $HOSTS hosts) until all running | $cold ms ($up running) | <= 5000 ms |
| Ansible ad-hoc async shell, $PER_HOST processes on each of the $HOSTS hosts, forks=50 | $ansible_ms ms | |
| harness / Ansible | $ratio | <= 0.2 |
| remote: status, $n_remote running (median of 20) | $rstatus ms | <= 20 ms |
| remote: daemon RSS / open fds, $n_remote running | $rrss MiB / $rfds | <= 40 MiB |
| remote: stop all until the CLI returns | $rstop ms (exit $rstop_rc, $rpending pending, $rleft left on the hosts 0.5 s later) | <= 3000 ms |
| local: start of $LOCAL services until all running | $lstart ms ($lup running) | <= 4000 ms |
| local: status, $LOCAL running (median of 20) | $lstatus ms | <= 50 ms |
| local: daemon RSS / open fds, $LOCAL running | $lrss MiB / $lfds | |
| local: stop all | $lstop ms | |
TXT
)
echo "$report"
[ -z "${RESULTS:-}" ] || printf '\n%s\n' "$report" >>"$RESULTS"
