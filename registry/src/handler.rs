//! How the daemon adds its own methods to the one protocol on the one port.
//!
//! The server answers the registry methods itself ([`crate::wire::methods::REGISTRY`]) and passes
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

use crate::store::Store;
use crate::wire::WireError;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a handler knows about the request it serves.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// Unique per connection for the server's lifetime (for logs).
    pub connection: u64,
    pub peer: SocketAddr,
    pub request_id: u64,
    pub store: Store,
}

/// Serves methods beyond the registry's. Return [`WireError::method_not_found`] for unknown ones.
///
/// Each call runs in its own task under the server's request timeout; a dropped (timed-out or
/// disconnected) call is cancelled at its next await point.
pub trait Handler: Send + Sync + 'static {
    fn handle<'a>(
        &'a self,
        method: &'a str,
        params: Value,
        ctx: RequestContext,
    ) -> BoxFuture<'a, Result<Value, WireError>>;
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
    ) -> BoxFuture<'a, Result<Value, WireError>> {
        Box::pin(async move { Err(WireError::method_not_found(method)) })
    }
}

type Route = Arc<
    dyn Fn(Value, RequestContext) -> BoxFuture<'static, Result<Value, WireError>> + Send + Sync,
>;

/// Maps method names to typed async functions.
///
/// ```
/// # use registry::{Router, RequestContext, WireError};
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
                // `null` params mean "none": let `{}`-shaped structs with defaults accept them.
                let params = if params.is_null() {
                    Value::Object(Default::default())
                } else {
                    params
                };
                let p: P = serde_json::from_value(params).map_err(WireError::invalid_params)?;
                let r = f(p, ctx).await?;
                serde_json::to_value(r).map_err(WireError::internal)
            })
        });
        self.routes.insert(method.to_string(), route);
        self
    }

    pub fn methods(&self) -> impl Iterator<Item = &str> {
        self.routes.keys().map(String::as_str)
    }
}

impl Handler for Router {
    fn handle<'a>(
        &'a self,
        method: &'a str,
        params: Value,
        ctx: RequestContext,
    ) -> BoxFuture<'a, Result<Value, WireError>> {
        match self.routes.get(method) {
            Some(route) => route(params, ctx),
            None => Box::pin(async move { Err(WireError::method_not_found(method)) }),
        }
    }
}
