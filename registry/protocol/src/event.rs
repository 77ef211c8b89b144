//! Events: every change to the registry is one persisted event with a strictly increasing `seq`.
//!
//! Log lines are deliberately not events: they are too many to persist and would push state changes out
//! of retention. The orchestrator serves logs through its own methods.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{HealthStatus, ServiceEntry, ServiceState};

/// The kinds of events. New producers (the orchestrator's deployments, …) add a variant here so that
/// every client sees one closed, documented set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum EventType {
    /// data: [`ServiceChange`]
    #[serde(rename = "service.registered")]
    ServiceRegistered,
    /// Anything but state and health changed (location, endpoints, runtime ids). data: [`ServiceChange`]
    #[serde(rename = "service.updated")]
    ServiceUpdated,
    /// data: [`StateChange`]
    #[serde(rename = "service.state")]
    ServiceState,
    /// The health status changed (repeated results with the same status are not events). data: [`HealthChange`]
    #[serde(rename = "service.health")]
    ServiceHealth,
    /// data: [`ServiceChange`] with the last known entry.
    #[serde(rename = "service.deregistered")]
    ServiceDeregistered,
    /// Progress of a deployment; data defined by the orchestrator.
    #[serde(rename = "deployment.progress")]
    DeploymentProgress,
    /// A daemon-level notice (started, configuration reloaded, …); data `{message, …}`.
    #[serde(rename = "daemon.notice")]
    DaemonNotice,
    /// Watched files of a service changed (`watch:`). data: `{paths, action}`; `action` is
    /// `restart` when a restart follows, `none` otherwise.
    #[serde(rename = "service.watch")]
    ServiceWatch,
    /// An operation began, changed a step or ended. data: [`crate::operation::OperationChange`]
    #[serde(rename = "operation")]
    Operation,
}

impl EventType {
    pub const ALL: [EventType; 9] = [
        EventType::ServiceRegistered,
        EventType::ServiceUpdated,
        EventType::ServiceState,
        EventType::ServiceHealth,
        EventType::ServiceDeregistered,
        EventType::DeploymentProgress,
        EventType::DaemonNotice,
        EventType::ServiceWatch,
        EventType::Operation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ServiceRegistered => "service.registered",
            EventType::ServiceUpdated => "service.updated",
            EventType::ServiceState => "service.state",
            EventType::ServiceHealth => "service.health",
            EventType::ServiceDeregistered => "service.deregistered",
            EventType::DeploymentProgress => "deployment.progress",
            EventType::DaemonNotice => "daemon.notice",
            EventType::ServiceWatch => "service.watch",
            EventType::Operation => "operation",
        }
    }
}

/// One event as stored and as sent (`subscription` is added on the wire).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Event {
    pub seq: u64,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub time: Timestamp,
    /// Set for service events so that filters need not parse `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub data: Value,
}

/// data of `service.registered`, `service.updated`, `service.deregistered`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ServiceChange {
    pub entry: ServiceEntry,
}

/// data of `service.state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StateChange {
    pub from: ServiceState,
    pub to: ServiceState,
    pub entry: ServiceEntry,
}

/// data of `service.health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HealthChange {
    pub from: HealthStatus,
    pub to: HealthStatus,
    pub entry: ServiceEntry,
}

/// data of `deployment.progress`: one step of a deployment (`deploy`, `deploy.rollback`) on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeploymentProgress {
    pub host: String,
    /// `NAME-VERSION`, or `NAME` for a rollback.
    pub package: String,
    /// `checking`, `uploading`, `verifying`, `extracting`, `setup`, `ready`, `activating`, `done`, `failed`,
    /// `rolled_back` (spelt as the deploy result's `rolled_back` action).
    pub phase: String,
    pub bytes: u64,
    pub total: u64,
    /// On `done`: `installed`, `activated` or `unchanged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// On `failed`: the error, naming host and path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Which events a subscription wants. Empty lists mean "all".
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<EventType>,
    /// Service names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

impl EventFilter {
    pub fn matches(&self, kind: EventType, project: Option<&str>, service: Option<&str>) -> bool {
        if !self.types.is_empty() && !self.types.contains(&kind) {
            return false;
        }
        if let Some(want) = &self.project
            && project != Some(want.as_str())
        {
            return false;
        }
        if !self.services.is_empty() {
            match service {
                Some(s) => self.services.iter().any(|w| w == s),
                None => false,
            }
        } else {
            true
        }
    }

    pub fn matches_event(&self, event: &Event) -> bool {
        self.matches(
            event.kind,
            event.project.as_deref(),
            event.service.as_deref(),
        )
    }
}
