//! The harness protocol: everything a client and the daemon agree on, and the client itself.
//!
//! - [`wire`]: every message, method name, error code and close code of the protocol, and the JSON
//!   Schemas generated from them (docs/protocol/).
//! - [`model`]: what exists ([`ServiceEntry`], its [`ServiceState`] machine), as the wire carries it.
//! - [`event`]: event types, payloads (including deployment progress) and subscription filters.
//! - [`method`]: typed methods: one type per method naming its params and result ([`Method`]).
//! - [`operation`]: operations (start, stop, deploy, …) with their steps and outcome.
//! - [`places`]: where services run: host checks and WireGuard meshes.
//! - [`home`]: the state directory and the CA, certificate and token in it.
//! - [`tls`]: the rustls configurations both ends use (pinned CA, no system roots).
//! - [`admin`]: token scopes and named tokens, resource samples, the daemon's own figures.
//! - [`client`]: the async client, with [`EventStream`] for resumable subscriptions.
//!
//! The server is `harness-server`, the store `harness-store`; this crate depends on neither.

pub mod admin;
pub mod client;
pub mod drift;
pub mod event;
pub mod home;
pub mod method;
pub mod model;
pub mod oneshot;
pub mod operation;
pub mod places;
pub mod tls;
pub mod wire;

pub use client::{
    Call, CallItem, Client, ClientError, ConnectOptions, EventStream, Subscription,
    SubscriptionItem,
};
pub use event::{Event, EventFilter, EventType};
pub use home::{Credentials, DaemonInfo, HarnessHome, HomeError};
pub use method::{Empty, Encoded, Method};
pub use model::{
    Endpoint, Health, HealthStatus, Location, ModelError, Runtime, ServiceEntry, ServiceKey,
    ServiceState,
};
pub use oneshot::OneShot;
pub use wire::{ErrorCode, Snapshot, WireError};
