//! Operations: every start, stop, restart, scale, deploy, rollback and sync the daemon carries out,
//! with who asked, what was asked (secrets masked), its steps per service and host with their times,
//! and its outcome (ADR 0035).
//!
//! The store keeps them (retained like events) and every change is an `operation` event
//! ([`OperationChange`]). The methods `ops.list`, `ops.get`, `ops.cancel` and `ops.wait` read and
//! act on them.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    Start,
    Stop,
    Restart,
    Scale,
    Deploy,
    Rollback,
    Sync,
}

impl OperationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Start => "start",
            OperationKind::Stop => "stop",
            OperationKind::Restart => "restart",
            OperationKind::Scale => "scale",
            OperationKind::Deploy => "deploy",
            OperationKind::Rollback => "rollback",
            OperationKind::Sync => "sync",
        }
    }
}

/// Who asked for an operation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Requester {
    /// The client's address as the daemon saw it (`127.0.0.1:40112`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The client's `User-Agent` (`harness/0.1.0` for the CLI), when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The name of the token it presented (`owner` for the daemon's own token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// How an operation ended, or that it has not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum OperationOutcome {
    Running,
    Succeeded,
    /// `reason` says what failed; an operation the daemon was running when it died is failed with
    /// a reason that begins with `interrupted:`.
    Failed {
        reason: String,
    },
    /// Ended by `ops.cancel`; `rollback` says whether what it had started was stopped again.
    Cancelled {
        reason: String,
        #[serde(default)]
        rollback: bool,
    },
}

impl OperationOutcome {
    pub fn is_running(&self) -> bool {
        matches!(self, OperationOutcome::Running)
    }

    pub fn label(&self) -> &'static str {
        match self {
            OperationOutcome::Running => "running",
            OperationOutcome::Succeeded => "succeeded",
            OperationOutcome::Failed { .. } => "failed",
            OperationOutcome::Cancelled { .. } => "cancelled",
        }
    }
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Waiting for a dependency's condition (`detail` names it).
    WaitingForDependencies,
    /// Launching the process or container until it runs.
    Spawning,
    /// One health check (`attempt` counts them, `detail` is the check's output).
    HealthCheck,
    /// The service is ready (started, or healthy when it has a check).
    Ready,
    /// Stopping a service.
    Stopping,
    /// Preparing a deployment on a host (checking what is installed).
    Checking,
    Uploading,
    Verifying,
    /// Extracting and running the package's setup.
    Installing,
    Activating,
    /// Switching a host back to a kept release.
    RollingBack,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::WaitingForDependencies => "waiting_for_dependencies",
            StepKind::Spawning => "spawning",
            StepKind::HealthCheck => "health_check",
            StepKind::Ready => "ready",
            StepKind::Stopping => "stopping",
            StepKind::Checking => "checking",
            StepKind::Uploading => "uploading",
            StepKind::Verifying => "verifying",
            StepKind::Installing => "installing",
            StepKind::Activating => "activating",
            StepKind::RollingBack => "rolling_back",
        }
    }
}

/// Where a step is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StepResult {
    Running,
    Ok,
    Failed {
        reason: String,
    },
    /// The operation was cancelled while the step ran.
    Cancelled,
}

/// One step of an operation, on one service (or host, for a deployment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Step {
    pub kind: StepKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The health check's number, from 1 (for `health_check`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// What the step is about (the dependency waited for, the check's output, the package).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub started_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    pub result: StepResult,
}

/// An operation as stored, listed and sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Operation {
    /// Increasing, never reused (kept in the store across restarts).
    pub id: u64,
    pub kind: OperationKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The services (or hosts) it was asked for; empty means all of the project.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    pub requester: Requester,
    /// Its parameters, with secret-looking values masked (`********`) and the definition left out.
    #[serde(default)]
    pub params: Value,
    pub started_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    pub outcome: OperationOutcome,
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Health checks not kept as steps: each service keeps its first [`MAX_HEALTH_STEPS`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub steps_dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Health-check steps kept per service and operation; later ones are only counted.
pub const MAX_HEALTH_STEPS: usize = 200;

impl Operation {
    /// Whether it touches `service` (asked for it, or has a step on it).
    pub fn involves(&self, service: &str) -> bool {
        self.services.iter().any(|s| s == service)
            || self
                .steps
                .iter()
                .any(|s| s.service.as_deref() == Some(service))
    }
}

/// data of the `operation` event: the operation's head and the step that changed (none when only
/// the head did: begun or ended).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OperationChange {
    pub id: u64,
    pub kind: OperationKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub outcome: OperationOutcome,
    /// The index of `step` in the operation's `steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Step>,
}

// --- methods ------------------------------------------------------------------------------------

/// `ops.list`: operations, newest first. Filters combine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OpsListParams {
    /// Only running ones.
    #[serde(default)]
    pub running: bool,
    /// Only failed ones (interrupted included).
    #[serde(default)]
    pub failed: bool,
    /// Only those that involve this service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// At most this many (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// `ops.list` result: the operations without their steps (`ops.get` has them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OpsListResult {
    pub operations: Vec<Operation>,
}

/// `ops.get`, `ops.wait`: one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OpRef {
    pub id: u64,
}

/// `ops.wait`: waits until the operation has ended, or `timeout_ms` (then it answers the
/// operation as it is, still `running`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OpsWaitParams {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// `ops.cancel`: ends a running operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OpsCancelParams {
    pub id: u64,
    /// Also stop what this operation started (a start or restart).
    #[serde(default)]
    pub rollback: bool,
}
