//! `hello`: protocol version, server name and the last event seq.

use harness_protocol::WireError;
use harness_protocol::method::{Hello, Method};
use harness_protocol::wire;
use harness_store::Store;

pub(crate) async fn handle(
    store: &Store,
    _p: <Hello as Method>::Params,
) -> Result<<Hello as Method>::Result, WireError> {
    Ok(wire::HelloResult {
        protocol: wire::PROTOCOL_VERSION,
        server: format!("harness-registry {}", env!("CARGO_PKG_VERSION")),
        last_seq: store.last_seq(),
    })
}
