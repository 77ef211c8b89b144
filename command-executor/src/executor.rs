//! The executor: owns the ssh connections and the defaults, and launches or attaches anything anywhere.

use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::command::Command;
use crate::docker::{ContainerSelector, DockerRun};
use crate::error::{Error, Result};
use crate::event::DEFAULT_QUEUE_BYTES;
use crate::layer::{DockerCli, Target};
use crate::managed::{Follow, ManagedSpec};
use crate::process::{self, Output, Process};
use crate::ssh::SshPool;

/// A boxed, sendable future, for the [`Launcher`] and [`Attacher`] traits.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Starts something on a target and yields its handle: a [`Command`] (one-off), a [`ManagedSpec`] (a
/// service that outlives the client) or a [`DockerRun`] (a container).
pub trait Launcher {
    fn launch<'a>(
        &'a self,
        exec: &'a Executor,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<Process>>;
}

/// Connects to something already running: a managed process by its state directory
/// ([`crate::ManagedRef`]), a container by name, id or label ([`ContainerSelector`]), a local pid
/// ([`LocalPid`]; the target is ignored).
pub trait Attacher {
    fn attach<'a>(
        &'a self,
        exec: &'a Executor,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<Process>>;
}

impl Launcher for Command {
    fn launch<'a>(
        &'a self,
        exec: &'a Executor,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<Process>> {
        Box::pin(exec.spawn(target, self))
    }
}

impl Launcher for ManagedSpec {
    fn launch<'a>(
        &'a self,
        exec: &'a Executor,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<Process>> {
        Box::pin(exec.start_managed(target, self))
    }
}

impl Launcher for DockerRun {
    fn launch<'a>(
        &'a self,
        exec: &'a Executor,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<Process>> {
        Box::pin(exec.docker_run(target, self))
    }
}

impl Attacher for crate::managed::ManagedRef {
    fn attach<'a>(
        &'a self,
        exec: &'a Executor,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<Process>> {
        Box::pin(exec.attach_managed(target, &self.dir, self.follow))
    }
}

impl Attacher for (DockerCli, ContainerSelector) {
    fn attach<'a>(
        &'a self,
        exec: &'a Executor,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<Process>> {
        Box::pin(exec.attach_container(target, &self.0, &self.1))
    }
}

/// A local process to attach to by pid, with the start time recorded when it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalPid {
    pub pid: u32,
    pub start_time: Option<u64>,
}

impl Attacher for LocalPid {
    fn attach<'a>(
        &'a self,
        exec: &'a Executor,
        _target: &'a Target,
    ) -> BoxFuture<'a, Result<Process>> {
        Box::pin(exec.attach_local_pid(self.pid, self.start_time))
    }
}

/// Defaults for every operation.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// Where ssh config files and control sockets live (0700). Fixed per user by default so a restarted
    /// client finds the masters it left running. One executor at a time uses it (an exclusive lock on
    /// `owner.lock`, taken at the first ssh use); another, in this process or another, gets a private
    /// subdirectory `p<pid>.<n>` with masters of its own, so no master is ever shared between executors.
    pub runtime_dir: PathBuf,
    /// Limit for a command to start at the end of its chain (ssh connected, sudo and docker passed).
    pub start_timeout: Duration,
    /// Limit for each internal remote operation (signal, status, docker run/stop/inspect).
    pub op_timeout: Duration,
    /// Bound on the event bytes queued for a listener that falls behind.
    pub queue_bytes: usize,
    /// How long an idle ssh master connection stays up (`ControlPersist`).
    pub master_idle: Duration,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        let uid = rustix::process::getuid().as_raw();
        let runtime_dir = match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(d) if !d.is_empty() => PathBuf::from(d).join("harness-ssh"),
            _ => PathBuf::from(format!("/tmp/harness-ssh-{uid}")),
        };
        ExecutorOptions {
            runtime_dir,
            start_timeout: Duration::from_secs(30),
            op_timeout: Duration::from_secs(30),
            queue_bytes: DEFAULT_QUEUE_BYTES,
            master_idle: Duration::from_secs(300),
        }
    }
}

struct Inner {
    options: ExecutorOptions,
    ssh: SshPool,
}

/// Launches and attaches processes, containers and managed processes on any [`Target`]. Cheap to clone;
/// clones share ssh connections.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

impl Default for Executor {
    fn default() -> Self {
        Executor::new(ExecutorOptions::default())
    }
}

impl Executor {
    pub fn new(options: ExecutorOptions) -> Self {
        let ssh = SshPool::new(options.runtime_dir.clone(), options.master_idle);
        Executor {
            inner: Arc::new(Inner { options, ssh }),
        }
    }

    pub fn options(&self) -> &ExecutorOptions {
        &self.inner.options
    }

    pub(crate) fn ssh(&self) -> &SshPool {
        &self.inner.ssh
    }

    /// Per ssh host this executor has used: master connections up and sessions running now.
    pub fn ssh_stats(&self) -> Vec<crate::ssh::SshStats> {
        self.inner.ssh.stats()
    }

    /// Starts a one-off command. Returns once the program runs at the end of the chain, or with the typed
    /// error of the layer that failed.
    pub async fn spawn(&self, target: &Target, cmd: &Command) -> Result<Process> {
        process::spawn(self, target, cmd, false).await
    }

    /// Runs a command to the end and returns its exact output.
    pub async fn output(&self, target: &Target, cmd: &Command) -> Result<Output> {
        process::collect(self.spawn(target, cmd).await?).await
    }

    /// Starts a managed process (see [`ManagedSpec`]).
    pub async fn start_managed(&self, target: &Target, spec: &ManagedSpec) -> Result<Process> {
        crate::managed::start(self, target, spec).await
    }

    /// Attaches to a managed process by its state directory on the target. A process that ended while no one
    /// watched yields its recorded exit status; a pidfile naming a dead or reused pid without a recorded
    /// status is [`Error::Stale`].
    pub async fn attach_managed(
        &self,
        target: &Target,
        dir: &str,
        follow: Follow,
    ) -> Result<Process> {
        crate::managed::attach(self, target, dir, follow).await
    }

    /// Runs a container (`docker run -d`) and follows it.
    pub async fn docker_run(&self, target: &Target, run: &DockerRun) -> Result<Process> {
        crate::docker::run(self, target, run).await
    }

    /// Attaches to an existing container by name, id or label.
    pub async fn attach_container(
        &self,
        target: &Target,
        cli: &DockerCli,
        which: &ContainerSelector,
    ) -> Result<Process> {
        crate::docker::attach(self, target, cli, which).await
    }

    /// Attaches to a local process by pid (and the start time recorded with it, which guards against a
    /// reused pid). Signals reach its process group when it leads one; its end is reported as [`Error::StatusUnknown`].
    pub async fn attach_local_pid(&self, pid: u32, start_time: Option<u64>) -> Result<Process> {
        process::attach_pid(self, pid, start_time).await
    }

    /// Closes the ssh master connections this executor used: all in its own runtime dir, never another
    /// executor's. Sessions still running on them end; remote processes they started are not touched.
    pub async fn shutdown(&self) {
        self.inner.ssh.shutdown().await;
    }

    /// Runs an internal operation to the end within `limit`.
    pub(crate) async fn run_op(
        &self,
        target: &Target,
        argv: Vec<OsString>,
        limit: Duration,
        what: &str,
    ) -> Result<Output> {
        let mut it = argv.into_iter();
        let program = it
            .next()
            .ok_or_else(|| Error::invalid("operation", "empty argv"))?;
        let mut cmd = Command::new(program).args(it).timeout(limit);
        cmd.control = true;
        let result = async { process::collect(self.spawn(target, &cmd).await?).await };
        result.await.map_err(|e| match e {
            Error::Timeout { at, after, .. } => Error::Timeout {
                at,
                operation: what.to_string(),
                after,
            },
            other => other,
        })
    }
}
