#!/usr/bin/env python3
"""Daemon RSS with N running local services, builds alternated in the same minutes.

    python3 bench/daemon_rss.py N ROUNDS LABEL=PATH/TO/harness[,VAR=VALUE...] ...

Each round runs every build once, in the given order: a fresh HARNESS_HOME, a services file of N
`[sleep, "100000"]`, `harness start` (auto-starts the `harnessd` beside PATH, which inherits the
VAR=VALUE pairs), `status -o json` polled until N run, 1 s settle, then the daemon's VmRSS, its
threads, its CPU time so far (user+sys: its start, the N launches, the status polls) and
/proc/PID/smaps summed per kind (harnessd's code, the rest of harnessd's file, anonymous), the
1-minute load average, and `daemon stop --stop-services`. One line per sample, then
the min-max and median per build (kB).
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def smaps(pid, exe):
    code = other = anon = 0
    kind = None
    for line in open(f"/proc/{pid}/smaps"):
        parts = line.split()
        if len(parts) >= 5 and "-" in parts[0] and ":" not in parts[0]:
            path = parts[5] if len(parts) > 5 else ""
            if os.path.basename(path) == exe:
                kind = "code" if "x" in parts[1] else "other"
            elif path == "" or path.startswith("[heap]") or path.startswith("[stack"):
                kind = "anon"
            else:
                kind = None
        elif parts and parts[0] == "Rss:" and kind:
            kb = int(parts[1])
            if kind == "code":
                code += kb
            elif kind == "other":
                other += kb
            else:
                anon += kb
    return code, other, anon


def status_field(pid, name):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return -1


def one(label, harness, extra, n):
    with tempfile.TemporaryDirectory(prefix="rss-") as work:
        env = dict(os.environ)
        for k in ("HARNESS_DAEMON", "HARNESS_NO_AUTOSTART", "HARNESS_FILE"):
            env.pop(k, None)
        env.update(HARNESS_HOME=f"{work}/home", HARNESS_LISTEN="127.0.0.1:0", NO_COLOR="1")
        env.update(extra)
        with open(f"{work}/services.yaml", "w") as f:
            f.write("name: bench\nservices:\n")
            for i in range(1, n + 1):
                f.write(f'  s{i:03d}:\n    command: [sleep, "100000"]\n')
        h = lambda *a: subprocess.run([harness, *a], env=env, capture_output=True, text=True, timeout=120)
        try:
            r = h("-f", f"{work}/services.yaml", "start")
            if r.returncode != 0:
                sys.exit(f"{label}: start failed: {r.stderr}")
            deadline = time.time() + 60
            while True:
                out = h("-p", "bench", "status", "-o", "json").stdout
                if out.count('"kind": "running"') >= n:
                    break
                if time.time() > deadline:
                    sys.exit(f"{label}: not all running after 60 s")
                time.sleep(0.1)
            time.sleep(1)
            pid = int(open(f"{work}/home/daemon.pid").read().split()[0])
            rss = status_field(pid, "VmRSS")
            threads = status_field(pid, "Threads")
            stat = open(f"/proc/{pid}/stat").read().rsplit(") ", 1)[1].split()
            cpu_ms = (int(stat[11]) + int(stat[12])) * 1000 // os.sysconf("SC_CLK_TCK")
            code, other, anon = smaps(pid, os.path.basename(os.readlink(f"/proc/{pid}/exe")))
            load = open("/proc/loadavg").read().split()[0]
        finally:
            h("--no-autostart", "daemon", "stop", "--stop-services")
    return dict(label=label, rss=rss, threads=threads, cpu_ms=cpu_ms, code=code, other=other, anon=anon, load=load,
                at=time.strftime("%H:%M:%S", time.gmtime()))


def main():
    n, rounds = int(sys.argv[1]), int(sys.argv[2])
    builds = []
    for spec in sys.argv[3:]:
        label, rest = spec.split("=", 1)
        path, *pairs = rest.split(",")
        builds.append((label, os.path.abspath(path), dict(p.split("=", 1) for p in pairs)))
    rows = []
    for r in range(rounds):
        for label, path, extra in builds:
            row = one(label, path, extra, n)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print("| build | VmRSS kB min-max | median | harnessd code | other harnessd | anon | threads | daemon CPU ms | load |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, _, _ in builds:
        mine = [x for x in rows if x["label"] == label]
        rng = lambda k: f"{min(x[k] for x in mine)}-{max(x[k] for x in mine)}"
        print(f"| {label} | {rng('rss')} | {statistics.median(x['rss'] for x in mine):.0f} | "
              f"{rng('code')} | {rng('other')} | {rng('anon')} | {rng('threads')} | {rng('cpu_ms')} | "
              f"{min(x['load'] for x in mine)}-{max(x['load'] for x in mine)} |")


if __name__ == "__main__":
    main()
