//! The persistent service registry, its event log, and the TLS WebSocket wire.
