//! The persistent service registry, its event log, and the TLS WebSocket wire.
//!
//! - [`model`]: what exists ([`ServiceEntry`], its [`ServiceState`] machine).
//! - [`store`]: the crash-safe redb store and event log with group commit.
//! - [`event`]: event types, payloads and subscription filters.

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
