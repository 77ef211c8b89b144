//! `service.get`: one entry.

use super::key;
use harness_protocol::WireError;
use harness_protocol::method::{Method, ServiceGet};
use harness_store::Store;

pub(crate) async fn handle(
    store: &Store,
    p: <ServiceGet as Method>::Params,
) -> Result<<ServiceGet as Method>::Result, WireError> {
    let k = key(p.project, p.name)?;
    match store.get(&k).await? {
        Some(entry) => Ok(entry),
        None => Err(harness_store::store::StoreError::NotFound(k).into()),
    }
}
