//! The one-port proxy through the real daemon: `Host: api.localhost` reaches a local service,
//! headers are forwarded, an unknown host lists the routes, a streaming response ends when its
//! service restarts and the next request reaches the new instance.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;

/// An HTTP/1.1 server: `/headers` echoes the request headers, `/stream` sends a line every
/// 50 ms for ever (chunked), anything else says hello with the pid.
const SERVER: &str = r#"
import os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def send_text(self, text):
        body = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/headers":
            self.send_text("".join(f"{k.lower()}: {v}\n" for k, v in self.headers.items()))
        elif self.path == "/stream":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            i = 0
            while True:
                line = f"tick {i}\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
                i += 1
                time.sleep(0.05)
        else:
            self.send_text(f"hello from {os.getpid()}\n")
print("listening", flush=True)
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

/// A raw HTTP/1.1 GET through the proxy: (status, headers and body as text).
fn get(proxy: u16, host: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", proxy)).expect("connect to the proxy");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn yaml(proxy: u16, port: u16) -> String {
    format!(
        "name: px\nproxy: {{port: {proxy}}}\nservices:\n  api:\n    command: [python3, server.py, '{port}']\n    ports: [{port}]\n    health_check: {{tcp: {port}, interval: 200ms, start_period: 30s}}\n  other:\n    command: [sleep, '86413']\n    subdomain: web\n"
    )
}

#[test]
fn proxy_routes_by_host_forwards_headers_and_lists_routes() {
    let (proxy, port) = (free_port(), free_port());
    let env = Env::new(&yaml(proxy, port));
    std::fs::write(env.dir.path().join("server.py"), SERVER).unwrap();
    env.run(&["start"]).ok();

    let (status, text) = get(proxy, &format!("api.localhost:{proxy}"), "/");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("hello from"), "{text}");
    // The project's name is a level of its own too.
    let (status, text) = get(proxy, "api.px.localhost", "/");
    assert_eq!(status, 200, "{text}");

    let (_, headers) = get(proxy, &format!("api.localhost:{proxy}"), "/headers");
    assert!(headers.contains("x-forwarded-for: 127.0.0.1"), "{headers}");
    assert!(
        headers.contains(&format!("x-forwarded-host: api.localhost:{proxy}")),
        "{headers}"
    );
    assert!(headers.contains("x-forwarded-proto: http"), "{headers}");
    assert!(
        headers.contains(&format!("host: api.localhost:{proxy}")),
        "{headers}"
    );

    // Unknown host: the page lists the routes; `other` has no port, so it leads nowhere.
    let (status, page) = get(proxy, "nope.localhost", "/");
    assert_eq!(status, 404, "{page}");
    assert!(page.contains("api.localhost"), "{page}");
    assert!(page.contains("web.px.localhost"), "{page}");
    assert!(page.contains("declares no ports"), "{page}");
    let (status, text) = get(proxy, "web.localhost", "/");
    assert_eq!(status, 503, "{text}");

    // Keep-alive: two requests on one client connection.
    let mut s = TcpStream::connect(("127.0.0.1", proxy)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    for _ in 0..2 {
        write!(s, "GET / HTTP/1.1\r\nHost: api.localhost\r\n\r\n").unwrap();
        let mut status = String::new();
        r.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        let mut len = 0;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
    }
    env.run(&["stop"]).ok();
    let (status, text) = get(proxy, "api.localhost", "/");
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("stopped"), "{text}");
}

#[test]
fn a_restart_ends_a_streaming_response_and_the_next_request_reaches_the_new_instance() {
    let (proxy, port) = (free_port(), free_port());
    let env = Env::new(&yaml(proxy, port));
    std::fs::write(env.dir.path().join("server.py"), SERVER).unwrap();
    env.run(&["start", "api"]).ok();
    let (_, before) = get(proxy, "api.localhost", "/");

    let mut s = TcpStream::connect(("127.0.0.1", proxy)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /stream HTTP/1.1\r\nHost: api.localhost\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut seen = String::new();
    while !seen.contains("tick 3") {
        let mut l = String::new();
        assert!(r.read_line(&mut l).unwrap() > 0, "{seen}");
        seen.push_str(&l);
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");

    env.run(&["restart", "api"]).ok();
    // The response ends (the connection closes) instead of hanging.
    let t = Instant::now();
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    assert!(
        t.elapsed() < Duration::from_secs(9),
        "the stream did not end"
    );

    let (status, after) = get(proxy, "api.localhost", "/");
    assert_eq!(status, 200, "{after}");
    let pid = |t: &str| t.lines().last().unwrap_or("").to_owned();
    assert_ne!(pid(&before), pid(&after), "still the old instance: {after}");
    env.run(&["stop"]).ok();
}

#[test]
fn a_taken_proxy_port_fails_the_start_and_starts_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = taken.local_addr().unwrap().port();
    let env = Env::new(&yaml(proxy, free_port()));
    let run = env.run(&["start"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("proxy") && run.stderr.contains(&proxy.to_string()),
        "{}",
        run.stderr
    );
    assert!(env.status().iter().all(|s| s["state"]["kind"] != "running"));
}

#[test]
fn a_starting_service_answers_503_with_retry_after_then_200() {
    let (proxy, port) = (free_port(), free_port());
    let env = Env::new(&format!(
        "name: slow\nproxy: {{port: {proxy}}}\nservices:\n  api:\n    command: [sh, -c, 'sleep 2; exec python3 server.py {port}']\n    ports: [{port}]\n    health_check: {{tcp: {port}, interval: 200ms, start_period: 30s}}\n"
    ));
    std::fs::write(env.dir.path().join("server.py"), SERVER).unwrap();
    let mut start = env
        .cmd(&["start"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut during = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            // The daemon (and its proxy) may not be up yet.
            if TcpStream::connect(("127.0.0.1", proxy)).is_err() {
                return false;
            }
            during = get(proxy, "api.localhost", "/").1;
            during.starts_with("HTTP/1.1 503")
        }),
        "{during}"
    );
    assert!(
        during.to_ascii_lowercase().contains("retry-after: 1"),
        "{during}"
    );
    assert!(
        during.contains("api is not available: it is starting"),
        "{during}"
    );
    assert!(start.wait().unwrap().success());
    let (status, after) = get(proxy, "api.localhost", "/");
    assert_eq!(status, 200, "{after}");
    env.run(&["stop"]).ok();
}
