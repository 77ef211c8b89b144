//! The protocol's messages, defined once for the server, the client, the daemon and the CLI.
//!
//! Client → server: [`Request`] `{id, method, params}`. Server → client: [`Response`] `{id, result}` or
//! `{id, error: {code, message, data}}`, [`EventMessage`] `{subscription, seq, type, time, data}` and
//! [`ResyncMessage`] `{subscription, resync: {seq, services}}`. See docs/protocol.md.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{Event, EventFilter};
use crate::model::{Endpoint, Health, Location, Runtime, ServiceEntry, ServiceState};

/// Protocol version, reported by `/healthz` and the `hello` method.
pub const PROTOCOL_VERSION: u32 = 1;

/// The WebSocket path. `/healthz` and `/metrics` are plain HTTP on the same port.
pub const WS_PATH: &str = "/v1/ws";

/// On a `503` answer to the upgrade: the daemon's connection limit that was reached.
pub const CONNECTION_LIMIT_HEADER: &str = "X-Harness-Connection-Limit";

/// Method names. The orchestrator's methods are listed here too, so that every client shares one set.
pub mod methods {
    /// `{}` → [`super::HelloResult`]
    pub const HELLO: &str = "hello";
    /// [`super::ListServicesParams`] → [`super::ListServicesResult`]
    pub const SERVICE_LIST: &str = "service.list";
    /// [`super::ServiceRef`] → [`crate::ServiceEntry`]
    pub const SERVICE_GET: &str = "service.get";
    /// [`super::RegisterParams`] → [`crate::ServiceEntry`]
    pub const SERVICE_REGISTER: &str = "service.register";
    /// [`super::UpdateParams`] → [`crate::ServiceEntry`]
    pub const SERVICE_UPDATE: &str = "service.update";
    /// [`super::ServiceRef`] → [`crate::ServiceEntry`] (the removed entry)
    pub const SERVICE_DEREGISTER: &str = "service.deregister";
    /// [`super::EventsParams`] → [`super::EventsResult`]: a page of retained events (no subscription).
    pub const EVENTS_LIST: &str = "events.list";
    /// [`super::SubscribeParams`] → [`super::SubscribeResult`]
    pub const SUBSCRIBE: &str = "subscribe";
    /// [`super::UnsubscribeParams`] → `{}`
    pub const UNSUBSCRIBE: &str = "unsubscribe";
    /// [`super::CancelParams`] → [`super::CancelResult`]; the cancelled request answers `cancelled`.
    pub const CANCEL: &str = "cancel";

    /// [`super::StartParams`] → [`super::ApplyResult`]: apply a project (idempotent).
    pub const START: &str = "start";
    /// [`super::StopParams`] → [`super::StopResult`]
    pub const STOP: &str = "stop";
    /// [`super::RestartParams`] → [`super::ApplyResult`]
    pub const RESTART: &str = "restart";
    /// [`super::StatusParams`] → [`super::StatusResult`]
    pub const STATUS: &str = "status";
    /// [`super::LogsParams`] → [`super::LogsResult`]: one batch; call again with `session` for more.
    pub const LOGS: &str = "logs";
    /// [`super::ExecParams`] → [`super::ExecResult`]; with `stream`, progress is
    /// [`super::ExecProgress`] and the input comes through `exec.input`.
    pub const EXEC: &str = "exec";
    /// [`super::ExecInputParams`] → `{}`: stdin, end of file, window size or a signal for a
    /// streaming `exec` running on the same connection.
    pub const EXEC_INPUT: &str = "exec.input";
    /// [`super::HealthParams`] → [`super::HealthResult`]
    pub const HEALTH: &str = "health";
    /// `{}` → [`super::DaemonStatusResult`]
    pub const DAEMON_STATUS: &str = "daemon.status";
    /// [`super::DaemonStopParams`] → `{}`: the daemon answers, then shuts down.
    pub const DAEMON_STOP: &str = "daemon.stop";
    /// [`super::DeployParams`] → [`super::DeployResult`], streaming [`super::DeployProgress`].
    pub const DEPLOY: &str = "deploy";
    /// [`super::RollbackParams`] → [`super::DeployResult`]
    pub const DEPLOY_ROLLBACK: &str = "deploy.rollback";
    /// [`super::LogsClearParams`] → [`super::LogsClearResult`]: delete services' log files.
    pub const LOGS_CLEAR: &str = "logs.clear";
    /// [`super::WatchParams`] → [`super::WatchResult`]: watch services' files (`watch:`).
    pub const WATCH: &str = "watch";
    /// [`crate::operation::OpsListParams`] → [`crate::operation::OpsListResult`]
    pub const OPS_LIST: &str = "ops.list";
    /// [`crate::operation::OpRef`] → [`crate::operation::Operation`]
    pub const OPS_GET: &str = "ops.get";
    /// [`crate::operation::OpsCancelParams`] → [`crate::operation::Operation`] (once it has ended)
    pub const OPS_CANCEL: &str = "ops.cancel";
    /// [`crate::operation::OpsWaitParams`] → [`crate::operation::Operation`]
    pub const OPS_WAIT: &str = "ops.wait";
    /// [`crate::drift::DriftParams`] → [`crate::drift::DriftResult`]: registry against reality.
    pub const DRIFT: &str = "drift";
    /// [`crate::drift::SyncParams`] → [`crate::drift::SyncResult`]: resolve drift findings.
    pub const SYNC: &str = "sync";
    /// [`crate::places::HostsCheckParams`] → [`crate::places::HostsCheckResult`]: each host's
    /// reachability, latency, sudo and docker.
    pub const HOSTS_CHECK: &str = "hosts.check";
    /// [`crate::places::NetworkListParams`] → [`crate::places::NetworkListResult`]: a project's
    /// meshes, members and peers.
    pub const NETWORK_LIST: &str = "network.list";

    /// [`crate::admin::TopParams`] → [`crate::admin::TopResult`]: CPU, memory, fds, threads, uptime.
    pub const TOP: &str = "top";
    /// `{}` → [`crate::admin::DaemonStatsResult`]
    pub const DAEMON_STATS: &str = "daemon.stats";
    /// `{}` → [`crate::admin::DaemonConfigResult`]
    pub const DAEMON_CONFIG: &str = "daemon.config";
    /// `{}` → [`crate::admin::DaemonEnvResult`] (admin scope).
    pub const DAEMON_ENV: &str = "daemon.env";
    /// [`crate::admin::TokenCreateParams`] → [`crate::admin::TokenCreateResult`] (admin scope).
    pub const TOKEN_CREATE: &str = "token.create";
    /// `{}` → [`crate::admin::TokenListResult`] (admin scope).
    pub const TOKEN_LIST: &str = "token.list";
    /// [`crate::admin::TokenRevokeParams`] → [`crate::admin::TokenRevokeResult`] (admin scope).
    pub const TOKEN_REVOKE: &str = "token.revoke";

    /// Methods the daemon adds through its daemon's handler (`harness_server::Handler`) (the live event stream is `subscribe`).
    pub const ORCHESTRATOR: [&str; 26] = [
        START,
        STOP,
        RESTART,
        STATUS,
        LOGS,
        EXEC,
        EXEC_INPUT,
        HEALTH,
        DAEMON_STATUS,
        DAEMON_STOP,
        DEPLOY,
        DEPLOY_ROLLBACK,
        WATCH,
        LOGS_CLEAR,
        OPS_LIST,
        OPS_GET,
        OPS_CANCEL,
        OPS_WAIT,
        DRIFT,
        SYNC,
        HOSTS_CHECK,
        NETWORK_LIST,
        TOP,
        DAEMON_STATS,
        DAEMON_CONFIG,
        DAEMON_ENV,
    ];

    /// Methods the server itself answers; everything else goes to the daemon's handler (`harness_server::Handler`).
    pub const REGISTRY: [&str; 13] = [
        HELLO,
        SERVICE_LIST,
        SERVICE_GET,
        SERVICE_REGISTER,
        SERVICE_UPDATE,
        SERVICE_DEREGISTER,
        EVENTS_LIST,
        SUBSCRIBE,
        UNSUBSCRIBE,
        CANCEL,
        TOKEN_CREATE,
        TOKEN_LIST,
        TOKEN_REVOKE,
    ];
}

/// WebSocket close codes the server uses (4000–4999 is the application range).
pub mod close_codes {
    /// The subscriber's queue exceeded its limit; reconnect and resume with `since`.
    pub const LAGGING: u16 = 4008;
    /// No frame (not even a pong) from the peer within the heartbeat timeout.
    pub const HEARTBEAT_TIMEOUT: u16 = 4009;
    /// The server is shutting down (also sent as 1001 by some proxies).
    pub const SHUTDOWN: u16 = 1001;
    /// A message exceeded the configured maximum size.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The connection's token was revoked or expired.
    pub const TOKEN_REVOKED: u16 = 4003;
}

/// HTTP statuses for refused upgrades: 401 missing/wrong token, 503 too many connections, 404 wrong path.
pub mod http_status {
    pub const UNAUTHORIZED: u16 = 401;
    pub const TOO_MANY_CONNECTIONS: u16 = 503;
    pub const NOT_FOUND: u16 = 404;
}

/// A request from client to server. `id` is chosen by the client and echoed in the response; requests
/// on one connection run concurrently, so responses may arrive in any order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Request {
    pub id: u64,
    pub method: String,
    #[serde(default)]
    pub params: Value,
}

/// Machine-readable error codes. Clients switch on these, never on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was not valid JSON (the response `id` is null).
    ParseError,
    /// Valid JSON but not a request (missing id/method, binary frame).
    InvalidRequest,
    MethodNotFound,
    /// `params` did not match the method's schema; `message` names the field.
    InvalidParams,
    NotFound,
    AlreadyExists,
    /// The requested state change is not legal from the current state.
    IllegalTransition,
    /// The request did not finish within the server's request timeout.
    Timeout,
    /// A limit was reached (subscriptions per connection, …).
    LimitExceeded,
    /// The handler refused the operation for a reason given in `message` (e.g. a failed start).
    Failed,
    /// The server is shutting down or its store is closed.
    Unavailable,
    /// The client cancelled the request (`cancel {id}`), or the operation a `start` or `restart`
    /// carried out was cancelled with `ops.cancel` (`data`: `{operation: ID}`).
    Cancelled,
    /// The connection's token lacks the scope the method needs; `data` is a
    /// [`crate::admin::ScopeRefusal`] naming it.
    Forbidden,
    Internal,
}

/// An error as sent on the wire.
#[derive(
    Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error, schemars::JsonSchema,
)]
#[error("{code:?}: {message}")]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WireError {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    pub fn method_not_found(method: &str) -> Self {
        WireError::new(
            ErrorCode::MethodNotFound,
            format!("unknown method {method:?}"),
        )
    }

    pub fn invalid_params(e: impl std::fmt::Display) -> Self {
        WireError::new(ErrorCode::InvalidParams, format!("invalid params: {e}"))
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        WireError::new(ErrorCode::Internal, e.to_string())
    }
}

/// A response: exactly one of `result` and `error`. `id` is null only for frames that could not be
/// parsed far enough to find one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Response {
    pub id: Option<u64>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Result(Value),
    Error(WireError),
}

/// An event delivered to a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventMessage {
    pub subscription: u64,
    #[serde(flatten)]
    pub event: Event,
}

/// Sent instead of a replay when `since` is older than retention: the full state at `resync.seq`.
/// Events continue with `seq > resync.seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResyncMessage {
    pub subscription: u64,
    pub resync: Snapshot,
}

/// Intermediate output of a running request (log lines, deployment steps), before its response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProgressMessage {
    pub id: u64,
    pub progress: Value,
}

/// Anything the server sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    Response(Response),
    Progress(ProgressMessage),
    Event(EventMessage),
    Resync(ResyncMessage),
}

impl ServerMessage {
    /// Tells the shapes apart by their keys (`resync`, `seq`, `progress`, else a response).
    pub fn decode(text: &str) -> Result<ServerMessage, serde_json::Error> {
        // Fast path for the server's own framing: events start with `{"subscription":N,"seq"`.
        if let Some(rest) = text.strip_prefix("{\"subscription\":") {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if rest[digits..].starts_with(",\"seq\"") {
                return serde_json::from_str(text).map(ServerMessage::Event);
            }
        }
        let value: Value = serde_json::from_str(text)?;
        if value.get("progress").is_some() {
            return serde_json::from_value(value).map(ServerMessage::Progress);
        }
        if value.get("resync").is_some() {
            serde_json::from_value(value).map(ServerMessage::Resync)
        } else if value.get("seq").is_some() {
            serde_json::from_value(value).map(ServerMessage::Event)
        } else {
            serde_json::from_value(value).map(ServerMessage::Response)
        }
    }
}

/// Decodes one client frame. Errors carry the response to send: the id if one could be read.
pub fn decode_request(bytes: &[u8]) -> Result<Request, Box<Response>> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        Box::new(Response {
            id: None,
            outcome: Outcome::Error(WireError::new(ErrorCode::ParseError, e.to_string())),
        })
    })?;
    let id = value.get("id").and_then(Value::as_u64);
    serde_json::from_value::<Request>(value).map_err(|e| {
        Box::new(Response {
            id,
            outcome: Outcome::Error(WireError::new(
                ErrorCode::InvalidRequest,
                format!("not a request {{id: u64, method: string, params?}}: {e}"),
            )),
        })
    })
}

/// Identifies one service in params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ServiceRef {
    pub project: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HelloResult {
    pub protocol: u32,
    pub server: String,
    pub last_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListServicesParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListServicesResult {
    /// The seq the list reflects: subscribe with `since = seq` to follow it without a gap.
    pub seq: u64,
    pub services: Vec<ServiceEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RegisterParams {
    pub project: String,
    pub name: String,
    pub location: Location,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// Replace an existing entry instead of failing with `already_exists`.
    #[serde(default)]
    pub replace: bool,
}

/// Fields to change; absent fields stay. `state` goes through the transition rules.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UpdateParams {
    pub project: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ServiceState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<Endpoint>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventsParams {
    #[serde(default)]
    pub since: u64,
    /// At most this many (server caps it at 10 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventsResult {
    pub events: Vec<Event>,
    /// Events at or below this seq have been pruned.
    pub pruned_through: u64,
    pub last_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SubscribeParams {
    #[serde(default, flatten)]
    pub filter: EventFilter,
    /// Replay retained events with `seq > since` first. Absent: live events only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SubscribeResult {
    pub subscription: u64,
    /// The last seq committed when the subscription started; live events follow it.
    pub last_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UnsubscribeParams {
    pub subscription: u64,
}

/// Cancels a running request of this connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CancelParams {
    pub id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CancelResult {
    /// False if the request had already finished (or never existed).
    pub cancelled: bool,
}

/// JSON Schemas of every message, of each method's params and result, and of the event payloads,
/// keyed by file stem. `docs/protocol/<name>.schema.json` are generated from these, and a test keeps
/// them equal (regenerate with `REGISTRY_WRITE_SCHEMAS=1 cargo test -p harness-protocol --test protocol_docs`).
pub fn schemas() -> Vec<(&'static str, Value)> {
    use schemars::schema_for;
    let list = [
        ("request", schema_for!(Request)),
        ("response", schema_for!(Response)),
        ("event", schema_for!(EventMessage)),
        ("resync", schema_for!(ResyncMessage)),
        ("service-entry", schema_for!(ServiceEntry)),
        ("hello.result", schema_for!(HelloResult)),
        ("service.list.params", schema_for!(ListServicesParams)),
        ("service.list.result", schema_for!(ListServicesResult)),
        ("service-ref.params", schema_for!(ServiceRef)),
        ("service.register.params", schema_for!(RegisterParams)),
        ("service.update.params", schema_for!(UpdateParams)),
        ("events.list.params", schema_for!(EventsParams)),
        ("events.list.result", schema_for!(EventsResult)),
        ("subscribe.params", schema_for!(SubscribeParams)),
        ("subscribe.result", schema_for!(SubscribeResult)),
        ("unsubscribe.params", schema_for!(UnsubscribeParams)),
        ("cancel.params", schema_for!(CancelParams)),
        ("cancel.result", schema_for!(CancelResult)),
        ("progress", schema_for!(ProgressMessage)),
        (
            "event-data.service-change",
            schema_for!(crate::event::ServiceChange),
        ),
        (
            "event-data.state-change",
            schema_for!(crate::event::StateChange),
        ),
        (
            "event-data.health-change",
            schema_for!(crate::event::HealthChange),
        ),
        (
            "event-data.deployment-progress",
            schema_for!(crate::event::DeploymentProgress),
        ),
        ("deploy.params", schema_for!(DeployParams)),
        ("deploy.rollback.params", schema_for!(RollbackParams)),
        ("deploy.result", schema_for!(DeployResult)),
        ("deploy.progress", schema_for!(DeployProgress)),
        ("start.params", schema_for!(StartParams)),
        ("start.result", schema_for!(ApplyResult)),
        ("stop.params", schema_for!(StopParams)),
        ("stop.result", schema_for!(StopResult)),
        ("restart.params", schema_for!(RestartParams)),
        ("watch.params", schema_for!(WatchParams)),
        ("logs.clear.params", schema_for!(LogsClearParams)),
        ("logs.clear.result", schema_for!(LogsClearResult)),
        ("watch.result", schema_for!(WatchResult)),
        ("status.params", schema_for!(StatusParams)),
        ("status.result", schema_for!(StatusResult)),
        ("logs.params", schema_for!(LogsParams)),
        ("logs.result", schema_for!(LogsResult)),
        ("exec.params", schema_for!(ExecParams)),
        ("exec.result", schema_for!(ExecResult)),
        ("exec.progress", schema_for!(ExecProgress)),
        ("exec.input.params", schema_for!(ExecInputParams)),
        ("health.params", schema_for!(HealthParams)),
        ("health.result", schema_for!(HealthResult)),
        ("daemon.status.result", schema_for!(DaemonStatusResult)),
        ("daemon.stop.params", schema_for!(DaemonStopParams)),
        (
            "ops.list.params",
            schema_for!(crate::operation::OpsListParams),
        ),
        (
            "ops.list.result",
            schema_for!(crate::operation::OpsListResult),
        ),
        ("ops.get.params", schema_for!(crate::operation::OpRef)),
        ("operation", schema_for!(crate::operation::Operation)),
        (
            "ops.cancel.params",
            schema_for!(crate::operation::OpsCancelParams),
        ),
        (
            "ops.wait.params",
            schema_for!(crate::operation::OpsWaitParams),
        ),
        (
            "event-data.operation",
            schema_for!(crate::operation::OperationChange),
        ),
        ("drift.params", schema_for!(crate::drift::DriftParams)),
        ("drift.result", schema_for!(crate::drift::DriftResult)),
        ("sync.params", schema_for!(crate::drift::SyncParams)),
        ("sync.result", schema_for!(crate::drift::SyncResult)),
        (
            "hosts.check.params",
            schema_for!(crate::places::HostsCheckParams),
        ),
        (
            "hosts.check.result",
            schema_for!(crate::places::HostsCheckResult),
        ),
        (
            "network.list.params",
            schema_for!(crate::places::NetworkListParams),
        ),
        (
            "network.list.result",
            schema_for!(crate::places::NetworkListResult),
        ),
        (
            "token.create.params",
            schema_for!(crate::admin::TokenCreateParams),
        ),
        (
            "token.create.result",
            schema_for!(crate::admin::TokenCreateResult),
        ),
        (
            "token.list.result",
            schema_for!(crate::admin::TokenListResult),
        ),
        (
            "token.revoke.params",
            schema_for!(crate::admin::TokenRevokeParams),
        ),
        (
            "token.revoke.result",
            schema_for!(crate::admin::TokenRevokeResult),
        ),
        ("forbidden.data", schema_for!(crate::admin::ScopeRefusal)),
        ("top.params", schema_for!(crate::admin::TopParams)),
        ("top.result", schema_for!(crate::admin::TopResult)),
        (
            "daemon.stats.result",
            schema_for!(crate::admin::DaemonStatsResult),
        ),
        (
            "daemon.config.result",
            schema_for!(crate::admin::DaemonConfigResult),
        ),
        (
            "daemon.env.result",
            schema_for!(crate::admin::DaemonEnvResult),
        ),
    ];
    list.into_iter()
        .map(|(name, schema)| (name, serde_json::to_value(schema).unwrap_or(Value::Null)))
        .collect()
}

// --- The daemon's orchestrator methods -------------------------------------------------------------

/// `start`: the project as the CLI validated it. The daemon loads `yaml` again with the same loader, so
/// what runs is exactly what was validated; `dir` is where the file lives (relative paths resolve
/// against it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StartParams {
    pub project: String,
    /// The resolved project, serialized (every `${VAR}` already substituted).
    pub yaml: String,
    /// The directory of the services file.
    pub dir: String,
    /// Only these services and what they depend on; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// Stop and forget services that are no longer in the project.
    #[serde(default)]
    pub remove_orphans: bool,
    /// Set by `harness scale`: what changes (the operation is then a `scale` one, ADR 0035).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleRequest>,
}

/// A `start` that scales services (`harness scale web=3`): the instances beyond the new counts are
/// stopped and forgotten first, one at a time, in the order given (highest number first), with
/// the services that use them; then `services` are applied together with those users, which start
/// again with the new list (answered `restarted` with a `note`; at 0 instances with an empty
/// `${web.endpoints}`). With nothing left to apply, nothing is (only `removed` instances).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ScaleRequest {
    pub changes: Vec<ScaleChange>,
    /// Instances to stop and forget before the apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
}

/// One service's count: `from` instances registered before, `to` asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ScaleChange {
    pub service: String,
    pub from: u32,
    pub to: u32,
}

/// What happened to one service in `start` or `restart`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceAction {
    Started,
    /// Was running with a different definition; stopped and started again.
    Restarted,
    /// Was running with the same definition; left alone.
    Unchanged,
    /// Could not be started, did not become ready, or exited during the start (see `error`
    /// and `state`).
    Failed,
    /// A one-shot job that ran to completion (exit status 0) during the start and is not
    /// restarted.
    Completed,
    /// Not started because a dependency failed.
    Skipped,
    /// No longer in the project; left running (`remove_orphans` stops it).
    Orphaned,
    /// No longer in the project; stopped and removed.
    Removed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ServiceOutcome {
    pub name: String,
    pub action: ServiceAction,
    pub state: ServiceState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// From the start of the request until the service was ready (or failed).
    pub elapsed_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last lines the service printed, for failed services.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_lines: Vec<String>,
    /// Why a service the request did not name was touched: a `scale` stops the services that
    /// use the instances it changes and starts them again with the new list (e.g. "uses web,
    /// now 0 instances: started again with an empty `${web.endpoints}`").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Result of `start` and `restart`: one entry per service, in start order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ApplyResult {
    pub project: String,
    pub services: Vec<ServiceOutcome>,
}

impl ApplyResult {
    /// True when no service failed or was skipped.
    pub fn is_success(&self) -> bool {
        self.services
            .iter()
            .all(|s| !matches!(s.action, ServiceAction::Failed | ServiceAction::Skipped))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StopParams {
    pub project: String,
    /// Empty means the whole project.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// Also stop running dependents of the named services (otherwise refused with `failed`).
    #[serde(default)]
    pub force: bool,
    /// Overrides every service's stop timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Also remove the stopped services from the registry, and forget the project when none is
    /// left (`harness down`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StoppedOutcome {
    pub name: String,
    /// The state before the stop.
    pub was: ServiceState,
    /// SIGKILL was needed after the stop timeout.
    pub killed: bool,
    pub elapsed_ms: u64,
    /// Set when the stop could not be done yet: why (its host does not answer). The service is
    /// `unknown` with `stop_pending`, and the daemon finishes the stop when the host answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}

/// Result of `stop`, in stop order (dependents first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StopResult {
    pub project: String,
    pub services: Vec<StoppedOutcome>,
}

/// `logs.clear`: delete the log files (current and rotated) of services.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogsClearParams {
    pub project: String,
    /// Empty means every service of the project.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogsClearResult {
    pub project: String,
    /// The services whose logs were deleted.
    pub services: Vec<String>,
}

/// `watch`: start watching services' files; a change restarts the service (or is only recorded
/// with `action: none`) until the project is stopped.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WatchParams {
    pub project: String,
    /// Empty means the services with `watch:`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WatchResult {
    pub project: String,
    pub services: Vec<WatchedService>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WatchedService {
    pub name: String,
    /// Absolute paths, watched recursively.
    pub paths: Vec<String>,
    /// `restart` or `none`.
    pub action: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RestartParams {
    pub project: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StatusParams {
    /// Absent: every project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StatusResult {
    pub services: Vec<ServiceEntry>,
    /// The last resource sample of each service `top` has read (none before the first `top`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<crate::admin::ResourceSample>,
}

/// `logs`: the first call (no `session`) opens a reader with these options; later calls pass the
/// returned `session` (other fields are then ignored) and get the next batch. A session unused for
/// 60 s is dropped.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogsParams {
    pub project: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// At most this many of the latest lines per service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<usize>,
    /// Only lines read at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<jiff::Timestamp>,
    /// Keep delivering new lines (across restarts) until the client stops asking.
    #[serde(default)]
    pub follow: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogLine {
    pub service: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub time: jiff::Timestamp,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogsResult {
    pub session: u64,
    pub lines: Vec<LogLine>,
    /// No more lines will come (history exhausted and not following).
    pub end: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExecParams {
    pub project: String,
    pub service: String,
    /// argv; the first element is the program.
    pub command: Vec<String>,
    /// Stream: stdin comes through `exec.input`, output goes out as [`ExecProgress`] as it comes,
    /// and the result carries only the exit. Without it stdin is empty and the output is
    /// collected into the result.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// Run on a pseudo-terminal (only with `stream`): stdout and stderr are then one stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<ExecTty>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExecResult {
    /// Absent when killed by a signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Empty for a streaming exec (the output went out as progress).
    pub stdout: String,
    pub stderr: String,
}

// --- Streaming exec (`exec` with `stream`, `exec.input`) -------------------------------------------

/// The terminal of a streaming exec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExecTty {
    pub rows: u16,
    pub cols: u16,
    /// `TERM` for the program (the client's); absent: `xterm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<String>,
}

/// A progress message of a streaming exec: first `started` (send `exec.input` only after it), then
/// `output` chunks as the program writes them. The exit is the response ([`ExecResult`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecProgress {
    /// The program runs at the end of its layer chain.
    Started {
        /// Its pid where it runs (inside the container for docker services).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
    },
    /// Bytes the program wrote, as they came (not split into lines).
    Output {
        /// `stdout` or `stderr` (always `stdout` on a terminal).
        stream: String,
        /// The bytes, base64 (standard alphabet, padded).
        data: String,
    },
}

/// `exec.input`: input for the streaming exec whose request id is `exec`, on the same connection.
/// Fields are applied in this order: `data`, `eof`, `resize`, `signal`. Data is written in the
/// order the daemon receives it only if the client waits for each `exec.input` response before
/// sending the next one with data (requests run concurrently); the response comes once the bytes
/// are written to the program's stdin, which gives back-pressure.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExecInputParams {
    /// The request id of the `exec`.
    pub exec: u64,
    /// Bytes for stdin, base64 (standard alphabet, padded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Close stdin (on a terminal: send its end-of-file character, ^D).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub eof: bool,
    /// New window size of the terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<ExecSize>,
    /// Send this signal (`INT`, `TERM`, …) to the program's process group, wherever it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExecSize {
    pub rows: u16,
    pub cols: u16,
}

/// Encodes bytes for [`ExecProgress::Output`] and [`ExecInputParams::data`].
pub fn encode_bytes(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes [`ExecProgress::Output`] or [`ExecInputParams::data`]; the error names the field.
pub fn decode_bytes(field: &str, text: &str) -> Result<Vec<u8>, WireError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| WireError::invalid_params(format!("{field}: not base64: {e}")))
}

// --- End of streaming exec -----------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HealthParams {
    pub project: String,
    /// Absent: every service of the project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ServiceHealthReport {
    pub name: String,
    /// What is checked, e.g. `http http://127.0.0.1:8080/`; absent without a check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    pub state: ServiceState,
    pub health: Health,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HealthResult {
    pub services: Vec<ServiceHealthReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DaemonStatusResult {
    pub pid: u32,
    pub version: String,
    pub started_at: jiff::Timestamp,
    pub uptime_ms: u64,
    /// `wss://ADDR/v1/ws`
    pub url: String,
    /// The state directory.
    pub home: String,
    pub projects: Vec<String>,
    /// Services known to the registry, and how many of them are running.
    pub services: usize,
    pub running: usize,
    /// Open API connections (this one included).
    pub connections: u64,
    /// The daemon's open-file limit (its soft `RLIMIT_NOFILE`, raised to the hard limit at start).
    #[serde(default)]
    pub open_files_limit: u64,
    /// How many services that limit allows; a start that would run more is refused.
    #[serde(default)]
    pub max_services: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DaemonStopParams {
    /// Stop every service first; otherwise they keep running and the next daemon re-attaches.
    #[serde(default)]
    pub stop_services: bool,
}

// --- Deployments (`harness deploy`) ----------------------------------------------------------------

/// `deploy`: install a built package on hosts of a project. Like `start`, the project travels as the CLI
/// validated it (its `hosts` section says how to reach each host). Progress messages are
/// [`DeployProgress`]; the same steps are recorded as `deployment.progress` events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeployParams {
    pub project: String,
    /// The resolved project, serialized (see [`StartParams::yaml`]).
    pub yaml: String,
    /// The directory of the services file.
    pub dir: String,
    /// Path of `NAME-VERSION.tar.zst` on the daemon's machine; `.sha256` beside it.
    pub archive: String,
    /// Hosts entries to deploy to; empty: every host with a `type: package` service of this package.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Install root on the hosts (default `/opt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// Earlier versions to keep besides the active one (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<usize>,
    /// Reinstall a version that is present with another checksum instead of refusing.
    #[serde(default)]
    pub replace: bool,
}

/// `deploy.rollback`: switch hosts back to the previously active version of a package (or `to`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RollbackParams {
    pub project: String,
    pub yaml: String,
    pub dir: String,
    /// The package name.
    pub name: String,
    /// Empty: every host with a `type: package` service of this package.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// A retained version to switch to; default: the most recently active other one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
}

/// One progress message of `deploy`: a host entered a phase or sent more bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeployProgress {
    pub host: String,
    /// `NAME-VERSION`.
    pub package: String,
    /// `checking`, `uploading`, `verifying`, `extracting`, `setup`, `ready`, `activating`, `done`.
    pub phase: String,
    /// Bytes sent so far, of `total` to send.
    pub bytes: u64,
    pub total: u64,
}

/// What happened on one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeployAction {
    /// Uploaded, verified, extracted, set up and activated.
    Installed,
    /// The exact package was on the host already; only the active link switched.
    Activated,
    /// The same checksum was active already: nothing was done.
    Unchanged,
    /// `deploy.rollback` switched to an earlier version.
    RolledBack,
    /// See `error`; the previously active version is untouched.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HostDeployment {
    pub host: String,
    /// `NAME-VERSION` now active (or that was to be installed, on failure).
    pub package: String,
    pub action: DeployAction,
    /// The active directory on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The version active before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// Bytes streamed to the host (0 unless installed).
    #[serde(default)]
    pub bytes_sent: u64,
    /// The error, naming the host and the path or step; also set, with another action, when the
    /// package was installed but its services could not be restarted on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `type: package` services on this host restarted on the new version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarted: Vec<String>,
}

/// Result of `deploy` and `deploy.rollback`: one entry per host, in the order asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeployResult {
    /// The package name.
    pub name: String,
    /// sha256 of the archive (absent for a rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub hosts: Vec<HostDeployment>,
    pub elapsed_ms: u64,
}

impl DeployResult {
    /// Hosts that failed, or whose services could not be restarted on the new version.
    pub fn failures(&self) -> impl Iterator<Item = &HostDeployment> {
        self.hosts
            .iter()
            .filter(|h| h.action == DeployAction::Failed || h.error.is_some())
    }
}

/// A consistent view of every service at one seq.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize, schemars::JsonSchema)]
pub struct Snapshot {
    pub seq: u64,
    pub services: Vec<ServiceEntry>,
}
