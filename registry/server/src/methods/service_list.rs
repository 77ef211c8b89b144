//! `service.list`: the entries of one project or all, at one seq.

use harness_protocol::WireError;
use harness_protocol::method::{Method, ServiceList};
use harness_protocol::wire;
use harness_store::Store;

pub(crate) async fn handle(
    store: &Store,
    p: <ServiceList as Method>::Params,
) -> Result<<ServiceList as Method>::Result, WireError> {
    let snap = store.snapshot().await?;
    let services = match p.project {
        Some(project) => snap
            .services
            .into_iter()
            .filter(|e| e.project == project)
            .collect(),
        None => snap.services,
    };
    Ok(wire::ListServicesResult {
        seq: snap.seq,
        services,
    })
}
