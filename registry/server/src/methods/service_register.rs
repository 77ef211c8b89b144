//! `service.register`: adds an entry (or replaces one, with `replace`).

use super::key;
use harness_protocol::ServiceEntry;
use harness_protocol::WireError;
use harness_protocol::method::{Method, ServiceRegister};
use harness_store::Store;

pub(crate) async fn handle(
    store: &Store,
    p: <ServiceRegister as Method>::Params,
) -> Result<<ServiceRegister as Method>::Result, WireError> {
    let k = key(p.project, p.name)?;
    let mut entry = ServiceEntry::new(k, p.location);
    entry.endpoints = p.endpoints;
    Ok(if p.replace {
        store.upsert(entry).await?
    } else {
        store.register(entry).await?
    })
}
