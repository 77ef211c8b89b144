//! The web dashboard end to end (ADR 0039): the daemon serves it, `harness dashboard` gives a
//! one-time login link, and a real headless Chromium (Debian's `chromium` driven by
//! `chromedriver` over WebDriver) logs in and uses it against real services. Raw requests go
//! through `curl` (trusting the daemon's CA), so refusals are seen exactly as a client sees them.
//!
//! Chromium trusts the daemon's certificate through `--ignore-certificate-errors-spki-list` with the
//! SHA-256 of the server certificate's public key (computed with `openssl`), which Chromium honours
//! only with its own `--user-data-dir`. Screenshots of each view (1280×800) go to
//! `target/dashboard-screenshots/`.

#[allow(dead_code)]
#[path = "daemon/common.rs"]
mod common;
#[path = "common/dashboard.rs"]
mod fixtures;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Env, free_port, kill9, wait_until};
use fixtures::{base, login_link, screenshots_dir, start_daemon_again};
use serde_json::{Value, json};

// --- raw HTTPS through curl ---------------------------------------------------------------------

struct Reply {
    status: u16,
    head: String,
    body: String,
}

fn curl(env: &Env, args: &[&str]) -> Reply {
    let ca = env.home().join("ca.pem");
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "3", "--cacert"])
        .arg(&ca)
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn header<'a>(r: &'a Reply, name: &str) -> Vec<&'a str> {
    r.head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

fn code_of(link: &str) -> &str {
    link.split_once("#code=").expect("#code= in the link").1
}

fn ws_upgrade(env: &Env, extra: &[&str]) -> Reply {
    let url = format!("{}/v1/ws", base(env));
    let mut args = vec![
        "--http1.1",
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: websocket",
        "-H",
        "Sec-WebSocket-Version: 13",
        "-H",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(env, &args)
}

const YAML: &str = "name: shop
services:
  db:
    command: 'echo db up; exec sleep 1000'
    health_check: {command: 'true', interval: 200ms}
  api:
    command: 'echo api up; exec sleep 1000'
    depends_on: {db: healthy}
  worker:
    command: 'echo worker up; exec tail -n0 -F marker.txt'
    depends_on: [api]
    restart: no
";

#[test]
fn without_a_session_every_page_and_the_websocket_are_refused_and_a_code_works_once() {
    let env = Env::new(YAML);
    env.run(&["start"]).ok();
    let token = std::fs::read_to_string(env.home().join("token")).expect("token");
    let token = token.trim();
    let base = base(&env);
    let origin = format!("Origin: {base}");
    let mut served = String::new();

    for path in ["/", "/index.html", "/app.js", "/api.js"] {
        let r = curl(&env, &[&format!("{base}{path}")]);
        assert_eq!(r.status, 401, "{path} without a session: {}", r.head);
        served.push_str(&r.body);
    }
    // The login page and what it needs are public and carry no data.
    for path in ["/login", "/login.js", "/dashboard.css"] {
        let r = curl(&env, &[&format!("{base}{path}")]);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(header(&r, "x-frame-options"), ["DENY"], "{path}");
        assert_eq!(header(&r, "x-content-type-options"), ["nosniff"], "{path}");
        let csp = header(&r, "content-security-policy").join(" ");
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
            "{csp}"
        );
        served.push_str(&r.body);
    }
    assert_eq!(
        ws_upgrade(&env, &[]).status,
        401,
        "WebSocket without cookie"
    );
    assert_eq!(
        ws_upgrade(&env, &["-H", &origin]).status,
        401,
        "WebSocket without cookie, with the right Origin"
    );

    // A wrong code, a good one, then the good one again.
    let link = login_link(&env);
    let code = code_of(&link).to_string();
    let post = |body: &str, origin: &str| {
        curl(
            &env,
            &[
                "-X",
                "POST",
                "-H",
                origin,
                "-H",
                "Content-Type: text/plain",
                "--data-binary",
                body,
                &format!("{base}/login"),
            ],
        )
    };
    assert_eq!(
        post("code=00112233445566778899aabbccddeeff", &origin).status,
        401
    );
    assert_eq!(
        post(&format!("code={code}"), "Origin: https://evil.example").status,
        403,
        "a login from another origin"
    );
    let ok = post(&format!("code={code}"), &origin);
    assert_eq!(ok.status, 204, "{}{}", ok.head, ok.body);
    let cookie = header(&ok, "set-cookie").join("");
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(cookie.starts_with("__Host-harness_session="), "{cookie}");
    assert!(!cookie.contains(token));
    assert_eq!(
        post(&format!("code={code}"), &origin).status,
        401,
        "a used code"
    );
    let session = cookie.split(';').next().expect("name=value").to_string();
    let with_cookie = format!("Cookie: {session}");

    for path in ["/", "/app.js", "/api.js", "/favicon.svg"] {
        let r = curl(&env, &["-H", &with_cookie, &format!("{base}{path}")]);
        assert_eq!(r.status, 200, "{path} with a session");
        served.push_str(&r.head);
        served.push_str(&r.body);
    }
    // The cookie opens the WebSocket only from the dashboard's own origin.
    assert_eq!(
        ws_upgrade(&env, &["-H", &with_cookie, "-H", &origin]).status,
        101
    );
    assert_eq!(
        ws_upgrade(
            &env,
            &["-H", &with_cookie, "-H", "Origin: https://evil.example"]
        )
        .status,
        401
    );
    assert_eq!(
        ws_upgrade(&env, &["-H", &with_cookie]).status,
        401,
        "no Origin"
    );
    assert!(
        !served.contains(token),
        "the token appears in a served byte"
    );

    // Logging out ends the session.
    let out = curl(
        &env,
        &[
            "-X",
            "POST",
            "-H",
            &with_cookie,
            "-H",
            &origin,
            &format!("{base}/logout"),
        ],
    );
    assert_eq!(out.status, 204);
    let r = curl(&env, &["-H", &with_cookie, &format!("{base}/")]);
    assert_eq!(r.status, 401, "after logout");
}

// --- WebDriver ----------------------------------------------------------------------------------

/// chromedriver, killed when dropped (also when the session could not be created).
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Browser {
    _driver: Driver,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect chromedriver");
    s.set_read_timeout(Some(Duration::from_secs(60))).ok();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    // chromedriver keeps the connection open: read the head, then Content-Length bytes (or
    // chunks up to the last one).
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let n = s.read(&mut buf).expect("read from chromedriver");
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let lower = head.to_ascii_lowercase();
            let length = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            let done = match length {
                Some(len) => body.len() >= len,
                None if lower.contains("transfer-encoding: chunked") => body.ends_with("0\r\n\r\n"),
                None => n == 0,
            };
            if done {
                let body = if length.is_none() {
                    dechunk(body)
                } else {
                    body.to_string()
                };
                return serde_json::from_str(&body)
                    .unwrap_or_else(|e| panic!("chromedriver said ({e}): {body}"));
            }
        }
        assert!(n > 0, "chromedriver closed the connection early");
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// base64 of the SHA-256 of the daemon certificate's SubjectPublicKeyInfo.
fn spki_hash(cert: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(
            "openssl x509 -in \"$1\" -pubkey -noout | openssl pkey -pubin -outform der | \
             openssl dgst -sha256 -binary | base64",
        )
        .arg("sh")
        .arg(cert)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Browser {
    fn open(env: &Env) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian: apt-get install chromium-driver)");
        let driver = Driver(driver);
        assert!(
            wait_until(Duration::from_secs(10), || TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "chromedriver did not listen"
        );
        let profile = tempfile::tempdir().expect("tempdir");
        let mut args = vec![
            "--headless=new".to_string(),
            "--window-size=1280,800".to_string(),
            "--disable-gpu".to_string(),
            "--disable-dev-shm-usage".to_string(),
            format!("--user-data-dir={}", profile.path().display()),
            format!(
                "--ignore-certificate-errors-spki-list={}",
                spki_hash(&env.home().join("server.pem"))
            ),
        ];
        if rustix::process::geteuid().is_root() {
            args.push("--no-sandbox".to_string());
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"args": args, "binary": "/usr/bin/chromium"},
        }}});
        let r = http(port, "POST", "/session", Some(&caps));
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_string();
        let b = Browser {
            _driver: driver,
            port,
            session,
            _profile: profile,
        };
        b.viewport(1280, 800);
        b
    }

    /// Sizes the window so that the page itself is `width`×`height` (screenshots are of it).
    fn viewport(&self, width: i64, height: i64) {
        let v = self.js("return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight];");
        let dw = v[0].as_i64().unwrap_or(0);
        let dh = v[1].as_i64().unwrap_or(0);
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width + dw, "height": height + dh})),
        );
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let r = http(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        );
        r["value"].clone()
    }

    fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    fn js(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    fn wait_js(&self, what: &str, timeout: Duration, script: &str) -> Value {
        let start = Instant::now();
        loop {
            let v = self.js(script);
            if !v.is_null() && v != Value::Bool(false) {
                return v;
            }
            if start.elapsed() >= timeout {
                let page = self
                    .js("return location.href + ' | ' + document.body.innerText.slice(0, 800);");
                panic!("timed out waiting for {what}; the page: {page}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn click(&self, css: &str) {
        let js = format!(
            "const e = document.querySelector({}); if (!e) return false; e.click(); return true;",
            serde_json::to_string(css).expect("json")
        );
        assert_eq!(self.js(&js), Value::Bool(true), "no element {css}");
    }

    fn screenshot(&self, name: &str) {
        let v = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 png"))
            .expect("png");
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        // `_driver` is dropped after this: chromedriver is killed.
    }
}

/// The services table as the page shows it: name → (state, pid, restarts).
const TABLE: &str =
    "return [...document.querySelectorAll('#services tr[data-service]')].map(r => ({
    name: r.dataset.service,
    state: r.querySelector('[data-field=state]').textContent,
    health: r.querySelector('[data-field=health]').textContent,
    pid: r.querySelector('[data-field=pid]').textContent,
    restarts: r.querySelector('[data-field=restarts]').textContent,
}));";

fn row_state(b: &Browser, name: &str) -> String {
    b.js(&format!(
        "const r = document.querySelector('#services tr[data-service=\"{name}\"] [data-field=state]'); return r ? r.textContent : '';"
    ))
    .as_str()
    .unwrap_or_default()
    .to_string()
}

fn page_seqs(b: &Browser) -> Vec<u64> {
    let v = b.js(
        "return [...document.querySelectorAll('#events tr[data-seq]')].map(r => Number(r.dataset.seq));",
    );
    let mut seqs: Vec<u64> = v
        .as_array()
        .expect("seqs")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    seqs.sort_unstable();
    seqs
}

fn last_seq(env: &Env) -> u64 {
    let r = curl(env, &[&format!("{}/healthz", base(env))]);
    let v: Value = serde_json::from_str(&r.body).expect("healthz JSON");
    v["last_seq"].as_u64().expect("last_seq")
}

#[test]
fn the_dashboard_in_headless_chromium() {
    let env = Env::new(YAML);
    std::fs::write(env.dir.path().join("marker.txt"), "").expect("marker");
    env.run(&["start"]).ok();
    let b = Browser::open(&env);

    // A wrong code is refused; the right one logs in and leaves no code in the address bar.
    let link = login_link(&env);
    let wrong = format!("{}/login#code=0123456789abcdef0123456789abcdef", base(&env));
    b.go(&wrong);
    b.wait_js(
        "the refusal",
        Duration::from_secs(10),
        "return document.getElementById('login-message').textContent.includes('wrong');",
    );
    assert_eq!(
        b.js("return location.href;").as_str(),
        Some(format!("{}/login", base(&env)).as_str())
    );
    b.go(&link);
    b.wait_js(
        "the dashboard",
        Duration::from_secs(10),
        "return document.body.dataset.ready === 'true';",
    );
    let href = b.js("return location.href;");
    assert!(
        !href.as_str().unwrap_or_default().contains("code"),
        "{href}"
    );
    b.wait_js(
        "the projects table",
        Duration::from_secs(5),
        "return document.querySelector('#projects tr[data-project=shop]') !== null;",
    );
    b.screenshot("projects");
    // The used code again: refused.
    b.go(&link);
    b.wait_js(
        "the refusal of a used code",
        Duration::from_secs(10),
        "return document.getElementById('login-message').textContent.includes('used');",
    );

    // The services table matches `harness status -o json`.
    b.go(&format!("{}/#/p/shop", base(&env)));
    b.wait_js(
        "three rows",
        Duration::from_secs(10),
        "return document.querySelectorAll('#services tr[data-service]').length === 3;",
    );
    let rows = b.js(TABLE);
    let status = env.status();
    for s in &status {
        let name = s["name"].as_str().expect("name");
        let row = rows
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no row for {name}: {rows}"));
        assert_eq!(row["state"], s["state"]["kind"], "{name}");
        assert_eq!(row["health"], s["health"]["status"], "{name}");
        assert_eq!(
            row["pid"].as_str().unwrap_or_default(),
            s["runtime"]["pid"]
                .as_u64()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            "{name}"
        );
        assert_eq!(
            row["restarts"].as_str(),
            Some(
                s["restart_count"]
                    .as_u64()
                    .unwrap_or(0)
                    .to_string()
                    .as_str()
            )
        );
    }
    b.screenshot("services");

    // Killing a service by hand: its row says `exited` within 1 s, without a reload.
    let worker = env.service("worker")["runtime"]["pid"]
        .as_u64()
        .expect("worker pid") as u32;
    b.js("window.__marker = 1; return true;");
    let killed = Instant::now();
    kill9(worker);
    while !row_state(&b, "worker").starts_with("exited") {
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "the row still says {:?} 1 s after the kill",
            row_state(&b, "worker")
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("row exited after {:?}", killed.elapsed());
    assert_eq!(
        b.js("return window.__marker;"),
        json!(1),
        "the page reloaded"
    );

    // Start it again from the page (confirmed), then restart it (confirmed).
    b.click("#services tr[data-service=worker] button[data-action=start]");
    assert_eq!(
        b.js("return document.getElementById('confirm').open;"),
        json!(true)
    );
    b.click("#confirm-ok");
    b.wait_js(
        "worker running",
        Duration::from_secs(10),
        "const r = document.querySelector('#services tr[data-service=worker] [data-field=state]'); return r && r.textContent === 'running';",
    );
    let before = env.service("worker")["runtime"]["pid"].as_u64();
    b.click("#services tr[data-service=worker] button[data-action=restart]");
    b.click("#confirm-ok");
    wait_until(Duration::from_secs(10), || {
        let s = env.service("worker");
        s["state"]["kind"] == "running" && s["runtime"]["pid"].as_u64() != before
    });
    let after = env.service("worker")["runtime"]["pid"].as_u64();
    assert_ne!(before, after, "restart from the page gave a new process");
    b.wait_js(
        "the new pid on the page",
        Duration::from_secs(5),
        &format!(
            "const r = document.querySelector('#services tr[data-service=worker] [data-field=pid]'); return r && r.textContent === '{}';",
            after.unwrap_or(0)
        ),
    );

    // CPU % and RSS from `top` (polled every 2 s): numbers for a running local service.
    b.wait_js(
        "worker's CPU and RSS",
        Duration::from_secs(10),
        "const r = document.querySelector('#services tr[data-service=worker]'); return r !== null && /^\\d+\\.\\d$/.test(r.querySelector('[data-field=cpu]').textContent) && / MiB$/.test(r.querySelector('[data-field=rss]').textContent);",
    );
    b.screenshot("services-resources");

    // The restart from the page is an operation: listed (newest first), and its page shows the
    // steps (spawning worker) in the table and as bars of the timeline.
    let restart_op = env.run(&["ops", "-o", "json"]).ok().json()["operations"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .filter(|o| o["kind"] == "restart")
                .map(|o| o["id"].as_u64().unwrap_or(0))
                .max()
        })
        .expect("a restart operation in `harness ops`");
    b.go(&format!("{}/#/ops", base(&env)));
    b.wait_js(
        "the operations list",
        Duration::from_secs(10),
        &format!(
            "const r = document.querySelector('#ops tbody tr'); return r !== null && r.dataset.op === '{restart_op}' && r.dataset.outcome === 'succeeded';"
        ),
    );
    let ids = b.js(
        "return [...document.querySelectorAll('#ops tr[data-op]')].map(r => Number(r.dataset.op));",
    );
    let ids: Vec<u64> = ids
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "not newest first: {ids:?}"
    );
    b.screenshot("operations");
    b.click(&format!("#ops tr[data-op='{restart_op}'] a"));
    b.wait_js(
        "the operation's steps",
        Duration::from_secs(10),
        "return document.querySelector('#op-steps tr[data-kind=spawning][data-service=worker]') !== null && document.querySelector('svg rect.bar[data-kind=spawning]') !== null;",
    );
    let shown = b.js("return document.querySelectorAll('#op-steps tbody tr').length;");
    let steps = env
        .run(&["ops", "show", &restart_op.to_string(), "-o", "json"])
        .ok()
        .json()["steps"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert_eq!(
        shown,
        json!(steps),
        "steps on the page vs `harness ops show`"
    );
    assert_eq!(
        b.js("return document.getElementById('op-cancel');"),
        Value::Null,
        "a Cancel button on an ended operation"
    );
    // The service page links to the service's operations.
    b.go(&format!("{}/#/p/shop/s/worker", base(&env)));
    b.wait_js(
        "the service page's link to its operations",
        Duration::from_secs(10),
        "const a = document.getElementById('service-ops'); return a !== null && a.getAttribute('href') === '#/p/shop/s/worker/ops';",
    );
    b.click("#service-ops");
    b.wait_js(
        "worker's operations",
        Duration::from_secs(10),
        &format!("return document.querySelector(\"#ops tr[data-op='{restart_op}']\") !== null;"),
    );

    // Drift, read-only: a `sleep` started by hand with worker's launch identity (worker
    // stopped) is an orphan; the page shows what `drift` finds, with evidence and the commands
    // that resolve it (no services file is compared, so the CLI's definition_drift findings are
    // not expected on the page).
    let worker_pid = env.service("worker")["runtime"]["pid"]
        .as_u64()
        .expect("worker pid");
    let environ = std::fs::read(format!("/proc/{worker_pid}/environ")).expect("environ");
    let launch_id = environ
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(b"HARNESS_LAUNCH_ID="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .expect("worker carries its launch id");
    env.run(&["stop", "worker"]).ok();
    let mut by_hand = {
        use std::os::unix::process::CommandExt;
        Command::new("sleep")
            .arg("1000")
            .env("HARNESS_LAUNCH_ID", &launch_id)
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep")
    };
    b.go(&format!("{}/#/drift", base(&env)));
    let seen = b.wait_js(
        "the drift view",
        Duration::from_secs(20),
        "return document.getElementById('drift-summary') !== null;",
    );
    let page = b.js(
        "return [...document.querySelectorAll('#drift tr[data-finding]')].map(r => ({id: r.dataset.finding, category: r.dataset.category, text: r.textContent}));",
    );
    b.screenshot("drift");
    let cli = env.run(&["drift", "-o", "json"]).json();
    let _ = by_hand.kill();
    let _ = by_hand.wait();
    env.run(&["restart", "worker"]).ok();
    let mut page_ids: Vec<String> = page
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["id"].as_str().unwrap_or_default().to_string())
        .collect();
    page_ids.sort();
    let mut cli_ids: Vec<String> = cli["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["category"] != "definition_drift")
        .map(|f| f["id"].as_str().unwrap_or_default().to_string())
        .collect();
    cli_ids.sort();
    assert_eq!(
        page_ids, cli_ids,
        "drift on the page vs `harness drift`: {seen}"
    );
    let orphan = page
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["category"] == "orphaned")
        .unwrap_or_else(|| panic!("no orphan on the page: {page}"));
    assert!(
        orphan["text"]
            .as_str()
            .unwrap_or_default()
            .contains("harness sync"),
        "no resolve command: {orphan}"
    );

    // The log tail shows lines printed after the page opened, and follows a restart.
    b.go(&format!("{}/#/p/shop/s/worker", base(&env)));
    b.wait_js(
        "the service page",
        Duration::from_secs(10),
        "return document.getElementById('log') !== null && document.body.dataset.ready === 'true';",
    );
    std::thread::sleep(Duration::from_millis(300));
    let marker = env.dir.path().join("marker.txt");
    let append = |line: &str| {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&marker)
            .expect("marker");
        writeln!(f, "{line}").expect("append");
    };
    append("printed-after-open-1");
    b.wait_js(
        "the new log line",
        Duration::from_secs(10),
        "return document.getElementById('log').textContent.includes('printed-after-open-1');",
    );
    env.run(&["restart", "worker"]).ok();
    std::thread::sleep(Duration::from_millis(500));
    append("printed-after-restart-2");
    b.wait_js(
        "the log line after a restart",
        Duration::from_secs(15),
        "return document.getElementById('log').textContent.includes('printed-after-restart-2');",
    );
    // Search filters lines.
    b.js("const s = document.getElementById('log-search'); s.value = 'restart-2'; s.dispatchEvent(new Event('input')); return true;");
    let visible = b.js(
        "return [...document.querySelectorAll('#log .line')].filter(l => !l.hidden).map(l => l.textContent).join('');",
    );
    assert!(
        visible.as_str().unwrap_or_default().contains("restart-2")
            && !visible.as_str().unwrap_or_default().contains("open-1"),
        "{visible}"
    );
    b.js("const s = document.getElementById('log-search'); s.value = ''; s.dispatchEvent(new Event('input')); return true;");
    b.screenshot("service");

    // The dependency graph: one node per service, in three waves.
    b.go(&format!("{}/#/p/shop/graph", base(&env)));
    b.wait_js(
        "the graph",
        Duration::from_secs(10),
        "return document.querySelectorAll('svg a[data-node]').length === 3;",
    );
    let waves = b.js("return [...document.querySelectorAll('svg text.wave')].length;");
    assert_eq!(waves, json!(3));
    b.screenshot("graph");
    b.go(&format!("{}/#/p/shop/s/db", base(&env)));
    b.wait_js(
        "db's health history",
        Duration::from_secs(10),
        "const h = document.getElementById('health-history'); return h !== null && h.textContent.includes('healthy');",
    );
    b.screenshot("service-health");

    // The event stream; then the daemon is killed -9 and restarted: the page reconnects on its
    // own and has every event, with no gap in seq.
    b.go(&format!("{}/#/events", base(&env)));
    b.wait_js(
        "events",
        Duration::from_secs(10),
        "return document.querySelectorAll('#events tr[data-seq]').length > 0;",
    );
    let first_seq_seen = page_seqs(&b).last().copied().expect("a seq");
    b.js("window.__marker = 2; return true;");
    let daemon = env.daemon_pid().expect("daemon pid");
    kill9(daemon);
    b.wait_js(
        "the page noticing",
        Duration::from_secs(10),
        "return document.getElementById('connection').dataset.state === 'down';",
    );
    start_daemon_again(&env);
    env.run(&["restart", "api"]).ok();
    let last = last_seq(&env);
    b.wait_js(
        "the page catching up",
        Duration::from_secs(15),
        &format!(
            "return [...document.querySelectorAll('#events tr[data-seq]')].some(r => Number(r.dataset.seq) === {last});"
        ),
    );
    assert_eq!(
        b.js("return window.__marker;"),
        json!(2),
        "the page reloaded"
    );
    let seqs: Vec<u64> = page_seqs(&b)
        .into_iter()
        .filter(|s| *s >= first_seq_seen)
        .collect();
    let expected: Vec<u64> = (first_seq_seen..=last).collect();
    assert_eq!(seqs, expected, "events on the page after the restart");
    b.screenshot("events");
    b.go(&format!("{}/#/p/shop", base(&env)));
    b.wait_js(
        "api running again on the page",
        Duration::from_secs(10),
        "const r = document.querySelector('#services tr[data-service=api] [data-field=state]'); return r && r.textContent === 'running';",
    );

    // Phone width: the services view still renders, without page-level horizontal overflow.
    b.viewport(390, 800);
    std::thread::sleep(Duration::from_millis(300));
    let overflow = b.js("return document.documentElement.scrollWidth <= window.innerWidth + 1;");
    b.screenshot("services-phone");
    assert_eq!(
        overflow,
        json!(true),
        "the page scrolls sideways at phone width"
    );
    // The operations list and an operation's timeline too (wide tables and the Gantt scroll
    // inside their own boxes).
    for (route, ready) in [
        ("#/ops".to_string(), "#ops tr[data-op]"),
        ("#/drift".to_string(), "#drift-summary"),
        (format!("#/op/{restart_op}"), "#op-steps tbody tr"),
    ] {
        b.go(&format!("{}/{route}", base(&env)));
        b.wait_js(
            route.as_str(),
            Duration::from_secs(20),
            &format!("return document.querySelector('{ready}') !== null;"),
        );
        let fits = b.js("return document.documentElement.scrollWidth <= window.innerWidth + 1;");
        assert_eq!(fits, json!(true), "{route} scrolls sideways at phone width");
    }
    b.screenshot("operation-phone");
}

/// `db` runs but its check never passes (start_period 1h: never judged unhealthy either), so the
/// start waits for it until cancelled.
const STUCK: &str = "name: stuck
services:
  db:
    command: [sleep, '86433']
    health_check:
      command: [sh, -c, 'echo not yet; exit 1']
      interval: 200ms
      timeout: 1s
      start_period: 1h
    startup_timeout: 10m
  api:
    command: [sleep, '86434']
    depends_on: {db: healthy}
";

#[test]
fn a_start_stuck_on_a_never_healthy_dependency_is_cancelled_from_the_page() {
    let env = Env::new(STUCK);
    let mut start = env
        .cmd(&["start"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn harness start");
    let b = Browser::open(&env);
    b.go(&login_link(&env));
    b.wait_js(
        "the dashboard",
        Duration::from_secs(10),
        "return document.body.dataset.ready === 'true';",
    );
    b.go(&format!("{}/#/ops", base(&env)));
    b.wait_js(
        "a running start, highlighted",
        Duration::from_secs(20),
        "const r = document.querySelector('#ops tr.running[data-outcome=running]'); return r !== null && r.children[1].textContent === 'start';",
    );
    let id = b
        .js("return Number(document.querySelector('#ops tr.running').dataset.op);")
        .as_u64()
        .expect("op id");
    b.click(&format!("#ops tr[data-op='{id}'] a"));
    // Each health attempt is a step and a bar, and new ones arrive live from `operation` events.
    b.wait_js(
        "three failed health checks of db",
        Duration::from_secs(15),
        "return document.querySelectorAll('#op-steps tr[data-kind=health_check][data-service=db]').length >= 3 && document.querySelectorAll('svg rect.bar.kind-health_check.result-failed').length >= 3;",
    );
    let output = b.js(
        "return document.querySelector('#op-steps tr[data-kind=health_check] td.output').textContent;",
    );
    assert!(
        output.as_str().unwrap_or_default().starts_with("not yet"),
        "the health check's output: {output}"
    );
    b.screenshot("operation");
    // Dark mode (Chromium's media emulation through chromedriver): the page follows it.
    b.cmd(
        "POST",
        "/goog/cdp/execute",
        Some(json!({"cmd": "Emulation.setEmulatedMedia", "params": {"features": [{"name": "prefers-color-scheme", "value": "dark"}]}})),
    );
    let background = b.js("return getComputedStyle(document.body).backgroundColor;");
    assert_eq!(background, json!("rgb(11, 18, 32)"), "the dark background");
    b.screenshot("operation-dark");

    b.click("#op-cancel");
    assert_eq!(
        b.js("return document.getElementById('confirm').open && !document.getElementById('confirm-rollback-label').hidden;"),
        json!(true),
        "the cancel is confirmed, with a rollback choice"
    );
    b.click("#confirm-ok");
    b.wait_js(
        "the operation cancelled on the page",
        Duration::from_secs(15),
        "const o = document.querySelector('#op-details [data-field=outcome]'); return o !== null && o.textContent.startsWith('cancelled') && document.getElementById('op-cancel') === null;",
    );
    let op = env
        .run(&["ops", "show", &id.to_string(), "-o", "json"])
        .ok()
        .json();
    assert_eq!(op["outcome"]["status"], "cancelled", "{op}");
    assert_eq!(op["outcome"]["rollback"], false, "{op}");
    assert!(
        wait_until(Duration::from_secs(10), || start
            .try_wait()
            .ok()
            .flatten()
            .is_some()),
        "harness start still runs after the cancel"
    );
    b.go(&format!("{}/#/ops", base(&env)));
    b.wait_js(
        "the list says cancelled",
        Duration::from_secs(10),
        &format!(
            "const r = document.querySelector(\"#ops tr[data-op='{id}']\"); return r !== null && r.dataset.outcome === 'cancelled' && !r.classList.contains('running');"
        ),
    );
    let _ = start.wait();
}

// --- hosts and network views, on the testbed ----------------------------------------------------

/// Logs `b` in with a fresh one-time code and waits for the page.
fn log_in(b: &Browser, env: &Env) {
    b.go(&login_link(env));
    b.wait_js(
        "the dashboard",
        Duration::from_secs(10),
        "return document.body.dataset.ready === 'true';",
    );
}

/// Brings a host's link back up even when the test fails half way.
struct LinkDown<'a>(&'a testbed::Testbed, &'a str);

impl Drop for LinkDown<'_> {
    fn drop(&mut self) {
        self.0.link_up(self.1);
    }
}

fn testbed_hosts(tb: &testbed::Testbed, names: &[&str]) -> String {
    let key = tb.var("TB_SSH_KEY").expect("TB_SSH_KEY");
    let mut y = String::from("hosts:\n");
    for h in names {
        let extra = match *h {
            "h2" => format!(
                ", docker_host: \"{}\"",
                tb.docker_endpoint(testbed::Engine::H2)
            ),
            "h4" => ", jump: h1".to_string(),
            _ => String::new(),
        };
        y.push_str(&format!(
            "  {h}: {{address: {}, user: hbuser, identity_file: {key}, sudo: true{extra}}}\n",
            tb.host(h).addr
        ));
    }
    y
}

/// The hosts table as the page shows it.
const HOSTS: &str = "return [...document.querySelectorAll('#hosts tr[data-host]')].map(r => ({
    host: r.dataset.host,
    ok: r.dataset.ok,
    reachable: r.querySelector('[data-field=reachable]').textContent,
    authenticated: r.querySelector('[data-field=authenticated]').textContent,
    sudo: r.querySelector('[data-field=sudo]').textContent,
    docker: r.querySelector('[data-field=docker]').textContent,
    latency: r.querySelector('[data-field=latency]').textContent,
    problems: r.querySelector('[data-field=problems]').textContent,
}));";

/// The generation of the hosts or network view's last answer, once it is not loading.
fn answered(b: &Browser, section: &str, after: u64) -> u64 {
    b.wait_js(
        &format!("an answer in the {section} view after generation {after}"),
        Duration::from_secs(60),
        &format!(
            "const p = document.querySelector('section.{section} p.status'); \
             if (!p || p.dataset.loading !== 'false') return false; \
             const g = Number(p.dataset.generation); return g > {after} ? g : false;"
        ),
    )
    .as_u64()
    .expect("generation")
}

#[test]
fn hosts_and_network_views_on_the_testbed() {
    let tb = testbed::Testbed::get();
    let instance: u16 = tb
        .var("TB_INSTANCE")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let yaml = format!(
        "name: fleet\n{}services:\n  idle:\n    command: 'exec sleep 1000'\n",
        testbed_hosts(tb, &["h1", "h2", "h3", "h4"])
    );
    let env = Env::new(&yaml);
    // The daemon starts with this command and keeps its environment: the testbed's known hosts,
    // and a runtime dir of its own for ssh masters.
    let run_dir = tempfile::tempdir().expect("tempdir");
    let started = common::run_command({
        let mut c = env.cmd(&["start"]);
        c.env(
            "HARNESS_KNOWN_HOSTS",
            tb.var("TB_SSH_KNOWN_HOSTS").expect("known hosts"),
        )
        .env("XDG_RUNTIME_DIR", run_dir.path());
        c
    });
    assert_eq!(started.code, 0, "{}\n{}", started.stdout, started.stderr);
    let b = Browser::open(&env);
    log_in(&b, &env);

    // The hosts view: h1..h4 reachable with a latency, as `harness hosts check -o json` says.
    b.go(&format!("{}/#/p/fleet/hosts", base(&env)));
    let g = answered(&b, "hosts", 0);
    let rows = b.js(HOSTS);
    let cli = env.run(&["hosts", "check", "-o", "json"]);
    assert_eq!(cli.code, 0, "{}\n{}", cli.stdout, cli.stderr);
    let cli = cli.json();
    let rows = rows.as_array().expect("rows");
    let yes_no = |v: &Value| match v.as_bool() {
        Some(true) => "yes",
        Some(false) => "no",
        None => "–",
    };
    assert_eq!(rows.len(), 4, "{rows:?}");
    for h in cli.as_array().expect("hosts check is a list") {
        let name = h["host"].as_str().expect("host");
        let row = rows
            .iter()
            .find(|r| r["host"] == name)
            .unwrap_or_else(|| panic!("no row for {name}: {rows:?}"));
        assert_eq!(row["reachable"], "yes", "{name}: {row}");
        assert_eq!(row["reachable"], yes_no(&h["reachable"]), "{name}");
        assert_eq!(row["authenticated"], yes_no(&h["authenticated"]), "{name}");
        assert_eq!(row["sudo"], yes_no(&h["sudo"]), "{name}");
        assert_eq!(row["ok"], h["ok"].to_string(), "{name}");
        assert_eq!(
            row["docker"]
                .as_str()
                .unwrap_or_default()
                .starts_with("yes"),
            h["docker"]["reachable"] == true,
            "{name}: {row} vs {h}"
        );
        let latency = row["latency"].as_str().unwrap_or_default();
        let ms: f64 = latency
            .strip_suffix(" ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name}: latency {latency:?}"));
        assert!(ms > 0.0 && h["latency_ms"].as_f64().is_some(), "{name}");
    }
    b.screenshot("hosts");

    // h3's link goes down: after "Check again" its row says unreachable, the others still answer.
    {
        tb.link_down("h3");
        let _up = LinkDown(tb, "h3");
        b.click("#hosts-refresh");
        answered(&b, "hosts", g);
        let rows = b.js(HOSTS);
        for r in rows.as_array().expect("rows") {
            if r["host"] == "h3" {
                assert_eq!(r["reachable"], "no", "{r}");
                assert_eq!(r["ok"], "false", "{r}");
                assert_eq!(r["latency"], "–", "{r}");
                assert!(
                    r["problems"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("reachable"),
                    "{r}"
                );
            } else {
                assert_eq!(r["reachable"], "yes", "{r}");
            }
        }
        b.screenshot("hosts-unreachable");
    }

    // A project without networks says so.
    b.go(&format!("{}/#/p/fleet/network", base(&env)));
    answered(&b, "network", 0);
    let none =
        b.js("const p = document.getElementById('network-none'); return p ? p.textContent : null;");
    assert!(
        none.as_str().unwrap_or_default().contains("No networks"),
        "{none}"
    );

    // A small mesh: this machine, h1 and h2. The view lists its members with their addresses as
    // `harness network list` does, and each member's peers.
    let mesh_yaml = format!(
        "name: meshdash\n{hosts}networks:\n  mesh:\n    type: wireguard\n    subnet: 10.79.{instance}.0/24\n    listen_port: {port}\n    nodes: [{{host: local}}, {{host: h1}}, {{host: h2}}]\nservices:\n  near:\n    command: 'exec sleep 1000'\n  far:\n    host: h1\n    command: 'exec sleep 1000'\n",
        hosts = testbed_hosts(tb, &["h1", "h2"]),
        port = 51825 + 10 * instance,
    );
    std::fs::write(env.dir.path().join("mesh.yaml"), mesh_yaml).expect("mesh.yaml");
    let up = env.run(&["-f", "mesh.yaml", "start"]);
    assert_eq!(up.code, 0, "{}\n{}", up.stdout, up.stderr);
    let listed = env
        .run(&["-f", "mesh.yaml", "network", "list", "-o", "json"])
        .ok()
        .json();
    b.go(&format!("{}/#/p/meshdash/network", base(&env)));
    answered(&b, "network", 0);
    let members = b.js(
        "return [...document.querySelectorAll('table.mesh-members[data-network=mesh] tr[data-member]')].map(r => [r.dataset.member, r.querySelector('[data-field=address]').textContent, r.querySelector('[data-field=up]').textContent]);",
    );
    let members = members.as_array().expect("members");
    let listed = listed.as_array().expect("network list is a list");
    assert_eq!(members.len(), 3, "{members:?}");
    for m in listed {
        let name = m["member"].as_str().expect("member");
        let row = members
            .iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("no row for {name}: {members:?}"));
        assert_eq!(row[1], m["address"], "{name}");
        assert_eq!(row[2], "yes", "{name}: wg show answered");
    }
    // Every member has the two others as peers, named.
    let peers = b.js(
        "return [...document.querySelectorAll('table.mesh-peers[data-network=mesh] tr[data-peer]')].map(r => r.dataset.member + '>' + r.dataset.peer);",
    );
    let mut peers: Vec<String> = peers
        .as_array()
        .expect("peers")
        .iter()
        .filter_map(|p| p.as_str().map(str::to_string))
        .collect();
    peers.sort();
    assert_eq!(
        peers,
        [
            "h1>h2", "h1>local", "h2>h1", "h2>local", "local>h1", "local>h2"
        ],
        "peers"
    );
    b.screenshot("network");
    env.run(&["-f", "mesh.yaml", "stop"]).ok();
}
