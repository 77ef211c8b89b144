#!/usr/bin/env bash
# Latency of `harness status` (issue 10: 100 running services <= 5 ms; issue 11: 2,500 local
# running services, `-o json`, <= 50 ms), builds compared side by side.
#
#   bash bench/status.sh                                  # this tree's release build, N=100 and 2500
#   BINS="/tmp/old /tmp/new" N="100 2500" REPS=30 bash bench/status.sh
#
# Each directory of BINS holds a `harness` and its `harnessd`. Each build gets its own
# HARNESS_HOME and daemon with N `sleep` services (project `st`); the calls of the builds are
# alternated (A B A B ...) so they share the machine's load. Per build and N it prints the median
# and minimum wall time of one `status -o json` and one table `status`, the CLI's CPU time
# (user+sys from wait4) and the daemon's CPU time per call (its /proc stat before and after the
# calls, less what it spends idle over the same time, measured for 3 s first; 10 ms ticks, so
# small figures are rough), with the load average. The daemons and their services are stopped at the end.
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
BINS=${BINS:-$ROOT/target/release}
N=${N:-"100 2500"}
REPS=${REPS:-30}
WORK=${WORK:-/tmp/harness-bench-status}
export NO_COLOR=1
unset HARNESS_DAEMON HARNESS_NO_AUTOSTART HARNESS_FILE HARNESS_TOKEN HARNESS_TOKEN_FILE

homes=()
cleanup() {
    local h b i=0
    for b in $BINS; do
        for h in "$WORK"/b$i-*; do
            [[ -d $h ]] && HARNESS_HOME=$h "$b/harness" --no-autostart daemon stop --stop-services \
                >/dev/null 2>&1 || true
        done
        i=$((i + 1))
    done
}
trap cleanup EXIT
rm -rf "$WORK"
mkdir -p "$WORK"

for n in $N; do
    yaml=$WORK/services-$n.yaml
    { echo "name: st"; echo "services:"
      for ((i = 1; i <= n; i++)); do printf '  s%04d:\n    command: [sleep, "100000"]\n' "$i"; done
    } > "$yaml"
    specs=()
    i=0
    for b in $BINS; do
        home=$WORK/b$i-$n
        HARNESS_HOME=$home "$b/harness" -f "$yaml" start >/dev/null
        specs+=("$b|$home")
        i=$((i + 1))
    done
    sleep 1
    python3 - "$n" "$REPS" "${specs[@]}" <<'EOF'
import os, sys, time, statistics
n, reps, specs = sys.argv[1], int(sys.argv[2]), [s.split('|') for s in sys.argv[3:]]
devnull = os.open('/dev/null', os.O_WRONLY)
def daemon_cpu(home):
    pid = int(open(f'{home}/daemon.pid').read().split()[0])
    f = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    return (int(f[11]) + int(f[12])) * 1000 / os.sysconf('SC_CLK_TCK')
def run(binary, home, argv):
    env = dict(os.environ, HARNESS_HOME=home)
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.dup2(devnull, 1)
        os.execve(argv[0], argv, env)
    _, st, ru = os.wait4(pid, 0)
    wall = (time.perf_counter() - t0) * 1000
    if st != 0:
        sys.exit(f'{argv} exited {st}')
    return wall, (ru.ru_utime + ru.ru_stime) * 1000
# What each daemon spends without any call (supervising N services), per second: subtracted below.
c0, t0 = [daemon_cpu(h) for _, h in specs], time.perf_counter()
time.sleep(3)
idle = [(daemon_cpu(h) - c) / (time.perf_counter() - t0) for (_, h), c in zip(specs, c0)]
for (b, _), r in zip(specs, idle):
    print(f'N={n} {b}: daemon CPU while idle {r * 1000 / 1000:.1f} ms/s')
for form, extra in (('-o json', ['-o', 'json']), ('table', [])):
    res = {b: ([], [], daemon_cpu(h)) for b, h in specs}
    began = time.perf_counter()
    load0 = open('/proc/loadavg').read().split()[0]
    for _ in range(reps):
        for b, h in specs:
            w, c = run(b, h, [f'{b}/harness', '--no-autostart', '-p', 'st', 'status', *extra])
            res[b][0].append(w)
            res[b][1].append(c)
    load1 = open('/proc/loadavg').read().split()[0]
    elapsed = time.perf_counter() - began
    for (b, h), r in zip(specs, idle):
        w, c, d0 = res[b]
        d = (daemon_cpu(h) - d0 - r * elapsed) / reps
        print(f'N={n} status {form:7} {b}: wall median {statistics.median(w):.1f} ms '
              f'(min {min(w):.1f}), CLI CPU median {statistics.median(c):.1f} ms, '
              f'daemon CPU {d:.1f} ms/call, {reps} calls, load {load0} -> {load1}')
EOF
    for ((j = 0; j < i; j++)); do
        HARNESS_HOME=$WORK/b$j-$n "$(echo $BINS | cut -d' ' -f$((j + 1)))/harness" --no-autostart \
            daemon stop --stop-services >/dev/null 2>&1 || true
    done
done
