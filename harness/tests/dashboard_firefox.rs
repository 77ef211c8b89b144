//! The web dashboard in headless Firefox (ADR 0039): the core of the Chromium acceptance
//! (`dashboard.rs`) again in Debian's `firefox-esr`, driven over WebDriver BiDi, which Firefox
//! serves itself (`common/bidi.rs`; no geckodriver). Login with the one-time code (a wrong and a
//! used code refused), the services table against `harness status -o json`, a service killed by
//! hand turning `exited` without a reload, start and restart from the page, a daemon kill -9 the
//! page recovers from with no gap in events, dark mode and the phone width.
//! Screenshots (1280×800) go to `target/dashboard-screenshots/firefox-*.png`.
//!
//! Without Firefox the test says so and passes, except in CI (`CI=true`), where a missing browser
//! fails it: tests/run.sh installs `firefox-esr`.

#[allow(dead_code)]
#[path = "daemon/common.rs"]
mod common;

#[path = "common/bidi.rs"]
mod bidi;
#[path = "common/dashboard.rs"]
mod fixtures;

use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bidi::{Firefox, firefox_binary};
use common::{Env, kill9, wait_until};
use fixtures::{base, login_link, screenshots_dir, start_daemon_again};
use serde_json::{Value, json};

const YAML: &str = "name: shop
services:
  db:
    command: 'echo db up; exec sleep 1000'
    health_check: {command: 'true', interval: 200ms}
  api:
    command: 'echo api up; exec sleep 1000'
    depends_on: {db: healthy}
  worker:
    command: 'echo worker up; exec sleep 1000'
    depends_on: [api]
    restart: no
";

/// The services table as the page shows it.
const TABLE: &str =
    "return [...document.querySelectorAll('#services tr[data-service]')].map(r => ({
    name: r.dataset.service,
    state: r.querySelector('[data-field=state]').textContent,
    health: r.querySelector('[data-field=health]').textContent,
    pid: r.querySelector('[data-field=pid]').textContent,
    restarts: r.querySelector('[data-field=restarts]').textContent,
}));";

/// Firefox, or why the test does not run: absent outside CI is a skip, absent in CI a failure.
fn firefox_or_skip() -> Option<std::path::PathBuf> {
    let found = firefox_binary();
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !ci,
            "CI=true but no firefox-esr or firefox on PATH (tests/run.sh installs firefox-esr)"
        );
        // Straight to stderr: the test harness does not capture it, so the skip shows.
        let _ = writeln!(
            std::io::stderr(),
            "dashboard_firefox: SKIPPED: no firefox-esr or firefox on PATH (Debian: apt-get \
             install firefox-esr; tests/run.sh installs it)"
        );
    }
    found
}

#[test]
fn the_dashboard_in_headless_firefox() {
    let Some(firefox) = firefox_or_skip() else {
        return;
    };
    // Firefox starts (seconds: it answers `session.new` after its idle start-up tasks) while
    // the services do. Its pages see `prefers-color-scheme: dark` (the Chromium test covers
    // light), so every Firefox screenshot shows the dark theme.
    let opened = Instant::now();
    let browser = std::thread::spawn(move || {
        let dark = [("layout.css.prefers-color-scheme.content-override", "0")];
        let b = Firefox::open(&firefox, 1280, 800, &dark);
        println!("Firefox ready in {:?}", opened.elapsed());
        b
    });
    let env = Env::new(YAML);
    env.run(&["start"]).ok();
    let base = base(&env);
    let shots = screenshots_dir();
    let mut b = browser
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));

    // A wrong code is refused and leaves no code in the address bar; the right one logs in
    // (the cookie is set and the WebSocket opens); the same code again is refused.
    b.go(&format!(
        "{base}/login#code=0123456789abcdef0123456789abcdef"
    ));
    b.wait_js(
        "the refusal of a wrong code",
        Duration::from_secs(10),
        "return document.getElementById('login-message').textContent.includes('wrong');",
    );
    assert_eq!(
        b.js("return location.href;"),
        json!(format!("{base}/login"))
    );
    let link = login_link(&env);
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
    assert_eq!(
        b.js("return document.cookie;"),
        json!(""),
        "the session cookie is HttpOnly"
    );
    b.wait_js(
        "the projects table",
        Duration::from_secs(5),
        "return document.querySelector('#projects tr[data-project=shop]') !== null;",
    );
    assert_eq!(
        b.js("return getComputedStyle(document.body).backgroundColor;"),
        json!("rgb(11, 18, 32)"),
        "the dark background"
    );
    b.screenshot(&shots, "firefox-projects");
    b.go(&link);
    b.wait_js(
        "the refusal of a used code",
        Duration::from_secs(10),
        "return document.getElementById('login-message').textContent.includes('used');",
    );

    // The services table matches `harness status -o json`.
    b.go(&format!("{base}/#/p/shop"));
    b.wait_js(
        "three running rows",
        Duration::from_secs(10),
        "return [...document.querySelectorAll('#services tr[data-service] [data-field=state]')].filter(c => c.textContent === 'running').length === 3;",
    );
    let rows = b.js(TABLE);
    let status = env.status();
    assert_eq!(rows.as_array().map(Vec::len), Some(status.len()), "{rows}");
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
        let pid = s["runtime"]["pid"]
            .as_u64()
            .map(|p| p.to_string())
            .unwrap_or_default();
        assert_eq!(row["pid"], json!(pid), "{name}");
        let restarts = s["restart_count"].as_u64().unwrap_or(0).to_string();
        assert_eq!(row["restarts"], json!(restarts), "{name}");
    }
    b.screenshot(&shots, "firefox-services");

    // Killing a service by hand: its row says `exited` within 1 s, without a reload. The page
    // notes the moment itself (a MutationObserver, wall clock), so the time is the page's, not
    // that of polling it over BiDi.
    let worker = env.service("worker")["runtime"]["pid"]
        .as_u64()
        .expect("worker pid") as u32;
    b.js("window.__marker = 1; window.__exitedAt = null;
        const state = () => document.querySelector('#services tr[data-service=worker] [data-field=state]');
        new MutationObserver(() => {
            const s = state();
            if (window.__exitedAt === null && s && s.textContent.startsWith('exited')) window.__exitedAt = Date.now();
        }).observe(document.body, {subtree: true, childList: true, characterData: true});
        return true;");
    let killed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as f64;
    kill9(worker);
    let exited = b.wait_js(
        "worker's row saying exited",
        Duration::from_secs(10),
        "return window.__exitedAt;",
    );
    let after_ms = exited.as_f64().expect("a time") - killed;
    println!("row exited {after_ms} ms after the kill");
    assert!(
        after_ms < 1000.0,
        "the row said exited only {after_ms} ms after the kill"
    );
    assert_eq!(
        b.js("return window.__marker;"),
        json!(1),
        "the page reloaded"
    );

    // Start it again from the page (confirmed in the <dialog>), then restart it.
    b.click("#services tr[data-service=worker] button[data-action=start]");
    assert_eq!(
        b.js("return document.getElementById('confirm').open;"),
        json!(true),
        "the confirmation dialog"
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
    assert!(
        wait_until(Duration::from_secs(10), || {
            let s = env.service("worker");
            s["state"]["kind"] == "running" && s["runtime"]["pid"].as_u64() != before
        }),
        "the restart from the page gave no new process"
    );
    let after = env.service("worker")["runtime"]["pid"].as_u64();
    b.wait_js(
        "the new pid on the page",
        Duration::from_secs(5),
        &format!(
            "const r = document.querySelector('#services tr[data-service=worker] [data-field=pid]'); return r && r.textContent === '{}';",
            after.unwrap_or(0)
        ),
    );
    // The restart is an operation, listed first on the operations page.
    let ops = env.run(&["ops", "-o", "json"]).ok().json();
    let restart_op = ops["operations"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .filter(|o| o["kind"] == "restart")
                .filter_map(|o| o["id"].as_u64())
                .max()
        })
        .unwrap_or_else(|| panic!("no restart in `harness ops`: {ops}"));
    b.go(&format!("{base}/#/ops"));
    b.wait_js(
        "the restart in the operations list",
        Duration::from_secs(10),
        &format!(
            "const r = document.querySelector('#ops tbody tr'); return r !== null && r.dataset.op === '{restart_op}' && r.dataset.outcome === 'succeeded';"
        ),
    );
    b.screenshot(&shots, "firefox-operations");

    let errors = b.take_page_errors();
    assert!(errors.is_empty(), "the page reported errors: {errors:#?}");

    // The daemon killed -9 and started again: the page reconnects on its own (the same cookie,
    // a new WebSocket) and has every event since, with no gap in seq.
    b.go(&format!("{base}/#/events"));
    let first = b
        .wait_js(
            "events",
            Duration::from_secs(10),
            "const s = [...document.querySelectorAll('#events tr[data-seq]')].map(r => Number(r.dataset.seq)); return s.length > 0 && Math.max(...s);",
        )
        .as_u64()
        .expect("a seq");
    b.js("window.__marker = 2; return true;");
    kill9(env.daemon_pid().expect("daemon pid"));
    b.wait_js(
        "the page noticing",
        Duration::from_secs(10),
        "return document.getElementById('connection').dataset.state === 'down';",
    );
    start_daemon_again(&env);
    env.run(&["restart", "api"]).ok();
    let last = env
        .events()
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .max()
        .expect("events");
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
    let seqs = b.js(&format!(
        "return [...document.querySelectorAll('#events tr[data-seq]')].map(r => Number(r.dataset.seq)).filter(s => s >= {first}).sort((a, b) => a - b);"
    ));
    let expected: Vec<u64> = (first..=last).collect();
    assert_eq!(
        seqs,
        json!(expected),
        "events on the page after the restart"
    );
    b.screenshot(&shots, "firefox-events");

    // Phone width: the services view has no page-level horizontal overflow.
    b.go(&format!("{base}/#/p/shop"));
    b.wait_js(
        "api running again",
        Duration::from_secs(10),
        "const r = document.querySelector('#services tr[data-service=api] [data-field=state]'); return r && r.textContent === 'running';",
    );
    b.viewport(390, 800);
    let fits = b.wait_js(
        "the phone layout",
        Duration::from_secs(5),
        "return window.innerWidth === 390 && document.documentElement.scrollWidth <= window.innerWidth + 1;",
    );
    assert_eq!(fits, Value::Bool(true));
    b.screenshot(&shots, "firefox-services-phone");

    // Firefox logs each refused reconnect while the daemon was down; nothing else.
    let errors: Vec<String> = b
        .take_page_errors()
        .into_iter()
        .filter(|e| !e.contains("establish a connection to the server at wss://"))
        .collect();
    assert!(errors.is_empty(), "the page reported errors: {errors:#?}");
}
