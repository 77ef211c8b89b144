//! `harness dashboard`: a one-time login link to the daemon's web dashboard (ADR 0039).
//!
//! The link carries a login code (in the URL fragment, which browsers never send to a server);
//! the page trades it for a session cookie and removes it from the address bar and history. The
//! code is asked of the daemon over the authenticated API, so the token itself never goes to the
//! browser. With a desktop (`DISPLAY`/`WAYLAND_DISPLAY`), `xdg-open` gets a 0600 file in
//! `$HARNESS_HOME` that forwards to the link, so the code is not in any process's argv.

use std::process::Stdio;

use harness_protocol::method;
use serde_json::json;

use super::{Status, connect, request_failed};
use crate::output::{Context, print_json};

/// The file `xdg-open` gets (it redirects to the link; overwritten by the next call).
const OPENER_FILE: &str = "dashboard-login.html";

pub fn run(ctx: &Context, no_open: bool) -> Status {
    smol::block_on(async {
        let client = match connect(ctx).await {
            Ok(c) => c,
            Err(s) => return s,
        };
        let daemon = match client.call::<method::DaemonStatus>(&method::Empty {}).await {
            Ok(d) => d,
            Err(e) => return request_failed("daemon.status", e),
        };
        let login = match client.request("dashboard.login", json!({})).await {
            Ok(v) => v,
            Err(e) => return request_failed("dashboard.login", e),
        };
        let (Some(path), Some(addr)) = (
            login["path"].as_str(),
            daemon
                .url
                .strip_prefix("wss://")
                .and_then(|rest| rest.split('/').next()),
        ) else {
            crate::errln!("error: unexpected answer from the daemon ({})", daemon.url);
            return Status::Failed;
        };
        let url = format!("https://{addr}{path}");
        let ca = std::path::Path::new(&daemon.home).join(harness_protocol::home::CA_CERT);
        if ctx.json() {
            print_json(&json!({
                "url": url,
                "expires_in_ms": login["expires_in_ms"],
                "ca": ca,
            }));
        } else {
            crate::outln!("{url}");
            crate::errln!(
                "one-time login link (valid for 2 minutes); the page is served with the daemon's own \
                 certificate: trust {} in the browser (see README, \"Web dashboard\")",
                ca.display()
            );
        }
        let desktop = std::env::var_os("DISPLAY").is_some_and(|d| !d.is_empty())
            || std::env::var_os("WAYLAND_DISPLAY").is_some_and(|d| !d.is_empty());
        if desktop && !no_open {
            let file = std::path::Path::new(&daemon.home).join(OPENER_FILE);
            let page = format!(
                "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=\"0;url={url}\">\
                 <title>harness dashboard</title>\n"
            );
            if let Err(e) = harness_protocol::home::write_private(&file, page.as_bytes()) {
                crate::errln!("warning: cannot write {}: {e}", file.display());
                return Status::Ok;
            }
            let opened = std::process::Command::new("xdg-open")
                .arg(&file)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            if let Err(e) = opened {
                crate::errln!("warning: could not run xdg-open: {e}; open the link above");
            }
        }
        Status::Ok
    })
}
