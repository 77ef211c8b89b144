//! Services: long-running processes the orchestrator launches, follows, stops and re-attaches
//! to, with an identity that survives a crash of the daemon at any instant.
//!
//! - [`local`]: a process on this machine, in its own session (and cgroup where usable).
//! - [`procfs`]: the one reader of `/proc` (start times, process table, launch ids).
//! - [`remote`]: a process on an SSH host, followed with all others there in one session.
//! - [`container`]: a docker container on a local or remote engine, its logs followed.
//! - [`cgroup`]: one cgroup v2 per local service, killed whole on stop.
//! - [`survey`]: what exists (launch runs per host, labelled containers per engine) and the
//!   kills `sync` makes, each re-verifying its target's identity (ADR 0036).
//!
//! Every launch carries its launch id in the environment variable [`LAUNCH_ID_VAR`], so a daemon
//! that died anywhere between recording its intent and recording the pid still finds the process.

pub mod cgroup;
pub mod container;
pub mod local;
pub mod procfs;
pub mod remote;
mod spawn;
pub mod survey;

pub use spawn::NO_PIDFD_VAR;

use crate::signal::Signal;

/// The environment variable every service process carries: its launch id.
pub const LAUNCH_ID_VAR: &str = "HARNESS_LAUNCH_ID";

/// What a service runs: the program, its arguments, environment and working directory, and for a
/// local service the user it runs as (through `sudo -n`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceCommand {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub user: Option<String>,
}

/// How a service process ended. Both are `None` when it ended while no daemon watched (its
/// status is then unknowable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitInfo {
    pub const UNKNOWN: ExitInfo = ExitInfo {
        code: None,
        signal: None,
    };

    /// From a shell's `$?`: above 128 (and below 192) is death by signal `rc - 128`.
    pub fn from_shell(rc: i32) -> ExitInfo {
        if rc > 128 && rc < 192 {
            ExitInfo {
                code: None,
                signal: Some(rc - 128),
            }
        } else {
            ExitInfo {
                code: Some(rc),
                signal: None,
            }
        }
    }

    pub fn success(self) -> bool {
        self.code == Some(0)
    }

    pub fn describe(self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => match Signal::from_number(s) {
                Some(sig) => format!("killed by {sig}"),
                None => format!("killed by signal {s}"),
            },
            (None, None) => "ended while the daemon was down (status unknown)".into(),
        }
    }
}

/// How a stopped service ended, once its last output and exit have come in; unknown when they
/// do not come within 5 s (the host or engine stopped answering).
pub(crate) async fn exit_after_stop(wait: impl std::future::Future<Output = ExitInfo>) -> ExitInfo {
    use futures_lite::FutureExt;
    async { Some(wait.await) }
        .or(async {
            async_io::Timer::after(std::time::Duration::from_secs(5)).await;
            None
        })
        .await
        .unwrap_or(ExitInfo::UNKNOWN)
}
