//! Typed errors. Every error says where it happened: the host the failing layer runs on and the layer itself,
//! so "sudo needs a password" on h1 is told apart from the same on h2 or from an ssh failure.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Where an error happened: the host the failing layer ran on and the layer (`ssh(hbuser@h1)`,
/// `sudo(hbsvc)`, `docker(web)`, `local`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The host the layer runs on, `localhost` for the local machine.
    pub host: String,
    /// The layer, as shown by [`crate::Layer::describe`].
    pub layer: String,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.layer, self.host)
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong running a command somewhere. Cheap to clone so a process's final outcome can
/// be handed to every waiter.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The host name does not resolve.
    #[error("{at}: unknown host {target}: {detail}")]
    UnknownHost {
        at: Place,
        target: String,
        detail: String,
    },
    /// Nothing listens on the ssh port.
    #[error("{at}: connection to {target} refused")]
    ConnectionRefused { at: Place, target: String },
    /// No route, network down, or the TCP connect timed out.
    #[error("{at}: {target} unreachable: {detail}")]
    Unreachable {
        at: Place,
        target: String,
        detail: String,
    },
    /// The server refused every key offered.
    #[error("{at}: authentication failed for {user}@{target}: {detail}")]
    AuthFailed {
        at: Place,
        target: String,
        user: String,
        detail: String,
    },
    /// The host key differs from the known one, or is unknown under a strict policy.
    #[error("{at}: host key verification failed for {target}: {detail}")]
    HostKey {
        at: Place,
        target: String,
        detail: String,
    },
    /// `sudo -n` needs a password (no NOPASSWD rule for this user).
    #[error("{at}: sudo needs a password to run as {user}")]
    SudoPassword { at: Place, user: String },
    /// sudo refused otherwise (unknown user, not in sudoers, ...).
    #[error("{at}: sudo failed: {detail}")]
    Sudo { at: Place, detail: String },
    /// The docker CLI is not installed where the layer runs.
    #[error("{at}: docker CLI not found: {detail}")]
    DockerMissing { at: Place, detail: String },
    /// The docker CLI cannot reach its engine.
    #[error("{at}: docker engine not reachable: {detail}")]
    DockerUnreachable { at: Place, detail: String },
    /// The container does not exist (or is not running, for exec).
    #[error("{at}: container {container} absent: {detail}")]
    ContainerAbsent {
        at: Place,
        container: String,
        detail: String,
    },
    /// An operation did not finish in time; whatever it started was killed.
    #[error("{at}: {operation} timed out after {after:?}")]
    Timeout {
        at: Place,
        operation: String,
        after: Duration,
    },
    /// The program does not exist at the end of the chain.
    #[error("{at}: program not found: {program}")]
    ProgramNotFound { at: Place, program: String },
    /// The working directory cannot be entered at the end of the chain.
    #[error("{at}: cannot enter working directory {dir}")]
    WorkingDir { at: Place, dir: String },
    /// A layer failed in a way not classified above; `stderr` holds what it said.
    #[error("{at}: failed (exit {code:?}): {stderr}")]
    Layer {
        at: Place,
        code: Option<i32>,
        stderr: String,
    },
    /// Spawning or talking to a local process failed.
    #[error("{at}: {context}: {source}")]
    Io {
        at: Place,
        context: String,
        source: Arc<std::io::Error>,
    },
    /// The request itself is invalid (bad env name, bad managed-process name, ...).
    #[error("invalid {what}: {detail}")]
    Invalid { what: String, detail: String },
    /// A pidfile names a process that is gone (or whose pid was reused) and no exit status was recorded.
    #[error("{at}: stale pidfile {pidfile}: {detail}")]
    Stale {
        at: Place,
        pidfile: String,
        detail: String,
    },
    /// Nothing to attach to: no pidfile, no container matching.
    #[error("{at}: nothing to attach: {detail}")]
    NotFound { at: Place, detail: String },
    /// A process attached by pid ended; how cannot be known (it is not our child).
    #[error("{at}: pid {pid} ended; its exit status is unknown (not our child)")]
    StatusUnknown { at: Place, pid: u32 },
    /// A remote start reached the host, but its answer did not come back (the connection dropped
    /// or the operation timed out after the host had begun it): the run may be alive there.
    #[error("{at}: the start's answer was lost, the run may have started: {detail}")]
    AnswerLost { at: Place, detail: String },
    /// The process is already running (a second start of the same managed process).
    #[error("{at}: already running as pid {pid}")]
    AlreadyRunning { at: Place, pid: u32 },
}

impl Error {
    pub(crate) fn io(at: Place, context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            at,
            context: context.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn invalid(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Invalid {
            what: what.into(),
            detail: detail.into(),
        }
    }

    /// Where the error happened, if it happened somewhere.
    pub fn place(&self) -> Option<&Place> {
        match self {
            Error::UnknownHost { at, .. }
            | Error::ConnectionRefused { at, .. }
            | Error::Unreachable { at, .. }
            | Error::AuthFailed { at, .. }
            | Error::HostKey { at, .. }
            | Error::SudoPassword { at, .. }
            | Error::Sudo { at, .. }
            | Error::DockerMissing { at, .. }
            | Error::DockerUnreachable { at, .. }
            | Error::ContainerAbsent { at, .. }
            | Error::Timeout { at, .. }
            | Error::ProgramNotFound { at, .. }
            | Error::WorkingDir { at, .. }
            | Error::Layer { at, .. }
            | Error::Io { at, .. }
            | Error::Stale { at, .. }
            | Error::NotFound { at, .. }
            | Error::AlreadyRunning { at, .. }
            | Error::AnswerLost { at, .. }
            | Error::StatusUnknown { at, .. } => Some(at),
            Error::Invalid { .. } => None,
        }
    }
}
