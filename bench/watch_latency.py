#!/usr/bin/env python3
"""File change -> service restarted and healthy (issue 14 target: <= 150 ms plus the service's own
start time). Runs a real daemon with one `watch:` service (busybox httpd, a tcp health check) and
saves a watched file N times, one save per round, reading the daemon's events:

  save -> service.watch event   the debounce (100 ms default) and the watcher
  save -> starting              + stopping the old instance
  starting -> healthy           the service's own start, as the health check sees it
  save -> healthy               the whole loop; minus the service's own start = harness's part

  python3 bench/watch_latency.py [ROUNDS]     (HARNESS_BIN, default target/release/harness)
"""
import calendar, json, os, socket, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("HARNESS_BIN", os.path.join(ROOT, "target/release/harness"))
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 10


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def ts(text):
    # RFC 3339 with nanoseconds, UTC ("2026-12-05T13:00:00.123456789Z")
    date, frac = text.rstrip("Z").split(".") if "." in text else (text.rstrip("Z"), "0")
    return calendar.timegm(time.strptime(date, "%Y-%m-%dT%H:%M:%S")) + float("0." + frac)


def main():
    work = tempfile.mkdtemp(prefix="harness-watch-bench-")
    env = dict(os.environ, HARNESS_HOME=os.path.join(work, "home"), HARNESS_LISTEN="127.0.0.1:0", NO_COLOR="1")
    os.makedirs(os.path.join(work, "src"))
    port = free_port()
    with open(os.path.join(work, "services.yaml"), "w") as f:
        f.write(f"""name: wbench
services:
  api:
    command: [busybox, httpd, -f, -p, "127.0.0.1:{port}", -h, src]
    ports: [{port}]
    health_check: {{tcp: {port}, interval: 20ms}}
    watch: {{paths: [src]}}
""")
    run = lambda *a: subprocess.run([BIN, *a], cwd=work, env=env, check=True, capture_output=True)
    run("start")
    events = subprocess.Popen([BIN, "events", "-o", "json"], cwd=work, env=env, stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    rows = []
    try:
        for i in range(ROUNDS):
            t0 = time.time()
            with open(os.path.join(work, "src", "index.html"), "w") as f:
                f.write(f"round {i}\n")
            got = {}
            while "healthy" not in got:
                e = json.loads(events.stdout.readline())
                if e.get("service") != "api":
                    continue
                t = ts(e["time"])
                if e["type"] == "service.watch":
                    got["watch"] = t
                elif e["type"] == "service.state" and e["data"]["to"]["kind"] == "starting":
                    got["starting"] = t
                elif e["type"] == "service.health" and e["data"]["to"] == "healthy" and "starting" in got:
                    got["healthy"] = t
            rows.append((got["watch"] - t0, got["starting"] - t0, got["healthy"] - got["starting"], got["healthy"] - t0))
            time.sleep(0.3)
    finally:
        events.kill()
        subprocess.run([BIN, "daemon", "stop", "--stop-services"], cwd=work, env=env, capture_output=True)
    med = lambda k: sorted(r[k] for r in rows)[len(rows) // 2] * 1000
    print(f"{ROUNDS} rounds, medians (ms):")
    print(f"  save -> service.watch event  {med(0):7.1f}   (debounce 100 ms included)")
    print(f"  save -> starting             {med(1):7.1f}")
    print(f"  starting -> healthy          {med(2):7.1f}   (the service's own start, 20 ms check interval)")
    print(f"  save -> healthy              {med(3):7.1f}")
    print(f"  harness's part               {med(3) - med(2):7.1f}   (target <= 150)")


main()
