#!/usr/bin/env python3
"""The remote part of bench/scale.sh with CPU time (issue 11): 500 services, 10 on each of 50
testbed scale hosts. For the cold start, status and stop it gives the wall time of the CLI and the
CPU time (user+sys, ms) of: the daemon itself; its reaped children (the `ssh` session clients); the
ssh masters (`ssh -M`, detached); everything in the hosts' network namespaces (sshd, the sessions'
shells, the runners: utime+stime+cutime+cstime of their live processes, so an sshd listener's
cutime holds the sessions that ended); the CLI. And the load average at each step.

    HARNESS_TESTBED_ENV=/var/lib/harness-testbed-5/testbed.env \
      python3 bench/scale_remote_cpu.py BIN [BIN...]

runs each binary in turn (ROUNDS=N times over, alternated) and prints one line per run.
HOSTS, PER_HOST as in scale.sh. TRACE=1 keeps the daemon's debug trace of the first run
(HARNESS_LOG=info,command_executor=debug,orchestrator=debug) in bench/.scratch/trace-<n>.log.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HZ = os.sysconf("SC_CLK_TCK")


def env_file(path):
    out = {}
    for line in open(path):
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        k, v = line.split("=", 1)
        out[k] = v.strip('"')
    return out


def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rfind(")") + 2 :].split()
    # fields from 3 (state): utime is field 14, so index 11
    return [int(x) for x in rest[11:15]]


def ms(ticks):
    return ticks * 1000 // HZ


def netns_inodes(names):
    ino = set()
    for n in names:
        try:
            ino.add(os.stat(f"/run/netns/{n}").st_ino)
        except OSError:
            pass
    return ino


def snapshot(daemon, host_ns, work):
    """CPU ticks: daemon own, daemon children, masters, and per host process (pid -> ticks)."""
    d = stat(daemon) or [0, 0, 0, 0]
    masters = 0
    hosts = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{p}/ns/net").st_ino
        except OSError:
            continue
        if ns in host_ns:
            s = stat(p)
            if s:
                hosts[p] = sum(s)
            continue
        try:
            cmd = open(f"/proc/{p}/cmdline", "rb").read()
        except OSError:
            continue
        if cmd.startswith(b"ssh\0-F\0" + work.encode()) and b"\0-M\0" in cmd:
            s = stat(p)
            if s:
                masters += sum(s)
    return (d[0] + d[1], d[2] + d[3], masters, hosts)


def delta(a, b):
    """Per column; the hosts' column counts processes alive at the end (less what they had
    used at the start): one that ended is in its parent's cutime if that parent is there."""
    out = [ms(y - x) for x, y in zip(a[:3], b[:3])]
    out.append(ms(sum(t - a[3].get(p, 0) for p, t in b[3].items())))
    return out


def run_cli(bin_, args, cwd, env, out=subprocess.DEVNULL):
    t0 = time.monotonic()
    p = subprocess.Popen([bin_] + args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    _, status, ru = os.wait4(p.pid, 0)
    t1 = time.monotonic()
    return (t1 - t0) * 1000, (ru.ru_utime + ru.ru_stime) * 1000, os.waitstatus_to_exitcode(status)


def load():
    return open("/proc/loadavg").read().split()[0]


def one(bin_, tb, hosts, per_host, trace_to=None):
    scale = tb["TB_SCALE_HOSTS"].split()[:hosts]
    inst = tb.get("TB_INSTANCE", "0")
    prefix = "hb" if inst == "0" else f"hb{inst}"
    host_ns = netns_inodes([f"{prefix}-{h}" for h in scale])
    work = tempfile.mkdtemp(prefix="harness-bench-rcpu.")
    env = dict(os.environ)
    env.update(
        HARNESS_HOME=f"{work}/home",
        XDG_RUNTIME_DIR=f"{work}/run",
        HARNESS_KNOWN_HOSTS=tb["TB_SSH_KNOWN_HOSTS"],
        NO_COLOR="1",
    )
    if trace_to:
        env["HARNESS_LOG"] = "info,command_executor=debug,orchestrator=debug"
    os.makedirs(f"{work}/run", mode=0o700)
    proj = f"{work}/remote"
    os.makedirs(proj)
    tag = os.getpid()
    with open(f"{proj}/services.yaml", "w") as f:
        f.write("name: scaleremote\nhosts:\n")
        for h in scale:
            addr = tb[f"TB_{h.upper()}_ADDR"]
            f.write(
                f"  {h}: {{address: {addr}, user: {tb['TB_SSH_USER']}, identity_file: {tb['TB_SSH_KEY']}}}\n"
            )
        f.write("services:\n")
        for h in scale:
            for i in range(1, per_host + 1):
                f.write(f'  {h}-{i}: {{host: {h}, command: "exec sleep 100055.{tag}"}}\n')
    row = {"bin": bin_}
    try:
        run_cli(bin_, ["daemon", "start"], proj, env)
        daemon = json.load(open(f"{work}/home/daemon.json"))["pid"]
        row["load0"] = load()
        perf = None
        if os.environ.get("PERF_COLD"):
            # every CPU's samples during the cold start (perf report --sort comm,dso)
            perf = subprocess.Popen(["perf", "record", "-a", "-F", "997", "-e", "cpu-clock", "-g",
                                     "-o", os.environ["PERF_COLD"]],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        a = snapshot(daemon, host_ns, work)
        row["t0"] = time.time()
        wall, cli, rc = run_cli(bin_, ["start"], proj, env)
        b = snapshot(daemon, host_ns, work)
        if perf:
            perf.send_signal(2)
            perf.wait()
        row["cold"] = (wall, cli, rc, delta(a, b))
        row["load1"] = load()
        # what 500 idle running services cost per second (the followers): 1 s after the start, over 3 s
        time.sleep(1)
        a = snapshot(daemon, host_ns, work)
        time.sleep(3)
        b = snapshot(daemon, host_ns, work)
        row["idle"] = [x / 3 for x in delta(a, b)]
        st = []
        a = snapshot(daemon, host_ns, work)
        for _ in range(20):
            st.append(run_cli(bin_, ["status", "-o", "json"], proj, env))
        b = snapshot(daemon, host_ns, work)
        st.sort()
        row["status"] = (st[10][0], sorted(x[1] for x in st)[10], [x / 20 for x in delta(a, b)])
        out = subprocess.run([bin_, "status", "-o", "json"], cwd=proj, env=env, capture_output=True)
        row["running"] = sum(1 for s in json.loads(out.stdout) if s["state"]["kind"] == "running")
        row["rss"] = int(
            [l for l in open(f"/proc/{daemon}/status") if l.startswith("VmRSS")][0].split()[1]
        ) // 1024
        row["load2"] = load()
        a = snapshot(daemon, host_ns, work)
        wall, cli, rc = run_cli(bin_, ["stop"], proj, env)
        b = snapshot(daemon, host_ns, work)
        row["stop"] = (wall, cli, rc, delta(a, b))
        time.sleep(0.5)
        left = subprocess.run(["pgrep", "-c", "-f", f"sleep 100055.{tag}"], capture_output=True, text=True)
        row["left"] = int(left.stdout.strip() or 0)
        row["load3"] = load()
    finally:
        subprocess.run([bin_, "--no-autostart", "daemon", "stop", "--stop-services"], cwd=proj, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["pkill", "-f", f"sleep 100055.{tag}"])
        # the ssh masters (ControlPersist) of this run, by pid
        subprocess.run(["pkill", "-f", f"^ssh -F {work}/"])
        if trace_to:
            for name in ("daemon.log", "harnessd.log"):
                p = f"{work}/home/{name}"
                if os.path.exists(p):
                    shutil.copy(p, trace_to)
            if "t0" in row:
                with open(trace_to, "a") as f:
                    f.write(f"T0 {row['t0']}\n")
        shutil.rmtree(work, ignore_errors=True)
    return row


def fmt(r):
    c, s, t = r["cold"], r["status"], r["stop"]
    return (
        f"{time.strftime('%H:%M:%S', time.gmtime(r['t0']))} {os.path.basename(os.path.dirname(r['bin']))}: "
        f"cold {c[0]:.0f} ms (rc {c[2]}; CPU CLI {c[1]:.0f} / daemon {c[3][0]} / ssh clients {c[3][1]} / masters {c[3][2]} / hosts {c[3][3]}) "
        f"load {r['load0']}->{r['load1']}; idle CPU/s daemon {r['idle'][0]:.0f} / ssh clients {r['idle'][1]:.0f} / masters {r['idle'][2]:.0f} / hosts {r['idle'][3]:.0f}; status median {s[0]:.1f} ms (CLI CPU {s[1]:.1f}, daemon CPU/call {s[2][0]:.1f}) "
        f"running {r['running']} RSS {r['rss']} MiB load {r['load2']}; stop {t[0]:.0f} ms (rc {t[2]}; CPU daemon {t[3][0]} / ssh clients {t[3][1]} / masters {t[3][2]} / hosts {t[3][3]}) "
        f"left {r['left']} load {r['load3']}"
    )


def main():
    tb = env_file(os.environ.get("HARNESS_TESTBED_ENV", "/var/lib/harness-testbed/testbed.env"))
    hosts = int(os.environ.get("HOSTS", "50"))
    per_host = int(os.environ.get("PER_HOST", "10"))
    rounds = int(os.environ.get("ROUNDS", "1"))
    bins = [os.path.realpath(b) for b in sys.argv[1:]]
    n = 0
    for _ in range(rounds):
        for b in bins:
            n += 1
            trace = None
            if os.environ.get("TRACE"):
                os.makedirs("bench/.scratch", exist_ok=True)
                trace = f"bench/.scratch/trace-{n}.log"
            print(fmt(one(b, tb, hosts, per_host, trace)), flush=True)


if __name__ == "__main__":
    main()
