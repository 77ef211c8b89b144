//! How services are launched, watched and stopped, per kind of place they run.
//!
//! [`Launched`] is the one handle the supervisor holds whatever the runtime. Today there is one
//! runtime, local processes; remote processes and containers (issue 6) become more variants of
//! [`Launched`] and arms of [`launch`], with the supervisor unchanged.

pub(crate) mod local;

use std::path::Path;
use std::time::Duration;

use command_executor::Signal;

use crate::addresses::Placement;
use crate::spec::Resolved;

/// What services of a kind not yet supported fail with.
pub(crate) const UNSUPPORTED: &str = "remote/docker services are not supported yet";

/// How a process ended. Both are `None` when it ended while no daemon watched (its status is
/// then unknowable) — restart policies treat that as a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitInfo {
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

/// A running service instance.
pub(crate) enum Launched {
    Local(local::LocalProcess),
}

impl Launched {
    pub fn pid(&self) -> u32 {
        match self {
            Launched::Local(p) => p.pid,
        }
    }

    pub fn start_time(&self) -> u64 {
        match self {
            Launched::Local(p) => p.start_time,
        }
    }

    /// Resolves when the process has ended; noticed at once (child exit or pidfd), never polled.
    pub async fn wait(&mut self) -> ExitInfo {
        match self {
            Launched::Local(p) => p.wait().await,
        }
    }

    /// Stops the whole service: `signal` to its process group, SIGKILL after `timeout`, then
    /// anything left in its session. Returns how it ended and whether SIGKILL was needed.
    pub async fn terminate(&mut self, signal: Signal, timeout: Duration) -> (ExitInfo, bool) {
        match self {
            Launched::Local(p) => p.terminate(signal, timeout).await,
        }
    }

    /// Kills whatever the service left behind after it ended on its own.
    pub async fn sweep(&self, earlier: Vec<(u32, u64)>) {
        match self {
            Launched::Local(p) => local::sweep(p.pid, earlier).await,
        }
    }
}

/// Starts a service with its output appended to `stdout`/`stderr` files in `dir`.
pub(crate) async fn launch(spec: &Resolved, dir: &Path) -> Result<Launched, String> {
    match spec.placement {
        Placement::Local => local::spawn(&spec.launch, dir).await.map(Launched::Local),
    }
}

/// Re-attaches to a service recorded as running: `Ok(None)` when it is gone (or the pid now
/// belongs to another process).
pub(crate) fn reattach(placement: &Placement, pid: u32, start_time: u64) -> Option<Launched> {
    match placement {
        Placement::Local => local::attach(pid, start_time).map(Launched::Local),
    }
}
