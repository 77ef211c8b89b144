//! What exists, durably: the crash-safe redb store and event log with group commit, and the live
//! fan-out of committed events to subscribers.
//!
//! - [`store`]: [`Store`], the one writer thread, the event log and its retention.
//! - [`operations`]: operations (ADR 0035), kept and pruned like events.
//! - [`hub`]: the in-process fan-out of committed events; the server's subscriptions read it.
//!
//! The types it stores and emits (services, events, snapshots) are the wire's, from
//! [`harness_protocol`]; where the files live is [`harness_protocol::home`].

pub mod hub;
pub mod operations;
pub mod store;

pub use store::{NewEvent, Retention, Snapshot, Store, StoreError, StoredToken};
