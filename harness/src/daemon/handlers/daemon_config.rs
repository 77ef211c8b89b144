//! `daemon.config`: the daemon's effective settings and where each came from (a flag, the
//! environment or the default; the daemon reads no configuration file of its own).

use std::sync::Arc;

use harness_protocol::admin::{DaemonConfigResult, Setting, SettingSource};
use harness_protocol::{Empty, WireError};
use harness_server::{RequestContext, ServerConfig};

use crate::daemon::{RunOptions, State, fds};

pub async fn handle(
    state: Arc<State>,
    _p: Empty,
    _ctx: RequestContext,
) -> Result<DaemonConfigResult, WireError> {
    Ok(DaemonConfigResult {
        settings: state.settings.clone(),
    })
}

fn set(name: &str, value: impl ToString, source: SettingSource, from: Option<&str>) -> Setting {
    Setting {
        name: name.to_owned(),
        value: value.to_string(),
        source,
        from: from.map(str::to_owned),
    }
}

/// An environment variable's value, if set and not empty.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// What the daemon runs with, worked out once at start.
pub fn effective(
    opts: &RunOptions,
    config: &ServerConfig,
    budget: &fds::Budget,
    home: &harness_protocol::HarnessHome,
    executor: &command_executor::Executor,
) -> Vec<Setting> {
    use SettingSource::{Default, Env, Flag};
    let mut out = Vec::new();
    // `harness` passes HARNESS_LISTEN on as --listen; the variable in our environment says which.
    let listen_env = env("HARNESS_LISTEN").and_then(|v| v.parse::<std::net::SocketAddr>().ok());
    out.push(match opts.listen {
        Some(a) if Some(a) == listen_env => set("listen", a, Env, Some("HARNESS_LISTEN")),
        Some(a) => set("listen", a, Flag, Some("--listen")),
        None => set("listen", config.listen, Default, None),
    });
    out.push(if opts.stop_services {
        set("stop_services", true, Flag, Some("--stop-services"))
    } else {
        set("stop_services", false, Default, None)
    });
    out.push(match env("HARNESS_HOME") {
        Some(_) => set("home", home.root().display(), Env, Some("HARNESS_HOME")),
        None => set("home", home.root().display(), Default, None),
    });
    out.push(match env("HARNESS_LOG") {
        Some(v) => set("log", v, Env, Some("HARNESS_LOG")),
        None => set("log", "info", Default, None),
    });
    out.push(match env("BLOCKING_MAX_THREADS") {
        Some(v) => set("blocking_threads", v, Env, Some("BLOCKING_MAX_THREADS")),
        None => set(
            "blocking_threads",
            super::super::BLOCKING_THREADS,
            Default,
            None,
        ),
    });
    out.push(set(
        "open_files_limit",
        budget.limit,
        Default,
        Some("raised to the hard limit at start"),
    ));
    out.push(set(
        "max_services",
        budget.max_services,
        Default,
        Some("from open_files_limit"),
    ));
    let ssh_dir = executor.options().runtime_dir.display().to_string();
    out.push(match env("XDG_RUNTIME_DIR") {
        Some(_) => set("ssh_runtime_dir", ssh_dir, Env, Some("XDG_RUNTIME_DIR")),
        None => set("ssh_runtime_dir", ssh_dir, Default, None),
    });
    for (name, value) in [
        ("request_timeout", format!("{:?}", config.request_timeout)),
        ("max_connections", config.max_connections.to_string()),
        ("max_message_size", config.max_message_size.to_string()),
        (
            "max_subscriptions_per_connection",
            config.max_subscriptions_per_connection.to_string(),
        ),
        (
            "max_inflight_requests",
            config.max_inflight_requests.to_string(),
        ),
        (
            "heartbeat_interval",
            format!("{:?}", config.heartbeat_interval),
        ),
        (
            "heartbeat_timeout",
            format!("{:?}", config.heartbeat_timeout),
        ),
        ("subscriber_queue", config.subscriber_queue.to_string()),
        (
            "handshake_timeout",
            format!("{:?}", config.handshake_timeout),
        ),
        (
            "max_unauthenticated",
            config.max_unauthenticated.to_string(),
        ),
        (
            "max_unauthenticated_per_peer",
            config.max_unauthenticated_per_peer.to_string(),
        ),
    ] {
        out.push(set(name, value, Default, None));
    }
    out
}
