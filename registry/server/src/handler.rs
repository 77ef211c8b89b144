//! How the daemon adds its own methods to the one protocol on the one port.
//!
//! The server answers the registry methods itself ([`harness_protocol::wire::methods::REGISTRY`]) and passes
//! every other method to a [`Handler`]. [`Router`] is the usual handler: one typed async function per
//! method, so the daemon can keep one request handler per file.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;

use harness_protocol::method::Method;
use harness_protocol::wire::WireError;
use harness_store::store::Store;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A result already encoded as JSON text: a handler's result is serialized once, straight into the
/// response, without building a [`Value`] tree first (`harness status` of 2,500 services spent a
/// third of the daemon's time building, writing and dropping that tree).
pub type Encoded = Box<RawValue>;

/// Encodes a result for [`Handler::handle`].
pub fn encode(result: &impl Serialize) -> Result<Encoded, WireError> {
    serde_json::value::to_raw_value(result).map_err(WireError::internal)
}

/// What a handler knows about the request it serves.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// Unique per connection for the server's lifetime (for logs).
    pub connection: u64,
    pub peer: SocketAddr,
    /// The client's `User-Agent` at the upgrade, if it sent one.
    pub client: Option<Arc<str>>,
    pub request_id: u64,
    pub store: Store,
    /// The name of the token the request came with (`owner` for `$HARNESS_HOME/token`): who acted.
    pub token: String,
    /// That token's scope.
    pub scope: harness_protocol::admin::Scope,
    pub(crate) progress: Option<crate::server::ProgressSink>,
}

impl RequestContext {
    /// A context outside any connection, for calling handlers directly (tests, in-process callers).
    /// [`RequestContext::progress`] succeeds and discards.
    pub fn detached(store: Store) -> Self {
        RequestContext {
            connection: 0,
            peer: SocketAddr::from(([127, 0, 0, 1], 0)),
            client: None,
            request_id: 0,
            store,
            token: harness_protocol::admin::OWNER.to_owned(),
            scope: harness_protocol::admin::Scope::Admin,
            progress: None,
        }
    }

    /// Sends `{"id": request_id, "progress": data}` before the final response (the daemon's
    /// `deploy` and `deploy.rollback` send their steps this way). Not persisted.
    ///
    /// The first progress message turns the request into a stream: the request timeout no longer
    /// applies, and it runs until the handler returns, the client sends `cancel {id}`, or the
    /// connection closes (then the handler's future is dropped). Sending waits while the client's
    /// queue is full, so a slow reader slows the stream instead of growing memory. An error means
    /// the client is gone: stop.
    pub async fn progress(&self, data: impl serde::Serialize) -> Result<(), WireError> {
        match &self.progress {
            Some(sink) => sink.send(self.request_id, data).await,
            None => Ok(()),
        }
    }
}

/// Serves methods beyond the registry's. Return [`WireError::method_not_found`] for unknown ones.
///
/// Each call runs in its own task under the server's request timeout (until its first
/// [`RequestContext::progress`]); a timed-out, cancelled or disconnected call is dropped at its next
/// await point, so handlers must clean up in `Drop` or finish quickly.
pub trait Handler: Send + Sync + 'static {
    fn handle<'a>(
        &'a self,
        method: &'a str,
        params: Value,
        ctx: RequestContext,
    ) -> BoxFuture<'a, Result<Encoded, WireError>>;
}

/// A handler without extra methods.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMethods;

impl Handler for NoMethods {
    fn handle<'a>(
        &'a self,
        method: &'a str,
        _params: Value,
        _ctx: RequestContext,
    ) -> BoxFuture<'a, Result<Encoded, WireError>> {
        Box::pin(async move { Err(WireError::method_not_found(method)) })
    }
}

type Route = Arc<
    dyn Fn(Value, RequestContext) -> BoxFuture<'static, Result<Encoded, WireError>> + Send + Sync,
>;

/// Maps method names to typed async functions.
///
/// ```
/// # use harness_protocol::WireError;
/// # use harness_server::{RequestContext, Router};
/// #[derive(serde::Deserialize)]
/// struct StartParams { service: String }
/// async fn start(p: StartParams, _ctx: RequestContext) -> Result<serde_json::Value, WireError> {
///     Ok(serde_json::json!({ "started": p.service }))
/// }
/// let router = Router::new().route("start", start);
/// assert!(router.methods().any(|m| m == "start"));
/// ```
#[derive(Clone, Default)]
pub struct Router {
    routes: BTreeMap<String, Route>,
}

impl Router {
    pub fn new() -> Self {
        Router::default()
    }

    /// Adds `method`. Params are decoded into `P` (a mismatch is `invalid_params` naming the field);
    /// the result is encoded from `R`.
    pub fn route<P, R, F, Fut>(mut self, method: &str, f: F) -> Self
    where
        P: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
        F: Fn(P, RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, WireError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let route: Route = Arc::new(move |params: Value, ctx: RequestContext| {
            let f = f.clone();
            Box::pin(async move {
                let p: P = decode_params(params)?;
                let r = f(p, ctx).await?;
                encode(&r)
            })
        });
        self.routes.insert(method.to_string(), route);
        self
    }

    /// Adds method `M`: `f` takes `M::Params` and returns `M::Result`, the types the client's
    /// `call::<M>` sends and expects, so both ends are checked by the compiler. Params are decoded
    /// as in [`Router::route`] (`invalid_params` names the field's path).
    pub fn method<M: Method>(self, f: impl MethodHandler<M>) -> Self {
        let f = Arc::new(f);
        self.route(M::NAME, move |p: M::Params, ctx: RequestContext| {
            let f = f.clone();
            async move { f.call(p, ctx).await }
        })
    }

    /// [`Router::method`] for a handler that returns its result already encoded
    /// ([`harness_protocol::Encoded`]`<M::Result>`): sent as it is, not encoded again.
    pub fn method_encoded<M, F, Fut>(mut self, f: F) -> Self
    where
        M: Method,
        F: Fn(M::Params, RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<harness_protocol::Encoded<M::Result>, WireError>>
            + Send
            + 'static,
    {
        let f = Arc::new(f);
        let route: Route = Arc::new(move |params: Value, ctx: RequestContext| {
            let f = f.clone();
            Box::pin(async move {
                let p: M::Params = decode_params(params)?;
                Ok(f(p, ctx).await?.into_json())
            })
        });
        self.routes.insert(M::NAME.to_string(), route);
        self
    }

    pub fn methods(&self) -> impl Iterator<Item = &str> {
        self.routes.keys().map(String::as_str)
    }
}

/// A handler of method `M`: any `Fn(M::Params, RequestContext) -> impl Future<Output =
/// Result<M::Result, WireError>>` (see [`Router::method`]).
pub trait MethodHandler<M: Method>: Send + Sync + 'static {
    fn call(
        &self,
        params: M::Params,
        ctx: RequestContext,
    ) -> BoxFuture<'static, Result<M::Result, WireError>>;
}

impl<M, F, Fut> MethodHandler<M> for F
where
    M: Method,
    F: Fn(M::Params, RequestContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<M::Result, WireError>> + Send + 'static,
{
    fn call(
        &self,
        params: M::Params,
        ctx: RequestContext,
    ) -> BoxFuture<'static, Result<M::Result, WireError>> {
        Box::pin(self(params, ctx))
    }
}

/// Decodes params. Absent params arrive as `null`: that suits `()` and `Option` params, and structs
/// whose fields all have defaults get `{}` instead. A mismatch names the field's path
/// (`invalid params: since: invalid type: string "soon", expected u64`).
pub fn decode_params<P: DeserializeOwned>(params: Value) -> Result<P, WireError> {
    if params.is_null() {
        return decode(Value::Null)
            .or_else(|e| decode(Value::Object(Default::default())).map_err(|_| e));
    }
    decode(params)
}

fn decode<P: DeserializeOwned>(params: Value) -> Result<P, WireError> {
    serde_path_to_error::deserialize(params).map_err(|e| {
        let path = e.path().to_string();
        if path == "." || path.is_empty() {
            WireError::invalid_params(e.into_inner())
        } else {
            WireError::invalid_params(format!("{path}: {}", e.into_inner()))
        }
    })
}

impl Handler for Router {
    fn handle<'a>(
        &'a self,
        method: &'a str,
        params: Value,
        ctx: RequestContext,
    ) -> BoxFuture<'a, Result<Encoded, WireError>> {
        match self.routes.get(method) {
            Some(route) => route(params, ctx),
            None => Box::pin(async move { Err(WireError::method_not_found(method)) }),
        }
    }
}
