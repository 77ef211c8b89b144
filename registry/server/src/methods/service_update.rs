//! `service.update`: a state transition (checked by the state machine), location, endpoints,
//! runtime or health of an entry.

use super::key;
use harness_protocol::WireError;
use harness_protocol::method::{Method, ServiceUpdate};
use harness_store::Store;

pub(crate) async fn handle(
    store: &Store,
    p: <ServiceUpdate as Method>::Params,
) -> Result<<ServiceUpdate as Method>::Result, WireError> {
    let k = key(p.project.clone(), p.name.clone())?;
    let entry = store
        .modify(&k, move |e| {
            if let Some(state) = p.state
                && state != e.state
            {
                e.transition(state)?;
            }
            if let Some(location) = p.location {
                e.location = location;
            }
            if let Some(endpoints) = p.endpoints {
                e.endpoints = endpoints;
            }
            if let Some(runtime) = p.runtime {
                e.runtime = runtime;
            }
            if let Some(health) = p.health {
                e.set_health(health)?;
            }
            Ok(())
        })
        .await?;
    Ok(entry)
}
