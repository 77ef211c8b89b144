//! Fixtures of the dashboard's browser tests (`dashboard.rs` in Chromium, `dashboard_firefox.rs`),
//! included by path beside `daemon/common.rs`, whose `Env` they take.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::Env;

/// `https://ADDR` of the test's daemon, where it serves the dashboard.
pub fn base(env: &Env) -> String {
    let info: Value = serde_json::from_str(
        &std::fs::read_to_string(env.home().join("daemon.json")).expect("daemon.json"),
    )
    .expect("daemon.json is JSON");
    let url = info["url"].as_str().expect("url");
    let addr = url
        .strip_prefix("wss://")
        .and_then(|r| r.split('/').next())
        .expect("wss://ADDR/v1/ws");
    format!("https://{addr}")
}

/// Starts the daemon again on the port it had, so an open page can reconnect: without `Env`'s
/// `HARNESS_LISTEN=127.0.0.1:0` the daemon takes its last port again.
pub fn start_daemon_again(env: &Env) {
    let mut start = env.cmd(&["daemon", "start"]);
    start.env_remove("HARNESS_LISTEN");
    let out = start.output().expect("daemon start");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh one-time login link, `https://ADDR/login#code=…`, from `harness dashboard`.
pub fn login_link(env: &Env) -> String {
    let v = env
        .run(&["dashboard", "--no-open", "-o", "json"])
        .ok()
        .json();
    v["url"].as_str().expect("url").to_string()
}

/// Where the browser tests save their screenshots: `target/dashboard-screenshots/`.
pub fn screenshots_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("dashboard-screenshots")
}
