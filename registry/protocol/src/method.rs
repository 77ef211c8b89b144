//! Typed methods: one zero-sized type per method of the protocol, naming its params and result.
//!
//! The client calls `client.call::<Status>(&params)` and gets a [`StatusResult`](wire::StatusResult);
//! the daemon registers `router.method::<Status>(handler)`, and the compiler checks that the
//! handler takes the params and returns the result the client expects. The names are the
//! [`wire::methods`] constants; the JSON Schemas in docs/protocol/ are generated from these same
//! types ([`wire::schemas`], and [`all`] lists every method's pair).
//!
//! `deploy`, `deploy.rollback` and a streaming `exec` send progress items before their result;
//! they are untyped JSON on the wire ([`crate::CallItem::Progress`]): [`wire::DeployProgress`] and
//! [`wire::ExecProgress`] in practice. `logs` is a sequence of plain calls on a session.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::admin::{self, Scope};
use crate::model::ServiceEntry;
use crate::wire::{self, methods};

/// A method of the protocol: its name on the wire and the types of its params and result.
pub trait Method: Send + Sync + 'static {
    const NAME: &'static str;
    type Params: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static;
    type Result: Serialize + DeserializeOwned + JsonSchema + Send + 'static;
    /// The least token scope that may call it (ADR 0037). A method that does not say needs
    /// [`Scope::Admin`]: a new method is closed until someone opens it.
    const SCOPE: Scope = Scope::Admin;
}

/// `{}`: the params of methods that take none and the result of methods that return nothing.
/// Absent (`null`) params are accepted too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Empty {}

macro_rules! method {
    ($(#[$doc:meta])* $ty:ident = $name:path, $params:ty => $result:ty $(, $scope:ident)?) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $ty;
        impl Method for $ty {
            const NAME: &'static str = $name;
            type Params = $params;
            type Result = $result;
            $(const SCOPE: Scope = Scope::$scope;)?
        }
    };
}

// --- answered by the server itself from the store ---------------------------------------------------

method!(
    /// `hello`: protocol version, server name, last event seq.
    Hello = methods::HELLO, Empty => wire::HelloResult, Read);
method!(
    /// `service.list`: the registry's entries, of one project or all.
    ServiceList = methods::SERVICE_LIST, wire::ListServicesParams => wire::ListServicesResult, Read);
method!(
    /// `service.get`: one entry.
    ServiceGet = methods::SERVICE_GET, wire::ServiceRef => ServiceEntry, Read);
method!(
    /// `service.register`: a new entry (or a replacement with `replace`).
    ServiceRegister = methods::SERVICE_REGISTER, wire::RegisterParams => ServiceEntry, Admin);
method!(
    /// `service.update`: a state transition, location, endpoints, runtime or health.
    ServiceUpdate = methods::SERVICE_UPDATE, wire::UpdateParams => ServiceEntry, Admin);
method!(
    /// `service.deregister`: removes an entry; the result is the removed entry.
    ServiceDeregister = methods::SERVICE_DEREGISTER, wire::ServiceRef => ServiceEntry, Admin);
method!(
    /// `events.list`: a page of retained events (no subscription).
    EventsList = methods::EVENTS_LIST, wire::EventsParams => wire::EventsResult, Read);
method!(
    /// `subscribe`: opens a subscription. Use [`crate::Client::subscribe`], which routes the events
    /// that follow; a plain `call` gets the result only.
    Subscribe = methods::SUBSCRIBE, wire::SubscribeParams => wire::SubscribeResult, Read);
method!(
    /// `unsubscribe`: closes a subscription of this connection.
    Unsubscribe = methods::UNSUBSCRIBE, wire::UnsubscribeParams => Empty, Read);
method!(
    /// `cancel`: cancels a running request of this connection; it answers `cancelled`.
    Cancel = methods::CANCEL, wire::CancelParams => wire::CancelResult, Read);

// --- served by the daemon's handlers ------------------------------------------------------------------

method!(
    /// `start`: apply a project (idempotent).
    Start = methods::START, wire::StartParams => wire::ApplyResult, Operate);
method!(
    /// `stop`: stop services of a project (or the project).
    Stop = methods::STOP, wire::StopParams => wire::StopResult, Operate);
method!(
    /// `restart`: restart services of an applied project.
    Restart = methods::RESTART, wire::RestartParams => wire::ApplyResult, Operate);
method!(
    /// `status`: the registry's entries as the orchestrator sees them.
    Status = methods::STATUS, wire::StatusParams => wire::StatusResult, Read);
method!(
    /// `logs`: one batch of log lines; call again with `session` for more (with `follow`, a call
    /// waits up to 10 s for new lines). No progress items.
    Logs = methods::LOGS, wire::LogsParams => wire::LogsResult, Read);
method!(
    /// `exec`: a one-off command in a service's context. Without `stream`, its output (up to
    /// 16 MiB per stream) and exit status are in the result, sent when the command has exited;
    /// with `stream`, output goes out as [`wire::ExecProgress`] and input comes as [`ExecInput`].
    Exec = methods::EXEC, wire::ExecParams => wire::ExecResult, Admin);
method!(
    /// `exec.input`: stdin bytes, end of file, a window size or a signal for a streaming `exec`
    /// on the same connection; answered once the bytes are written to the program's stdin.
    ExecInput = methods::EXEC_INPUT, wire::ExecInputParams => Empty, Admin);
method!(
    /// `health`: each service's health checks.
    Health = methods::HEALTH, wire::HealthParams => wire::HealthResult, Read);
method!(
    /// `daemon.status`: the daemon's pid, version, address, uptime, services and limits.
    DaemonStatus = methods::DAEMON_STATUS, Empty => wire::DaemonStatusResult, Read);
method!(
    /// `daemon.stop`: the daemon answers, then shuts down.
    DaemonStop = methods::DAEMON_STOP, wire::DaemonStopParams => Empty, Admin);
method!(
    /// `deploy`: ship a package to hosts; progress items are [`wire::DeployProgress`].
    Deploy = methods::DEPLOY, wire::DeployParams => wire::DeployResult, Admin);
method!(
    /// `deploy.rollback`: switch hosts back to a kept release.
    DeployRollback = methods::DEPLOY_ROLLBACK, wire::RollbackParams => wire::DeployResult, Admin);
method!(
    /// `logs.clear`: delete services' log files.
    LogsClear = methods::LOGS_CLEAR, wire::LogsClearParams => wire::LogsClearResult, Operate);
method!(
    /// `token.create`: a named token with a scope; the result carries its secret, once.
    TokenCreate = methods::TOKEN_CREATE, admin::TokenCreateParams => admin::TokenCreateResult, Admin);
method!(
    /// `token.list`: the named tokens (never their secrets).
    TokenList = methods::TOKEN_LIST, Empty => admin::TokenListResult, Admin);
method!(
    /// `token.revoke`: removes a named token and closes its open connections.
    TokenRevoke = methods::TOKEN_REVOKE, admin::TokenRevokeParams => admin::TokenRevokeResult, Admin);
method!(
    /// `top`: what each running service uses, read where it runs.
    Top = methods::TOP, admin::TopParams => admin::TopResult, Read);
method!(
    /// `daemon.stats`: the daemon's own figures (requests, events, connections, fds, memory,
    /// store, logs, SSH connections).
    DaemonStats = methods::DAEMON_STATS, Empty => admin::DaemonStatsResult, Read);
method!(
    /// `daemon.config`: the daemon's effective settings and where each came from.
    DaemonConfig = methods::DAEMON_CONFIG, Empty => admin::DaemonConfigResult, Read);
method!(
    /// `daemon.env`: the daemon's environment, secret-looking values masked.
    DaemonEnv = methods::DAEMON_ENV, Empty => admin::DaemonEnvResult, Admin);
method!(
    /// `watch`: watch services' files (`watch:`).
    Watch = methods::WATCH, wire::WatchParams => wire::WatchResult, Operate);
method!(
    /// `drift`: the registry against what runs everywhere (ADR 0036); read-only.
    Drift = methods::DRIFT, crate::drift::DriftParams => crate::drift::DriftResult, Read);
method!(
    /// `sync`: resolve drift findings (read-only with `dry_run`; kills only with `kill`).
    DriftSync = methods::SYNC, crate::drift::SyncParams => crate::drift::SyncResult, Operate);
method!(
    /// `hosts.check`: each host of a project (applied, or the services file sent): reachable,
    /// authenticated, `sudo -n`, docker, latency; read-only.
    HostsCheck = methods::HOSTS_CHECK, crate::places::HostsCheckParams => crate::places::HostsCheckResult, Read);
method!(
    /// `network.list`: an applied project's WireGuard meshes, each member's peers as `wg show`
    /// reports them; read-only.
    NetworkList = methods::NETWORK_LIST, crate::places::NetworkListParams => crate::places::NetworkListResult, Read);

method!(
    /// `ops.list`: operations, newest first, without their steps.
    OpsList = methods::OPS_LIST, crate::operation::OpsListParams => crate::operation::OpsListResult, Read);
method!(
    /// `ops.get`: one operation with its steps.
    OpsGet = methods::OPS_GET, crate::operation::OpRef => crate::operation::Operation, Read);
method!(
    /// `ops.cancel`: ends a running operation; answers it once it has ended.
    OpsCancel = methods::OPS_CANCEL, crate::operation::OpsCancelParams => crate::operation::Operation, Operate);
method!(
    /// `ops.wait`: answers the operation once it has ended (or at `timeout_ms`).
    OpsWait = methods::OPS_WAIT, crate::operation::OpsWaitParams => crate::operation::Operation, Read);

/// A method's name with the JSON Schemas of its params and result.
#[derive(Debug, Clone)]
pub struct Described {
    pub name: &'static str,
    pub params: Value,
    pub result: Value,
    /// The least token scope that may call it.
    pub scope: Scope,
}

/// [`Described`] for `M`, from its types.
pub fn describe<M: Method>() -> Described {
    let schema = |s: schemars::Schema| serde_json::to_value(s).unwrap_or(Value::Null);
    Described {
        name: M::NAME,
        params: schema(schemars::schema_for!(M::Params)),
        result: schema(schemars::schema_for!(M::Result)),
        scope: M::SCOPE,
    }
}

/// Every method of the protocol, in one list: [`all`] (with the schemas) and
/// [`required_scope`] (without them) are both made from it.
macro_rules! every_method {
    ($($m:ident),* $(,)?) => {
        /// Every method of the protocol (the server's first, then the daemon's).
        pub fn all() -> Vec<Described> {
            vec![$(describe::<$m>()),*]
        }

        /// Every method's name and least scope: what the server checks on each call. Kept apart
        /// from [`all`] so that a server never generates (nor links) the JSON Schemas to look a
        /// scope up.
        const SCOPES: &[(&str, Scope)] = &[$(($m::NAME, $m::SCOPE)),*];
    };
}

every_method!(
    Hello,
    ServiceList,
    ServiceGet,
    ServiceRegister,
    ServiceUpdate,
    ServiceDeregister,
    EventsList,
    Subscribe,
    Unsubscribe,
    Cancel,
    TokenCreate,
    TokenList,
    TokenRevoke,
    Start,
    Stop,
    Restart,
    Status,
    Logs,
    Exec,
    ExecInput,
    Health,
    DaemonStatus,
    DaemonStop,
    Deploy,
    DeployRollback,
    LogsClear,
    Watch,
    OpsList,
    OpsGet,
    OpsCancel,
    OpsWait,
    Drift,
    DriftSync,
    HostsCheck,
    NetworkList,
    Top,
    DaemonStats,
    DaemonConfig,
    DaemonEnv,
);

/// The least scope that may call `method`, from the [`Method`] types in [`all`]; a name no type
/// declares (a daemon's untyped route, a typo) needs [`Scope::Admin`].
pub fn required_scope(method: &str) -> Scope {
    SCOPES
        .iter()
        .find(|(name, _)| *name == method)
        .map_or(Scope::Admin, |(_, scope)| *scope)
}

/// A result of type `T` already encoded as JSON: what a handler returns when it has the result's
/// JSON at hand and building `T` only to encode it again would be the cost (`status` answers the
/// registry's entries as the store holds them, see [`Encoded::status`]). The type parameter keeps
/// the compiler's check: a handler of `M` returns `Encoded<M::Result>`.
pub struct Encoded<T> {
    json: Box<serde_json::value::RawValue>,
    _result: std::marker::PhantomData<fn() -> T>,
}

impl<T: Serialize> Encoded<T> {
    /// Encodes `value`.
    pub fn new(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Encoded {
            json: serde_json::value::to_raw_value(value)?,
            _result: std::marker::PhantomData,
        })
    }
}

impl<T> Encoded<T> {
    /// The JSON text.
    pub fn into_json(self) -> Box<serde_json::value::RawValue> {
        self.json
    }
}

impl Encoded<wire::StatusResult> {
    /// A [`wire::StatusResult`] from its entries as encoded JSON: each one the encoding of a
    /// [`ServiceEntry`] (the registry store keeps each entry as `serde_json` wrote it). The
    /// entries are copied as they are, not parsed again.
    pub fn status(
        services: &[Box<serde_json::value::RawValue>],
        resources: &[admin::ResourceSample],
    ) -> Result<Self, serde_json::Error> {
        /// [`wire::StatusResult`]'s fields, in its order, `resources` left out when empty.
        #[derive(Serialize)]
        struct Fields<'a> {
            services: &'a [Box<serde_json::value::RawValue>],
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            resources: &'a [admin::ResourceSample],
        }
        Ok(Encoded {
            json: serde_json::value::to_raw_value(&Fields {
                services,
                resources,
            })?,
            _result: std::marker::PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::ResourceSample;
    use crate::model::{Location, ServiceKey};
    use crate::wire::StatusResult;

    fn entry(name: &str) -> ServiceEntry {
        let key = ServiceKey::new("p", name).expect("valid key");
        ServiceEntry::new(key, Location::Local)
    }

    /// `Encoded::status` writes what serde writes for the same `StatusResult`, with and without
    /// resources, and it decodes back to it.
    #[test]
    fn encoded_status_is_the_status_result() {
        let services = vec![entry("a"), entry("b")];
        let stored: Vec<_> = services
            .iter()
            .map(|e| serde_json::value::to_raw_value(e).expect("encodes"))
            .collect();
        let sample = ResourceSample {
            project: "p".into(),
            service: "a".into(),
            place: "local".into(),
            pid: Some(7),
            ..Default::default()
        };
        for resources in [vec![], vec![sample]] {
            let typed = StatusResult {
                services: services.clone(),
                resources: resources.clone(),
            };
            let encoded = Encoded::status(&stored, &resources).expect("encodes");
            let json = encoded.into_json();
            assert_eq!(json.get(), serde_json::to_string(&typed).expect("encodes"));
            let back: StatusResult = serde_json::from_str(json.get()).expect("decodes");
            assert_eq!(back, typed);
        }
        let none = Encoded::status(&[], &[]).expect("encodes").into_json();
        assert_eq!(none.get(), r#"{"services":[]}"#);
    }
}
