//! The persistent service registry, its event log, and the TLS WebSocket wire.
//!
//! - [`model`]: what exists ([`ServiceEntry`], its [`ServiceState`] machine).
//! - [`store`]: the crash-safe redb store and event log with group commit.
//! - [`event`]: event types, payloads and subscription filters.
//! - [`wire`]: every message, method name, error code and close code of the protocol.
//! - [`home`]: the state directory and the CA, certificate and token in it.
//! - [`server`] / [`handler`]: the one TLS WebSocket port; the daemon adds methods with a [`Router`].
//! - [`client`]: the async client, with [`EventStream`] for resumable subscriptions.
//!
//! A daemon serving an extra method, and a client calling it and following events:
//!
//! ```
//! use std::sync::Arc;
//! use registry::{Client, EventFilter, HarnessHome, RequestContext, Retention, Router, ServerConfig,
//!                Store, SubscriptionItem, WireError};
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
//!     let store = Store::open(home.path(registry::home::REGISTRY_DB), Retention::default()).await.unwrap();
//!     let router = Router::new().route("start", start);
//!     let server = registry::serve(ServerConfig::default(), &creds, store.clone(), Arc::new(router))
//!         .await.unwrap();
//!     home.write_daemon_info(&registry::DaemonInfo { url: server.url(), pid: std::process::id() }).unwrap();
//!
//!     let client = Client::connect_home(&home).await.unwrap(); // daemon.json + ca.pem + token
//!     let mut events = client.subscribe(EventFilter::default(), Some(0)).await.unwrap();
//!     let result = client.request("start", serde_json::json!({ "service": "api" })).await.unwrap();
//!     assert_eq!(result["started"], "api");
//!     store.emit(vec![registry::NewEvent { kind: registry::EventType::DaemonNotice, project: None,
//!         service: None, data: serde_json::json!({ "message": "hi" }) }]).await.unwrap();
//!     let SubscriptionItem::Event(event) = events.next().await.unwrap() else { panic!() };
//!     assert_eq!(event.seq, 1);
//! });
//! ```

pub mod client;
pub mod event;
pub mod handler;
pub mod home;
mod http;
mod hub;
pub mod model;
pub mod server;
pub mod store;
pub mod tls;
pub mod wire;

pub use client::{
    Call, CallItem, Client, ClientError, ConnectOptions, EventStream, Subscription,
    SubscriptionItem,
};
pub use event::{Event, EventFilter, EventType};
pub use handler::{BoxFuture, Handler, NoMethods, RequestContext, Router};
pub use home::{Credentials, DaemonInfo, HarnessHome, HomeError};
pub use model::{
    Endpoint, Health, HealthStatus, Location, ModelError, Runtime, ServiceEntry, ServiceKey,
    ServiceState,
};
pub use server::{ServerConfig, ServerError, ServerHandle, serve};
pub use store::{NewEvent, Retention, Snapshot, Store, StoreError};
pub use wire::{ErrorCode, WireError};
