//! What can go wrong at the orchestrator's surface. Per-service failures during `apply` are not
//! errors: they are reported per service in [`crate::ApplyReport`] so the rest can proceed.

use std::path::PathBuf;

/// An orchestrator operation was refused or could not complete.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("registry: {0}")]
    Registry(#[from] harness_store::StoreError),
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("project {project:?} is not known to this daemon (start it first)")]
    UnknownProject { project: String },
    #[error("project {project:?} has no service {service:?}")]
    UnknownService { project: String, service: String },
    #[error("{0}")]
    Cycle(#[from] harness_config::CycleError),
    #[error(
        "cannot stop {service}: running services depend on it ({}); stop them first or use --force",
        .dependents.join(", ")
    )]
    HasDependents {
        service: String,
        dependents: Vec<String>,
    },
    #[error("the saved definition of project {project:?} cannot be loaded: {message}")]
    SavedProject { project: String, message: String },
    #[error("service {service}: {message}")]
    Service { service: String, message: String },
    #[error("exec in {service}: {source}")]
    Exec {
        service: String,
        #[source]
        source: Box<command_executor::Error>,
    },
    /// `drift`/`sync` refused or could not complete an action (ADR 0036).
    #[error("{message}")]
    Drift { message: String },
    #[error("the orchestrator is shut down")]
    ShutDown,
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> Self {
        Error::Io {
            path: path.into(),
            message: e.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
