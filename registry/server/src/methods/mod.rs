//! The registry methods the server answers itself from the store, one file each; each `handle` takes
//! its method's params and returns its result (`harness_protocol::method`). `subscribe`,
//! `unsubscribe` and `cancel` act on the connection and live with it in `server.rs`; `token.*` act
//! on the server's tokens (`tokens.rs`).

use harness_protocol::{ErrorCode, ServiceKey, WireError};

pub(crate) mod events_list;
pub(crate) mod hello;
pub(crate) mod service_deregister;
pub(crate) mod service_get;
pub(crate) mod service_list;
pub(crate) mod service_register;
pub(crate) mod service_update;
pub(crate) mod token_create;
pub(crate) mod token_list;
pub(crate) mod token_revoke;

/// A service key from params, or `invalid_params` saying what is wrong with it.
fn key(project: String, name: String) -> Result<ServiceKey, WireError> {
    ServiceKey::new(project, name)
        .map_err(|e| WireError::new(ErrorCode::InvalidParams, e.to_string()))
}
