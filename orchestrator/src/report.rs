//! Requests and reports of the orchestrator's operations. All are serde types so the daemon can
//! send them to the CLI as they are (`-o json`).

use std::time::Duration;

use harness_protocol::{Health, ServiceState};
use serde::{Deserialize, Serialize};

/// What `apply` should do beyond starting what is missing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ApplyOptions {
    /// Only these services (and what they depend on); empty means all.
    #[serde(default)]
    pub services: Vec<String>,
    /// Stop and forget services that were applied before but are no longer in the project.
    #[serde(default)]
    pub remove_orphans: bool,
    /// The folder of services.yaml: relative `working_dir`s and binaries are relative to it, and
    /// services without `working_dir` run in it. Remembered for restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_dir: Option<std::path::PathBuf>,
    /// Where its steps are recorded (ADR 0035).
    #[serde(skip)]
    pub operation: Option<crate::operations::OperationLog>,
}

/// What happened to one service during `apply`: the wire type itself (one definition).
pub use harness_protocol::wire::ServiceAction as Action;

/// One service's outcome in an [`ApplyReport`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceReport {
    pub name: String,
    pub action: Action,
    /// The registry state when the report was made.
    pub state: ServiceState,
    pub pid: Option<u32>,
    /// From the start of `apply` until the service was ready (or failed).
    #[serde(with = "duration_ms")]
    pub elapsed: Duration,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last lines the service printed, for failed services.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_lines: Vec<String>,
}

/// The result of `apply` or `restart`: one entry per service, in start order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyReport {
    pub project: String,
    pub services: Vec<ServiceReport>,
}

impl ApplyReport {
    /// True when no service failed or was skipped.
    pub fn is_success(&self) -> bool {
        self.services
            .iter()
            .all(|s| !matches!(s.action, Action::Failed | Action::Skipped))
    }

    /// The services that failed or were skipped.
    pub fn failures(&self) -> impl Iterator<Item = &ServiceReport> {
        self.services
            .iter()
            .filter(|s| matches!(s.action, Action::Failed | Action::Skipped))
    }
}

/// What `stop` should stop and how.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StopOptions {
    /// Only these services; empty means the whole project.
    #[serde(default)]
    pub services: Vec<String>,
    /// Also stop running services that depend on the named ones (first). Without it, stopping a
    /// service with running dependents is refused with [`crate::Error::HasDependents`].
    #[serde(default)]
    pub force: bool,
    /// Overrides every service's configured stop timeout.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration_ms"
    )]
    pub timeout: Option<Duration>,
    /// Also remove the stopped services from the registry (and forget the project when all go).
    #[serde(default)]
    pub remove: bool,
    /// Where its steps are recorded (ADR 0035).
    #[serde(skip)]
    pub operation: Option<crate::operations::OperationLog>,
}

/// One stopped service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoppedService {
    pub name: String,
    /// The state before the stop.
    pub was: ServiceState,
    /// True when SIGKILL was needed after the stop timeout.
    pub killed: bool,
    #[serde(with = "duration_ms")]
    pub elapsed: Duration,
    /// The stop could not be done yet, and why (its host does not answer): the service is
    /// `unknown` with `stop_pending` and the daemon finishes the stop when the host answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}

/// The result of `stop`, in stop order (dependents first).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StopReport {
    pub project: String,
    pub services: Vec<StoppedService>,
}

/// A service's health as `harness health` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceHealth {
    pub name: String,
    /// What is checked, e.g. `http http://127.0.0.1:8080/`; `None` when the service has no check.
    pub check: Option<String>,
    pub state: ServiceState,
    pub health: Health,
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

mod opt_duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}
