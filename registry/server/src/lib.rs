//! The one TLS WebSocket port: TLS, the HTTP upgrade and token check, WebSocket sessions,
//! subscriptions over the store's live fan-out, and dispatch of requests.
//!
//! - [`server`]: [`serve`], sessions, the registry methods the server answers from the store.
//! - [`handler`]: the daemon adds methods with a [`Router`]; [`RequestContext`] for progress.
//! - `methods/`: the registry methods the server answers from the store, one file each.
//!
//! Wire types and the client are in [`harness_protocol`]; the store in [`harness_store`].
//!
//! A daemon serving an extra method, and a client calling it and following events:
//!
//! ```
//! use std::sync::Arc;
//! use harness_protocol::{Client, EventFilter, HarnessHome, SubscriptionItem, WireError};
//! use harness_server::{RequestContext, Router, ServerConfig};
//! use harness_store::{Retention, Store};
//!
//! #[derive(serde::Deserialize)]
//! struct StartParams { service: String }
//!
//! // daemon/src/handlers/start.rs
//! async fn start(p: StartParams, ctx: RequestContext) -> Result<serde_json::Value, WireError> {
//!     ctx.progress(serde_json::json!({ "starting": p.service })).await?;
//!     Ok(serde_json::json!({ "started": p.service }))
//! }
//!
//! smol::block_on(async {
//!     let dir = tempfile::tempdir().unwrap();
//!     let home = HarnessHome::new(dir.path());
//!     let creds = home.ensure_credentials(&[]).unwrap(); // CA, cert, token: created once, 0600
//!     let store = Store::open(home.path(harness_protocol::home::REGISTRY_DB), Retention::default()).await.unwrap();
//!     let router = Router::new().route("start", start);
//!     let server = harness_server::serve(ServerConfig::default(), &creds, store.clone(), Arc::new(router))
//!         .await.unwrap();
//!     home.write_daemon_info(&harness_protocol::DaemonInfo { url: server.url(), pid: std::process::id() }).unwrap();
//!
//!     let client = Client::connect_home(&home).await.unwrap(); // daemon.json + ca.pem + token
//!     let mut events = client.subscribe(EventFilter::default(), Some(0)).await.unwrap();
//!     let result = client.request("start", serde_json::json!({ "service": "api" })).await.unwrap();
//!     assert_eq!(result["started"], "api");
//!     store.emit(vec![harness_store::NewEvent { kind: harness_protocol::EventType::DaemonNotice, project: None,
//!         service: None, data: serde_json::json!({ "message": "hi" }) }]).await.unwrap();
//!     let SubscriptionItem::Event(event) = events.next().await.unwrap() else { panic!() };
//!     assert_eq!(event.seq, 1);
//! });
//! ```

mod admission;
pub mod dashboard;
mod deferred;
pub mod handler;
mod http;
mod methods;
pub mod server;
mod tokens;

pub use dashboard::{Asset, DashboardConfig};
pub use handler::{
    BoxFuture, Encoded, Handler, MethodHandler, NoMethods, RequestContext, Router, encode,
};
pub use server::{MetricsSource, ServerConfig, ServerError, ServerHandle, ServerStats, serve};
pub use tokens::Principal;
