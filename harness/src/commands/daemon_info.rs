//! `harness daemon stats|config|env`: the daemon's own figures, its effective settings with where
//! each came from, and its environment (secret-looking values masked). Never starts a daemon.

use std::time::Duration;

use comfy_table::Table;
use harness_protocol::{Client, Empty, HarnessHome, method};

use super::{Status, request_failed};
use crate::commands::top::bytes;
use crate::output::{Context, print_json, short_duration};

/// What to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    Stats,
    Config,
    Env,
}

pub fn run(ctx: &Context, home: &HarnessHome, what: What) -> Status {
    smol::block_on(async {
        let client = match super::daemon::existing_or_busy(ctx, home).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                crate::errln!("error: no daemon running for {}", home.root().display());
                return Status::Failed;
            }
            Err(e) => {
                crate::errln!("error: a daemon is running but {e:#}");
                return Status::Failed;
            }
        };
        match what {
            What::Stats => stats(ctx, &client).await,
            What::Config => config(ctx, &client).await,
            What::Env => env(ctx, &client).await,
        }
    })
}

fn table(ctx: &Context, header: &[&str]) -> Table {
    let mut t = crate::output::table(ctx.color_out);
    t.set_header(header.to_vec());
    t
}

async fn stats(ctx: &Context, client: &Client) -> Status {
    let s = match client.call::<method::DaemonStats>(&Empty {}).await {
        Ok(s) => s,
        Err(e) => return request_failed("daemon.stats", e),
    };
    if ctx.json() {
        print_json(&s);
        return Status::Ok;
    }
    crate::outln!(
        "uptime:        {}",
        short_duration(Duration::from_millis(s.uptime_ms))
    );
    crate::outln!(
        "requests:      {} ({}/s)",
        s.requests_total,
        s.requests_per_sec
    );
    crate::outln!(
        "events:        {} ({}/s), {} retained",
        s.events_total,
        s.events_per_sec,
        s.events_retained
    );
    crate::outln!("subscriptions: {}", s.subscriptions);
    crate::outln!(
        "connections:   {} of {}",
        s.connections,
        s.connections_limit
    );
    crate::outln!(
        "open files:    {} of {} (room for {} services; {} now)",
        s.fds_used,
        s.fds_limit,
        s.service_capacity,
        s.services
    );
    crate::outln!("memory (RSS):  {}", bytes(s.rss_bytes));
    crate::outln!("store:         {}", bytes(s.store_bytes));
    crate::outln!("logs on disk:  {}", bytes(s.log_bytes));
    if s.ssh.is_empty() {
        crate::outln!("ssh:           no connections");
    } else {
        let mut t = table(ctx, &["ssh host", "masters", "sessions"]);
        for h in &s.ssh {
            t.add_row([
                h.host.clone(),
                h.masters.to_string(),
                h.sessions.to_string(),
            ]);
        }
        crate::outln!("{t}");
    }
    Status::Ok
}

async fn config(ctx: &Context, client: &Client) -> Status {
    let c = match client.call::<method::DaemonConfig>(&Empty {}).await {
        Ok(c) => c,
        Err(e) => return request_failed("daemon.config", e),
    };
    if ctx.json() {
        print_json(&c.settings);
        return Status::Ok;
    }
    let mut t = table(ctx, &["setting", "value", "source", "from"]);
    for s in &c.settings {
        let source = serde_json::to_value(s.source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        t.add_row([
            s.name.clone(),
            s.value.clone(),
            source,
            s.from.clone().unwrap_or_default(),
        ]);
    }
    crate::outln!("{t}");
    Status::Ok
}

async fn env(ctx: &Context, client: &Client) -> Status {
    let e = match client.call::<method::DaemonEnv>(&Empty {}).await {
        Ok(e) => e,
        Err(e) => return request_failed("daemon.env", e),
    };
    if ctx.json() {
        print_json(&e.env);
        return Status::Ok;
    }
    for (k, v) in &e.env {
        crate::outln!("{k}={v}");
    }
    Status::Ok
}
