//! `daemon.stats`: the daemon's own figures — uptime, request and event rates, subscribers,
//! connections, fds against their limit (and so the service capacity), memory, the store, the
//! retained events, log bytes on disk, ssh connections per host. `/metrics` serves the same
//! figures for Prometheus ([`prometheus`]).

use std::path::Path;
use std::sync::Arc;

use harness_protocol::admin::{DaemonStatsResult, SshHostStats};
use harness_protocol::{Empty, WireError};
use harness_server::RequestContext;

use crate::daemon::{State, wire_error};

pub async fn handle(
    state: Arc<State>,
    _p: Empty,
    _ctx: RequestContext,
) -> Result<DaemonStatsResult, WireError> {
    collect(&state).await
}

pub async fn collect(state: &Arc<State>) -> Result<DaemonStatsResult, WireError> {
    let uptime = state.started.elapsed();
    let secs = uptime.as_secs_f64().max(1e-3);
    let server = state
        .server
        .lock()
        .ok()
        .and_then(|s| s.as_ref().map(harness_server::ServerHandle::stats))
        .unwrap_or_default();
    let store = &state.store;
    let last_seq = store.last_seq();
    let pruned = store.pruned_through().await.map_err(WireError::internal)?;
    let services = state.orch.status(None).await.map_err(wire_error)?.len() as u64;
    let root = state.home.root().to_path_buf();
    let db = state.home.path(harness_protocol::home::REGISTRY_DB);
    let executor = state.executor.clone();
    let (fds_used, rss, store_bytes, log_bytes, ssh) = blocking::unblock(move || {
        let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        let (_, page) = command_executor::service::procfs::units();
        let rss = command_executor::service::procfs::usage(std::process::id())
            .map_or(0, |u| u.rss_pages * page);
        let store_bytes = std::fs::metadata(&db).map_or(0, |m| m.len());
        (
            fds,
            rss,
            store_bytes,
            log_bytes(&root),
            executor.ssh_stats(),
        )
    })
    .await;
    let events = last_seq.saturating_sub(state.seq_at_start);
    Ok(DaemonStatsResult {
        uptime_ms: u64::try_from(uptime.as_millis()).unwrap_or(u64::MAX),
        requests_total: server.requests,
        requests_per_sec: round2(server.requests as f64 / secs),
        events_total: events,
        events_per_sec: round2(events as f64 / secs),
        subscriptions: server.subscriptions,
        connections: server.connections,
        connections_limit: server.max_connections,
        fds_used,
        fds_limit: state.fds.limit,
        service_capacity: state.fds.max_services as u64,
        rss_bytes: rss,
        store_bytes,
        events_retained: last_seq.saturating_sub(pruned),
        log_bytes,
        services,
        ssh: ssh
            .into_iter()
            .map(|s| SshHostStats {
                host: s.host,
                masters: s.masters as u64,
                sessions: s.sessions as u64,
            })
            .collect(),
    })
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Bytes of the services' log files (`*.log`, `*.log.N`) and the daemon's log under the state
/// directory.
fn log_bytes(root: &Path) -> u64 {
    let mut total = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                dirs.push(e.path());
            } else if kind.is_file() && e.file_name().to_string_lossy().contains(".log") {
                total += e.metadata().map_or(0, |m| m.len());
            }
        }
    }
    total
}

/// The figures in the Prometheus text format (`/metrics` appends these to the server's own).
pub fn prometheus(s: &DaemonStatsResult) -> String {
    let rows: [(&str, &str, &str, f64); 13] = [
        (
            "harness_daemon_uptime_seconds",
            "gauge",
            "Seconds since the daemon started.",
            s.uptime_ms as f64 / 1000.0,
        ),
        (
            "harness_daemon_events_total",
            "counter",
            "Events committed since the daemon started.",
            s.events_total as f64,
        ),
        (
            "harness_daemon_connections_limit",
            "gauge",
            "Most WebSocket connections allowed.",
            s.connections_limit as f64,
        ),
        (
            "harness_daemon_fds",
            "gauge",
            "Open file descriptors of the daemon.",
            s.fds_used as f64,
        ),
        (
            "harness_daemon_fds_limit",
            "gauge",
            "The daemon's open-file limit.",
            s.fds_limit as f64,
        ),
        (
            "harness_daemon_service_capacity",
            "gauge",
            "Services the open-file limit allows.",
            s.service_capacity as f64,
        ),
        (
            "harness_daemon_rss_bytes",
            "gauge",
            "Resident memory of the daemon.",
            s.rss_bytes as f64,
        ),
        (
            "harness_daemon_store_bytes",
            "gauge",
            "Size of the registry store file.",
            s.store_bytes as f64,
        ),
        (
            "harness_daemon_events_retained",
            "gauge",
            "Events kept in the store.",
            s.events_retained as f64,
        ),
        (
            "harness_daemon_log_bytes",
            "gauge",
            "Bytes of log files in the state directory.",
            s.log_bytes as f64,
        ),
        (
            "harness_daemon_services",
            "gauge",
            "Services in the registry.",
            s.services as f64,
        ),
        (
            "harness_daemon_requests_per_second",
            "gauge",
            "Requests per second over the daemon's life.",
            s.requests_per_sec,
        ),
        (
            "harness_daemon_events_per_second",
            "gauge",
            "Events per second over the daemon's life.",
            s.events_per_sec,
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in rows {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    out.push_str("# HELP harness_daemon_ssh_masters SSH master connections up, per host.\n# TYPE harness_daemon_ssh_masters gauge\n");
    for h in &s.ssh {
        out.push_str(&format!(
            "harness_daemon_ssh_masters{{host=\"{}\"}} {}\n",
            label(&h.host),
            h.masters
        ));
    }
    out.push_str("# HELP harness_daemon_ssh_sessions SSH sessions running, per host.\n# TYPE harness_daemon_ssh_sessions gauge\n");
    for h in &s.ssh {
        out.push_str(&format!(
            "harness_daemon_ssh_sessions{{host=\"{}\"}} {}\n",
            label(&h.host),
            h.sessions
        ));
    }
    out
}

/// A Prometheus label value: `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
