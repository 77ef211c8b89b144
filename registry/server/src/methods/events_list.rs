//! `events.list`: a page of retained events, without a subscription.

use harness_protocol::WireError;
use harness_protocol::method::{EventsList, Method};
use harness_protocol::wire;
use harness_store::Store;

pub(crate) async fn handle(
    store: &Store,
    p: <EventsList as Method>::Params,
) -> Result<<EventsList as Method>::Result, WireError> {
    let limit = p.limit.unwrap_or(1000).min(10_000);
    let pruned_through = store.pruned_through().await?;
    let events = store.events_after(p.since, limit).await?;
    Ok(wire::EventsResult {
        events,
        pruned_through,
        last_seq: store.last_seq(),
    })
}
