#!/usr/bin/env python3
"""Cold start of N local services, alternating builds, with CPU time beside wall time.

    python3 bench/launch_cold.py [-n 100] [-r 5] BIN_DIR [BIN_DIR ...]

Each BIN_DIR holds `harness` and `harnessd` of one build. Per rep and build, in turn (A B A B ...):
no daemon and no state but the credentials (as bench/bench_harness.sh), then
`harness -f services.yaml start` (auto-starts the daemon) and `harness -p bench status -o json`
polled until all N are running. Prints per rep:
  cold   ms from the start command to the status call that shows all N running (bench_harness (a))
  cli    ms until `start` returned
  last   ms until the last service process was forked (its start time, 10 ms ticks; (a'))
  cpu    ms of CPU of everything involved (CLI, daemon, the services until exec, status calls):
         the run goes into a cpuacct cgroup of its own
  load   1-minute load average before the rep
and medians per build at the end. Then stops the services and the daemon (untimed).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

CG = "/sys/fs/cgroup/cpuacct/launchbench.%d" % os.getpid()


def cg_usage():
    try:
        with open(CG + "/cpuacct.usage") as f:
            return int(f.read())
    except OSError:
        return 0


def start_time_ms(pid):
    """Start time of pid in ms since boot (field 22 of /proc/PID/stat, clock ticks)."""
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(") ", 1)[1].split()
    return int(rest[19]) * 1000 // os.sysconf("SC_CLK_TCK")


def uptime_ms():
    with open("/proc/uptime") as f:
        return int(float(f.read().split()[0]) * 1000)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("-r", "--reps", type=int, default=5)
    ap.add_argument("--work", default="/tmp/launchbench")
    ap.add_argument("bins", nargs="+")
    a = ap.parse_args()
    try:
        os.makedirs(CG, exist_ok=True)
        with open(CG + "/cgroup.procs", "w") as f:
            f.write(str(os.getpid()))
    except OSError as e:
        print("no cpuacct cgroup (%s): cpu column is 0" % e, file=sys.stderr)
    tag = "%d" % os.getpid()
    results = {b: [] for b in a.bins}
    try:
        for rep in range(a.reps + 1):  # rep 0: warm-up, not counted
            for b in a.bins:
                r = one(a, b, tag)
                if rep > 0:
                    results[b].append(r)
                print("%s rep %d%s: cold %.0f cli %.0f last %s cpu %.0f ms load %.2f"
                      % (b, rep, " (warm-up)" if rep == 0 else "", r["cold"], r["cli"],
                         r["last"], r["cpu"], r["load"]), flush=True)
    finally:
        try:
            with open("/sys/fs/cgroup/cpuacct/cgroup.procs", "w") as f:
                f.write(str(os.getpid()))
            os.rmdir(CG)
        except OSError:
            pass
    for b, rs in results.items():
        if not rs:
            continue
        med = lambda k: statistics.median(r[k] for r in rs)
        rng = lambda k: "%.0f-%.0f" % (min(r[k] for r in rs), max(r[k] for r in rs))
        print("%s: n=%d reps=%d cold %.0f [%s] cli %.0f [%s] last %.0f [%s] cpu %.0f [%s] load %s"
              % (b, a.n, len(rs), med("cold"), rng("cold"), med("cli"), rng("cli"),
                 med("last"), rng("last"), med("cpu"), rng("cpu"),
                 " ".join("%.1f" % r["load"] for r in rs)))


def one(a, bindir, tag):
    work = os.path.join(a.work, os.path.basename(bindir.rstrip("/")))
    home = os.path.join(work, "home")
    os.makedirs(home, exist_ok=True)
    env = dict(os.environ, HARNESS_HOME=home, NO_COLOR="1")
    for k in ("HARNESS_DAEMON", "HARNESS_NO_AUTOSTART", "HARNESS_FILE"):
        env.pop(k, None)
    h = os.path.join(bindir, "harness")
    # A cold start: no daemon, no state but the credentials.
    subprocess.run([h, "--no-autostart", "daemon", "stop", "--stop-services"], env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for p in ("projects", "registry.redb", "daemon.log", "launches"):
        path = os.path.join(home, p)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
    yaml = os.path.join(work, "services.yaml")
    with open(yaml, "w") as f:
        f.write("name: bench\nservices:\n")
        for i in range(1, a.n + 1):
            f.write("  s%03d:\n    command: [sleep, \"%s%d\"]\n" % (i, tag, i))
    with open("/proc/loadavg") as f:
        load = float(f.read().split()[0])
    time.sleep(0.2)
    c0 = cg_usage()
    up0 = uptime_ms()
    t0 = time.monotonic()
    subprocess.run([h, "-f", yaml, "start"], env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    t1 = time.monotonic()
    while True:
        out = subprocess.run([h, "-p", "bench", "status", "-o", "json"], env=env,
                             capture_output=True).stdout
        try:
            n = sum(1 for s in json.loads(out) if s["state"]["kind"] == "running")
        except ValueError:
            n = 0
        if n >= a.n:
            break
        if time.monotonic() - t0 > 120:
            print("timeout: %d running" % n, file=sys.stderr)
            break
    t2 = time.monotonic()
    c1 = cg_usage()
    pids = subprocess.run(["pgrep", "-f", "^sleep %s" % tag], capture_output=True,
                          text=True).stdout.split()
    last = max((start_time_ms(int(p)) for p in pids), default=up0) - up0
    subprocess.run([h, "--no-autostart", "daemon", "stop", "--stop-services"], env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return {"cold": (t2 - t0) * 1000, "cli": (t1 - t0) * 1000, "last": last,
            "cpu": (c1 - c0) / 1e6, "load": load}


if __name__ == "__main__":
    main()
