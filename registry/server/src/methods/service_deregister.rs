//! `service.deregister`: removes an entry and answers it.

use super::key;
use harness_protocol::WireError;
use harness_protocol::method::{Method, ServiceDeregister};
use harness_store::Store;

pub(crate) async fn handle(
    store: &Store,
    p: <ServiceDeregister as Method>::Params,
) -> Result<<ServiceDeregister as Method>::Result, WireError> {
    let k = key(p.project, p.name)?;
    Ok(store.deregister(&k).await?)
}
