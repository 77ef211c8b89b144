#!/usr/bin/env python3
"""Writes a services.yaml of N services (default 100) to stdout, for bench/validate.sh.

Every service uses the features validation has to work through: ports, env with variables and
service references, depends_on with conditions, health checks, restart and stop settings.

    validate_gen.py N                 # one file on stdout
    validate_gen.py N --compose DIR   # DIR/base.yaml with an x- anchor merged into every
                                      # service, and DIR/override1.yaml, DIR/override2.yaml that
                                      # replace, deep-merge and append (bench/validate_compose.sh)
"""
import os
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 100

if len(sys.argv) > 3 and sys.argv[2] == "--compose":
    out_dir = sys.argv[3]
    base = [
        "name: bench",
        "x-defaults: &defaults",
        "  restart: {policy: on-failure, max_restarts: 3, backoff: {initial: 500ms, max: 10s}}",
        "  stop: {signal: SIGTERM, timeout: 5s}",
        "  env: &env",
        "    LOG_LEVEL: ${LOG_LEVEL:-info}",
        "    REGION: ${REGION:-eu}",
        "services:",
    ]
    over1 = ["services:"]
    over2 = ["services:"]
    for i in range(n):
        base += [
            f"  svc{i}:",
            "    <<: *defaults",
            "    binary: python3",
            f"    args: [-m, http.server, \"${{PORT_{i}:-{20000 + i}}}\", --bind, 127.0.0.1]",
            "    ports:",
            f"      - {{name: http, port: {20000 + i}}}",
            "    env:",
            "      <<: *env",
            f"      INDEX: \"{i}\"",
        ]
        if i > 0:
            prev = f"svc{i - 1}"
            base += [
                f"      UPSTREAM: http://${{{prev}.ip}}:${{{prev}.ports.http}}/",
                "    depends_on:",
                f"      {prev}: healthy",
            ]
        base += [
            "    health_check:",
            f"      http: http://127.0.0.1:{20000 + i}/",
            "      interval: 1s",
        ]
        over1 += [
            f"  svc{i}:",
            "    env: {REGION: us, EXTRA: \"1\"}",
            "    health_check: {timeout: 500ms, retries: 3}",
        ]
        over2 += [
            f"  svc{i}:",
            f"    ports: [{{name: admin, port: {40000 + i}}}]",
            "    stop: {timeout: 2s}",
        ]
    for name, lines in (("base.yaml", base), ("override1.yaml", over1), ("override2.yaml", over2)):
        with open(os.path.join(out_dir, name), "w") as f:
            f.write("\n".join(lines) + "\n")
    sys.exit(0)
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
