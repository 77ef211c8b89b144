#!/usr/bin/env python3
"""Writes a services.yaml of N services (default 100) to stdout, for bench/validate.sh.

Every service uses the features validation has to work through: ports, env with variables and
service references, depends_on with conditions, health checks, restart and stop settings.
"""
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
out = ["version: \"1.0\"", "name: bench", "services:"]
for i in range(n):
    out += [
        f"  svc{i}:",
        "    binary: python3",
        f"    args: [-m, http.server, \"${{PORT_{i}:-{20000 + i}}}\", --bind, 127.0.0.1]",
        "    ports:",
        f"      - {{name: http, port: {20000 + i}}}",
        "    env:",
        f"      INDEX: \"{i}\"",
        "      LOG_LEVEL: ${LOG_LEVEL:-info}",
    ]
    if i > 0:
        prev = f"svc{i - 1}"
        out += [
            f"      UPSTREAM: http://${{{prev}.ip}}:${{{prev}.ports.http}}/",
            "    depends_on:",
            f"      {prev}: healthy",
        ]
        if i > 1:
            out.append(f"      svc{i // 2 - 1 if i // 2 - 1 != i - 1 else 0}: started")
    out += [
        "    health_check:",
        f"      http: http://127.0.0.1:{20000 + i}/",
        "      interval: 1s",
        "      timeout: 500ms",
        "      retries: 3",
        "      start_period: 2s",
        "    restart: {policy: on-failure, max_restarts: 3, backoff: {initial: 500ms, max: 10s}}",
        "    stop: {signal: SIGTERM, timeout: 5s}",
    ]
print("\n".join(out))
