//! One file per request method. Each `handle` takes the daemon [`State`](super::State), the
//! method's params (a `harness_protocol::wire` type) and the request context, and returns its result.

pub mod daemon_config;
pub mod daemon_env;
pub mod daemon_stats;
pub mod daemon_status;
pub mod daemon_stop;
pub mod dashboard_graph;
pub mod deploy;
pub mod deploy_rollback;
pub mod drift;
pub mod exec;
pub mod exec_input;
pub mod health;
pub mod hosts_check;
pub mod logs;
pub mod logs_clear;
pub mod network_list;
pub mod ops_cancel;
pub mod ops_get;
pub mod ops_list;
pub mod ops_wait;
pub mod restart;
pub mod start;
pub mod status;
pub mod stop;
pub mod sync;
pub mod top;
pub mod watch;

use harness_protocol::wire::{ApplyResult, ServiceOutcome};

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The orchestrator's report in wire types (`start` and `restart`).
pub(crate) fn apply_result(report: orchestrator::ApplyReport) -> ApplyResult {
    ApplyResult {
        project: report.project,
        services: report
            .services
            .into_iter()
            .map(|s| ServiceOutcome {
                name: s.name,
                action: s.action,
                state: s.state,
                pid: s.pid,
                elapsed_ms: millis(s.elapsed),
                error: s.error,
                last_lines: s.last_lines,
                note: None,
            })
            .collect(),
    }
}
