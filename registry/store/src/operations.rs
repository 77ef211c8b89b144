//! Operations in the store (ADR 0035): table `operations` (id → JSON [`Operation`]) and
//! `meta.last_operation`, the highest id ever written, so that ids are never reused even after
//! retention removed every operation.
//!
//! Writes go through the store's one writer (group commit): [`Store::put_operation`] replaces the
//! whole operation and appends one `operation` event per change in the same transaction.
//! Retention follows the events': operations that ended longer ago than `max_age` go, and beyond
//! `max_operations` the oldest ended ones go. A running operation is never pruned.

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};
use serde_json::Value;

use harness_protocol::event::EventType;
use harness_protocol::operation::{Operation, OperationChange};

use crate::store::{NewEvent, Retention, Store, StoreError, storage};

pub(crate) const OPERATIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("operations");

pub(crate) const LAST_OPERATION: &str = "last_operation";

/// The events for `changes` of `op`: `None` is a change of the head (begun, ended), `Some(i)` of
/// step `i`.
pub(crate) fn change_events(op: &Operation, changes: &[Option<usize>]) -> Vec<NewEvent> {
    changes
        .iter()
        .map(|&index| {
            let step = index.and_then(|i| op.steps.get(i)).cloned();
            let data = OperationChange {
                id: op.id,
                kind: op.kind,
                project: op.project.clone(),
                outcome: op.outcome.clone(),
                index: step.as_ref().and(index),
                step,
            };
            let service = data.step.as_ref().and_then(|s| s.service.clone());
            NewEvent {
                kind: EventType::Operation,
                project: op.project.clone(),
                service,
                data: serde_json::to_value(&data).unwrap_or(Value::Null),
            }
        })
        .collect()
}

/// Writes `op` in the writer's transaction.
pub(crate) fn write(
    table: &mut redb::Table<u64, &[u8]>,
    meta: &mut redb::Table<&str, u64>,
    op: &Operation,
) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(op).map_err(storage)?;
    table.insert(op.id, bytes.as_slice()).map_err(storage)?;
    let last = meta
        .get(LAST_OPERATION)
        .map_err(storage)?
        .map(|v| v.value())
        .unwrap_or(0);
    if op.id > last {
        meta.insert(LAST_OPERATION, op.id).map_err(storage)?;
    }
    Ok(())
}

/// Removes ended operations past retention (checked with the events' age check, once a second).
pub(crate) fn prune(
    table: &mut redb::Table<u64, &[u8]>,
    retention: Retention,
) -> Result<(), StoreError> {
    let cutoff = jiff::Timestamp::now()
        .checked_sub(
            jiff::SignedDuration::try_from(retention.max_age).unwrap_or(jiff::SignedDuration::MAX),
        )
        .unwrap_or(jiff::Timestamp::MIN);
    let mut excess = table
        .len()
        .map_err(storage)?
        .saturating_sub(retention.max_operations);
    let mut doomed = Vec::new();
    for item in table.iter().map_err(storage)? {
        let (k, v) = item.map_err(storage)?;
        #[derive(serde::Deserialize)]
        struct Head {
            started_at: jiff::Timestamp,
            ended_at: Option<jiff::Timestamp>,
        }
        let head: Head = serde_json::from_slice(v.value()).map_err(storage)?;
        let Some(ended) = head.ended_at else {
            continue;
        };
        if excess > 0 {
            excess -= 1;
            doomed.push(k.value());
        } else if ended < cutoff {
            doomed.push(k.value());
        } else if head.started_at >= cutoff {
            // Ids grow with time: everything after this one is younger.
            break;
        }
    }
    for id in doomed {
        table.remove(id).map_err(storage)?;
    }
    Ok(())
}

impl Store {
    /// Writes `op` (new or changed) and one `operation` event per entry of `changes` (`None`: the
    /// head changed, `Some(i)`: step `i`), in one transaction.
    pub async fn put_operation(
        &self,
        op: Operation,
        changes: Vec<Option<usize>>,
    ) -> Result<std::ops::Range<u64>, StoreError> {
        let events = change_events(&op, &changes);
        Ok(self
            .submit(crate::store::Op::PutOperation(Box::new(op), events))
            .await?
            .seqs)
    }

    /// One operation.
    pub async fn operation(&self, id: u64) -> Result<Option<Operation>, StoreError> {
        self.read(move |txn| {
            let table = match txn.open_table(OPERATIONS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(storage(e)),
            };
            match table.get(id).map_err(storage)? {
                Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(storage)?)),
                None => Ok(None),
            }
        })
        .await
    }

    /// Operations for which `keep` holds, newest first, at most `limit`.
    pub async fn operations(
        &self,
        limit: usize,
        keep: impl Fn(&Operation) -> bool + Send + 'static,
    ) -> Result<Vec<Operation>, StoreError> {
        self.read(move |txn| {
            let table = match txn.open_table(OPERATIONS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(storage(e)),
            };
            let mut out = Vec::new();
            for item in table.iter().map_err(storage)?.rev() {
                if out.len() >= limit {
                    break;
                }
                let (_, v) = item.map_err(storage)?;
                let op: Operation = serde_json::from_slice(v.value()).map_err(storage)?;
                if keep(&op) {
                    out.push(op);
                }
            }
            Ok(out)
        })
        .await
    }

    /// The highest operation id ever written (0 if none).
    pub async fn last_operation_id(&self) -> Result<u64, StoreError> {
        self.read(|txn| crate::store::read_meta(txn, LAST_OPERATION))
            .await
    }
}
