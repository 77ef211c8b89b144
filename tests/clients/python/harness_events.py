#!/usr/bin/env python3
"""Follow harness events from any tool: connect with the pinned CA and the token, subscribe, and print
every event as one JSON line.

    python3 harness_events.py [--home DIR] [--url wss://...] [--since SEQ] [--count N] [--type T ...]

By default it reads the daemon's URL (daemon.json), CA (ca.pem) and token from $HARNESS_HOME or
~/.local/share/harness. On a disconnect it resumes from the last seq it printed, so nothing is lost.
"""

import argparse
import asyncio
import json
import os
import ssl
import sys

import websockets
from websockets.asyncio.client import connect


def default_home():
    home = os.environ.get("HARNESS_HOME")
    if home:
        return home
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "harness")


async def follow(url, ca_file, token, since, count, types):
    ctx = ssl.create_default_context(cafile=ca_file)  # trusts the harness CA and nothing else
    headers = {"Authorization": f"Bearer {token}"}
    printed = 0
    last = since
    while True:
        try:
            async with connect(url, ssl=ctx, additional_headers=headers, max_size=64 << 20) as ws:
                params = {"types": types} if types else {}
                if last is not None:
                    params["since"] = last
                await ws.send(json.dumps({"id": 1, "method": "subscribe", "params": params}))
                async for frame in ws:
                    msg = json.loads(frame)
                    if "id" in msg and "seq" not in msg:
                        if "error" in msg:
                            print(f"subscribe failed: {msg['error']}", file=sys.stderr)
                            return 2
                        if last is None:
                            last = msg["result"]["last_seq"]
                        continue
                    if "resync" in msg:
                        last = msg["resync"]["seq"]
                    else:
                        last = msg["seq"]
                    print(json.dumps(msg), flush=True)
                    printed += 1
                    if count and printed >= count:
                        return 0
        except websockets.exceptions.InvalidStatus as e:
            print(f"refused by the server: HTTP {e.response.status_code}", file=sys.stderr)
            return 3
        except ssl.SSLError as e:
            print(f"TLS failed (wrong CA?): {e}", file=sys.stderr)
            return 3
        except (OSError, websockets.exceptions.ConnectionClosed) as e:
            print(f"disconnected ({e}); resuming after seq {last}", file=sys.stderr)
            await asyncio.sleep(0.2)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--home", default=default_home())
    p.add_argument("--url", help="wss://HOST:PORT/v1/ws (default: from daemon.json)")
    p.add_argument("--since", type=int, help="replay retained events after this seq first")
    p.add_argument("--count", type=int, default=0, help="exit after N events (0: follow forever)")
    p.add_argument("--type", dest="types", action="append", help="only this event type (repeatable)")
    a = p.parse_args()
    url = a.url
    if not url:
        with open(os.path.join(a.home, "daemon.json")) as f:
            url = json.load(f)["url"]
    with open(os.path.join(a.home, "token")) as f:
        token = f.read().strip()
    ca = os.path.join(a.home, "ca.pem")
    try:
        sys.exit(asyncio.run(follow(url, ca, token, a.since, a.count, a.types)))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
