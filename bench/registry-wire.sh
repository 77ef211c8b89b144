#!/bin/sh
# Registry wire benchmarks over real TLS on loopback: request round trip, 100-subscriber fan-out
# latency, events/s to one subscriber (live and replay). Prints numbers; targets are in issue 4:
# fan-out p99 <= 2 ms, >= 100k events/s, round trip p50 <= 200 us.
# REGISTRY_BENCH=rtt|fanout|throughput runs one of them.
set -eu
cd "$(dirname "$0")/.."
exec cargo bench -p harness-server --bench wire "$@"
