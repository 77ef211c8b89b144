"""Drives headless Chromium through chromedriver for bench/dashboard.sh (standard library only).

argv: chromedriver port, login link, SPKI hash of the daemon certificate, profile dir, services,
runs, daemon pid. Prints the first-paint times and the daemon's RSS; exits 1 when over target.
"""
import http.client
import json
import os
import statistics
import sys
import time

port, link, spki, profile, n, runs, pid = sys.argv[1:8]
n, runs = int(n), int(runs)
PAINT_TARGET_MS, RSS_TARGET_KIB = 300, 12 * 1024


def call(method, path, body=None):
    for _ in range(100):
        try:
            c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
            c.request(method, path, json.dumps(body) if body is not None else None,
                      {"Content-Type": "application/json"})
            return json.loads(c.getresponse().read())["value"]
        except ConnectionRefusedError:
            time.sleep(0.1)
    raise SystemExit("chromedriver did not answer")


def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))


before = rss_kib()
args = ["--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,800",
        f"--user-data-dir={profile}", f"--ignore-certificate-errors-spki-list={spki}"]
if os.geteuid() == 0:
    args.append("--no-sandbox")
session = call("POST", "/session", {"capabilities": {"alwaysMatch": {
    "browserName": "chrome", "goog:chromeOptions": {"args": args, "binary": "/usr/bin/chromium"}}}})
sid = session["sessionId"]


def js(script):
    return call("POST", f"/session/{sid}/execute/sync", {"script": script, "args": []})


def wait(script, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        v = js(script)
        if v:
            return v
        time.sleep(0.02)
    raise SystemExit(f"timed out: {script}")


base = link.split("/login")[0]
call("POST", f"/session/{sid}/url", {"url": link})
wait("return document.body.dataset.ready === 'true';")
time.sleep(1)
after_first = rss_kib()
times = []
for i in range(runs + 1):
    call("POST", f"/session/{sid}/url", {"url": f"{base}/?run={i}#/p/bench"})
    rows = f"return document.querySelectorAll('#services tr[data-service]').length === {n};"
    wait(rows)
    ms = call("POST", f"/session/{sid}/execute/async", {"script": """
        const done = arguments[arguments.length - 1];
        const mark = performance.getEntriesByName('harness:services-rendered')[0];
        requestAnimationFrame(() => done(mark ? mark.startTime : null));""", "args": []})
    if i > 0:  # the first load warms the browser's and the daemon's caches
        times.append(ms)
time.sleep(1)
rss = rss_kib()
call("DELETE", f"/session/{sid}")
time.sleep(1.5)
closed = rss_kib()
median = statistics.median(times)
print(f"services: {n}, runs: {runs}")
print(f"(a) first paint of the services view: median {median:.0f} ms "
      f"[{min(times):.0f}-{max(times):.0f}] (target <= {PAINT_TARGET_MS} ms)")
print(f"(b) daemon RSS with the page open: {rss / 1024:.1f} MiB (target <= 12 MiB); "
      f"before the browser connected: {before / 1024:.1f} MiB, after the first page load: "
      f"{after_first / 1024:.1f} MiB, 1.5 s after the browser closed: {closed / 1024:.1f} MiB")
sys.exit(0 if median <= PAINT_TARGET_MS and rss <= RSS_TARGET_KIB else 1)
