//! How services are launched, watched and stopped, per kind of place they run.
//!
//! [`Launched`] is the one handle the supervisor holds whatever the runtime: a local process
//! ([`local`]), a process on an SSH host ([`host`]) or a container ([`container`]).

pub(crate) mod container;
pub(crate) mod host;
pub(crate) mod local;

use std::path::Path;
use std::time::Duration;

use command_executor::{Executor, Signal, Target};

use crate::addresses::Placement;
use crate::spec::Resolved;

/// `(project, service)` of a local service directory (`.../projects/P/services/S`), which names the
/// service's remote run directory and its container.
pub(crate) fn project_and_service(dir: &Path) -> (&str, &str) {
    fn name(p: Option<&Path>) -> Option<&str> {
        p.and_then(Path::file_name).and_then(|n| n.to_str())
    }
    let service = name(Some(dir)).unwrap_or("service");
    let project = name(dir.parent().and_then(Path::parent)).unwrap_or("project");
    (project, service)
}

/// What a service without a place of its own fails with: a `type: package` service that was not
/// prepared (`deploy::prepare` turns it into the remote process it runs as).
pub(crate) const UNSUPPORTED: &str =
    "a type: package service runs only once prepared (installed on its host) by start";

/// How a process ended. Both are `None` when it ended while no daemon watched (its status is
/// then unknowable) — restart policies treat that as a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitInfo {
    const UNKNOWN: ExitInfo = ExitInfo {
        code: None,
        signal: None,
    };

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
            async_io::Timer::after(Duration::from_secs(5)).await;
            None
        })
        .await
        .unwrap_or(ExitInfo::UNKNOWN)
}

/// A running service instance.
pub(crate) enum Launched {
    Local(local::LocalProcess),
    Host(host::RemoteProcess),
    Container(container::Container),
}

impl Launched {
    pub fn pid(&self) -> u32 {
        match self {
            Launched::Local(p) => p.pid,
            Launched::Host(p) => p.pid,
            Launched::Container(c) => c.pid,
        }
    }

    pub fn start_time(&self) -> u64 {
        match self {
            Launched::Local(p) => p.start_time,
            Launched::Host(p) => p.start_time,
            Launched::Container(_) => 0,
        }
    }

    /// Resolves when the process has ended; noticed at once (child exit or pidfd), never polled.
    pub async fn wait(&mut self) -> ExitInfo {
        match self {
            Launched::Local(p) => p.wait().await,
            Launched::Host(p) => p.wait().await,
            Launched::Container(c) => c.wait().await,
        }
    }

    /// Stops the whole service: `signal` to its process group, SIGKILL after `timeout`, then
    /// anything left in its session. Returns how it ended and whether SIGKILL was needed.
    pub async fn terminate(&mut self, signal: Signal, timeout: Duration) -> (ExitInfo, bool) {
        match self {
            Launched::Local(p) => p.terminate(signal, timeout).await,
            Launched::Host(p) => p.terminate(signal, timeout).await,
            Launched::Container(c) => c.terminate(signal, timeout).await,
        }
    }

    /// Kills whatever the service left behind after it ended on its own.
    pub async fn sweep(&self, earlier: Vec<(u32, u64)>) {
        match self {
            Launched::Local(p) => local::sweep(p.pid, earlier, p.user.clone()).await,
            Launched::Host(p) => p.clean().await,
            Launched::Container(c) => c.remove().await,
        }
    }
}

/// Starts a service with its output appended to `stdout`/`stderr` files in `dir`.
pub(crate) async fn launch(
    spec: &Resolved,
    dir: &Path,
    exec: &Executor,
) -> Result<Launched, String> {
    match (&spec.placement, &spec.container) {
        (_, Some(c)) => container::spawn(exec, c, &spec.launch, spec.stop.signal, dir)
            .await
            .map(Launched::Container),
        (Placement::Host { user, .. }, None) => match &spec.host {
            Some(h) => host::spawn(exec, &h.target(user.as_deref()), &spec.launch, dir)
                .await
                .map(Launched::Host),
            None => Err("no host resolved".into()),
        },
        _ => local::spawn(&spec.launch, dir).await.map(Launched::Local),
    }
}

/// Re-attaches to a service recorded as running: `None` when it is gone (or the pid now
/// belongs to another process). Remote processes are found by their run record in `dir` and
/// pidfile on the host, containers by their labels.
pub(crate) async fn reattach(
    spec: &Resolved,
    dir: &Path,
    exec: &Executor,
    pid: u32,
    start_time: u64,
) -> Option<Launched> {
    match (&spec.placement, &spec.container, &spec.host) {
        (_, Some(c), _) => container::attach(exec, c, dir)
            .await
            .map(Launched::Container),
        (Placement::Host { user, .. }, None, Some(h)) => {
            host::attach(exec, &h.target(user.as_deref()), dir, pid, start_time)
                .await
                .map(Launched::Host)
        }
        _ => local::attach(pid, start_time, spec.launch.user.clone()).map(Launched::Local),
    }
}

/// Where a service's command health checks (and `exec`) run: on its host, as its user, or
/// inside its container (`container_name`).
pub(crate) fn probe_target(
    placement: &Placement,
    host: Option<&host::HostSpec>,
    container: Option<&container::ContainerSpec>,
    container_name: &str,
) -> Target {
    match (placement, container, host) {
        (_, Some(c), _) => c.exec_target(container_name),
        (Placement::Host { user, .. }, None, Some(h)) => h.target(user.as_deref()),
        _ => Target::local(),
    }
}
