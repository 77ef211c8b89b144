#!/usr/bin/env python3
"""Serves www/ and GET /hello (greeting and version) on $HELLO_BIND:$HELLO_PORT (default 0.0.0.0:8080).
With --check, exits 0 when the server answers (the manifest's health command)."""
import http.server
import os
import sys
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
BIND = os.environ.get("HELLO_BIND", "0.0.0.0")
PORT = int(os.environ.get("HELLO_PORT", "8080"))


def version():
    with open(os.path.join(HERE, "www", "version.txt")) as f:
        return f.read().strip()


class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=os.path.join(HERE, "www"), **kwargs)

    def do_GET(self):
        if self.path == "/hello":
            body = f"{os.environ.get('HELLO_GREETING', 'hello')} from {version()}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            super().do_GET()


if __name__ == "__main__":
    if "--check" in sys.argv:
        host = "127.0.0.1" if BIND == "0.0.0.0" else BIND
        with urllib.request.urlopen(f"http://{host}:{PORT}/hello", timeout=2) as r:
            sys.exit(0 if r.status == 200 else 1)
    http.server.ThreadingHTTPServer((BIND, PORT), Handler).serve_forever()
