//! What exists: service entries, where they run, and the lifecycle they may legally move through.
//!
//! The state machine is strict so that a bug in the orchestrator shows up as a typed error instead of a
//! registry that claims a stopped service is healthy.

use std::fmt;
use std::net::IpAddr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Identifies a service: names are unique within a project.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceKey {
    pub project: String,
    pub name: String,
}

impl ServiceKey {
    /// Validates both parts: non-empty, at most 128 bytes, no `/` and no control characters, so the
    /// `project/name` storage key is unambiguous.
    pub fn new(project: impl Into<String>, name: impl Into<String>) -> Result<Self, ModelError> {
        let key = ServiceKey {
            project: project.into(),
            name: name.into(),
        };
        key.validate()?;
        Ok(key)
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        for (field, value) in [("project", &self.project), ("name", &self.name)] {
            if value.is_empty()
                || value.len() > 128
                || value.contains('/')
                || value.chars().any(char::is_control)
            {
                return Err(ModelError::InvalidName {
                    field,
                    value: value.clone(),
                });
            }
        }
        Ok(())
    }

    /// The storage key, `project/name`.
    pub fn storage_key(&self) -> String {
        format!("{}/{}", self.project, self.name)
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.project, self.name)
    }
}

/// Where a service runs. Consumers resolve `${service.ip}` differently for each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Location {
    /// A process on the daemon's machine.
    Local,
    /// A process on a remote host reached over SSH.
    Host { name: String, address: String },
    /// Inside a container on a (possibly remote) engine, e.g. `docker` or `ssh://host`.
    Container {
        engine: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        name: String,
    },
}

/// A named address a service listens on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Endpoint {
    pub name: String,
    pub ip: IpAddr,
    pub port: u16,
}

/// The lifecycle. See [`ServiceState::can_transition_to`] for the legal moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ServiceState {
    /// Registered, waiting for dependencies or for a start request.
    Pending,
    /// Launched; not yet confirmed running (health-gated starts stay here until the first passing check).
    Starting,
    Running,
    /// A stop was requested and the signal sent.
    Stopping,
    /// Stopped on request.
    Stopped,
    /// The process ended on its own. `code` is absent when it was killed by a signal.
    Exited {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
    },
    /// Could not be started or kept running (spawn error, failed dependency, restart limit reached).
    Failed {
        reason: String,
    },
    /// Waiting out a backoff before the next start attempt.
    Restarting {
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_start: Option<Timestamp>,
    },
    /// Its host does not answer: whether its process is alive is not known. Counted as alive (a
    /// second copy is never started); with `stop_pending` a stop was asked for and finishes when
    /// the host answers again.
    Unknown {
        /// The host that does not answer.
        host: String,
        /// When it was last heard from.
        since: Timestamp,
        /// What failed (the connection error, or how long it has been silent).
        reason: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        stop_pending: bool,
    },
}

impl ServiceState {
    /// The state's name as used in event data and filters.
    pub fn name(&self) -> &'static str {
        match self {
            ServiceState::Pending => "pending",
            ServiceState::Starting => "starting",
            ServiceState::Running => "running",
            ServiceState::Stopping => "stopping",
            ServiceState::Stopped => "stopped",
            ServiceState::Exited { .. } => "exited",
            ServiceState::Failed { .. } => "failed",
            ServiceState::Restarting { .. } => "restarting",
            ServiceState::Unknown { .. } => "unknown",
        }
    }

    /// True while a process may exist for the service (the orchestrator must account for it on stop).
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            ServiceState::Starting
                | ServiceState::Running
                | ServiceState::Stopping
                | ServiceState::Unknown { .. }
        )
    }

    /// The legal moves:
    ///
    /// ```text
    /// pending    -> starting | stopped | failed
    /// starting   -> running | stopping | exited | failed
    /// running    -> stopping | exited | failed | restarting
    /// stopping   -> stopped | exited | failed
    /// stopped    -> pending | starting
    /// exited     -> pending | starting | restarting | stopped | failed
    /// failed     -> pending | starting | restarting | stopped
    /// restarting -> starting | stopped | failed | restarting (next attempt)
    /// starting | running | stopping -> unknown (the host stopped answering)
    /// unknown    -> unknown (stop asked for) | starting | running | stopping | stopped | exited | failed
    /// ```
    pub fn can_transition_to(&self, to: &ServiceState) -> bool {
        use ServiceState::*;
        match (self, to) {
            (Pending, Starting | Stopped | Failed { .. }) => true,
            (Starting, Running | Stopping | Exited { .. } | Failed { .. }) => true,
            (Running, Stopping | Exited { .. } | Failed { .. } | Restarting { .. }) => true,
            (Stopping, Stopped | Exited { .. } | Failed { .. }) => true,
            (Stopped, Pending | Starting) => true,
            (Exited { .. }, Pending | Starting | Restarting { .. } | Stopped | Failed { .. }) => {
                true
            }
            (Failed { .. }, Pending | Starting | Restarting { .. } | Stopped) => true,
            (Restarting { attempt: a, .. }, Restarting { attempt: b, .. }) => b > a,
            (Restarting { .. }, Starting | Stopped | Failed { .. }) => true,
            (Starting | Running | Stopping | Unknown { .. }, Unknown { .. }) => true,
            (
                Unknown { .. },
                Starting | Running | Stopping | Stopped | Exited { .. } | Failed { .. },
            ) => true,
            _ => false,
        }
    }
}

impl fmt::Display for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceState::Exited {
                code: Some(code), ..
            } => write!(f, "exited({code})"),
            ServiceState::Exited {
                signal: Some(sig), ..
            } => write!(f, "exited(signal {sig})"),
            ServiceState::Failed { reason } => write!(f, "failed: {reason}"),
            ServiceState::Restarting { attempt, .. } => write!(f, "restarting (attempt {attempt})"),
            ServiceState::Unknown {
                host,
                since,
                stop_pending,
                ..
            } => {
                let since = since.round(jiff::Unit::Second).unwrap_or(*since);
                write!(f, "unknown: {host} unreachable since {since}")?;
                if *stop_pending {
                    f.write_str("; stop pending")?;
                }
                Ok(())
            }
            other => f.write_str(other.name()),
        }
    }
}

/// The result of health checks; orthogonal to the lifecycle but only meaningful while a service is
/// starting or running (health-gated starts wait for `healthy`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// No check has completed (or the service has no check).
    #[default]
    Unknown,
    Healthy,
    Unhealthy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
pub struct Health {
    pub status: HealthStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<Timestamp>,
    /// Output of the last check, truncated by the orchestrator to something readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_output: Option<String>,
    #[serde(default)]
    pub consecutive_failures: u32,
}

/// What lets the daemon re-attach to a running service after a restart, and kill exactly the right
/// process: a pid alone can be reused, pid plus start time cannot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
pub struct Runtime {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Process start time as the OS reports it (e.g. clock ticks since boot from /proc/PID/stat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_start_time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

/// One service as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ServiceEntry {
    pub project: String,
    pub name: String,
    pub location: Location,
    pub state: ServiceState,
    #[serde(default)]
    pub runtime: Runtime,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub restart_count: u32,
    /// Hash of the resolved service definition the running instance was started from; on re-attach
    /// the orchestrator compares it with the current configuration to decide whether to restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// When the current state was entered.
    pub state_since: Timestamp,
}

impl ServiceEntry {
    /// A new entry in `pending`.
    pub fn new(key: ServiceKey, location: Location) -> Self {
        let now = Timestamp::now();
        ServiceEntry {
            project: key.project,
            name: key.name,
            location,
            state: ServiceState::Pending,
            runtime: Runtime::default(),
            endpoints: Vec::new(),
            health: Health::default(),
            restart_count: 0,
            spec_hash: None,
            created_at: now,
            updated_at: now,
            state_since: now,
        }
    }

    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            project: self.project.clone(),
            name: self.name.clone(),
        }
    }

    /// Moves to `to` if legal. Entering `restarting` counts a restart; leaving the active states clears
    /// the pid (it may be reused) and resets health.
    pub fn transition(&mut self, to: ServiceState) -> Result<(), ModelError> {
        if !self.state.can_transition_to(&to) {
            return Err(ModelError::IllegalTransition {
                service: self.key().to_string(),
                from: self.state.name(),
                to: to.name(),
            });
        }
        if matches!(to, ServiceState::Restarting { .. }) {
            self.restart_count = self.restart_count.saturating_add(1);
        }
        if !to.is_active() {
            self.runtime.pid = None;
            self.runtime.process_start_time = None;
            self.health = Health::default();
        }
        let now = Timestamp::now();
        self.state = to;
        self.state_since = now;
        self.updated_at = now;
        Ok(())
    }

    /// Records a health check result; only a starting or running service can have one.
    pub fn set_health(&mut self, health: Health) -> Result<(), ModelError> {
        if !matches!(self.state, ServiceState::Starting | ServiceState::Running) {
            return Err(ModelError::HealthWhileInactive {
                service: self.key().to_string(),
                state: self.state.name(),
            });
        }
        self.health = health;
        self.updated_at = Timestamp::now();
        Ok(())
    }
}

/// Why a model operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("illegal transition for service {service}: {from} -> {to}")]
    IllegalTransition {
        service: String,
        from: &'static str,
        to: &'static str,
    },
    #[error("service {service} is {state}: health can only be recorded while starting or running")]
    HealthWhileInactive {
        service: String,
        state: &'static str,
    },
    #[error("invalid {field} {value:?}: must be 1-128 bytes without '/' or control characters")]
    InvalidName { field: &'static str, value: String },
    #[error("{0}")]
    Invalid(String),
}
