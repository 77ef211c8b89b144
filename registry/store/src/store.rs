//! The persistent store: services and the event log in one redb file.
//!
//! All writes go through one writer thread that drains every queued operation into a single write
//! transaction (group commit) and fsyncs once per batch. Concurrent writers therefore share an fsync,
//! and events reach subscribers only after their batch is durable: **an event a client has seen is on
//! disk**, so a seq can never be handed out twice, even across a kill -9. A crash loses at most the
//! batch in flight, whose callers never got an answer.
//!
//! On-disk format ([`FORMAT_VERSION`]): tables `meta` (`format_version`, `last_seq`,
//! `pruned_through`), `services` (`project/name` → JSON [`ServiceEntry`]) and `events`
//! (seq → JSON [`Event`]).
//!
//! The services table is also kept in memory as committed (the writer thread updates that copy
//! after each commit, before it answers), so reading services needs neither the disk nor a thread.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use redb::{Database, ReadableTable, TableDefinition};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

mod tokens;
pub use tokens::StoredToken;

use crate::hub::{Hub, LiveReceiver, Published};
use harness_protocol::event::{
    Event, EventFilter, EventType, HealthChange, ServiceChange, StateChange,
};
use harness_protocol::model::{ModelError, ServiceEntry, ServiceKey};
pub use harness_protocol::wire::Snapshot;

/// The current on-disk format. Bump it, keep the old fixture, and add a migration in `open`.
pub const FORMAT_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SERVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("services");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

/// Most entries [`Store::list`] decodes on the calling thread (~5 µs each); more go to the
/// blocking pool.
const DECODE_INLINE: usize = 64;

/// Most operations committed in one transaction.
const MAX_BATCH: usize = 8192;

/// How long events are kept. Whichever limit is hit first prunes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_events: u64,
    pub max_age: Duration,
    /// Ended operations kept at most (ADR 0035); `max_age` applies to them too.
    pub max_operations: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_events: 1_000_000,
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_operations: 10_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("registry store {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error(
        "registry store {path} has format version {found}, this build reads up to {FORMAT_VERSION}: upgrade harness"
    )]
    UnsupportedFormat { path: PathBuf, found: u64 },
    #[error("registry storage error: {0}")]
    Storage(String),
    #[error("service {0} not found")]
    NotFound(ServiceKey),
    #[error("service {0} already exists")]
    AlreadyExists(ServiceKey),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("the registry store is closed")]
    Closed,
}

pub(crate) fn storage(e: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(e.to_string())
}

/// A change to an existing entry, applied by the writer with the entry read in the same transaction.
pub type Mutation = Box<dyn FnOnce(&mut ServiceEntry) -> Result<(), ModelError> + Send>;

pub(crate) enum Op {
    Register {
        entry: Box<ServiceEntry>,
        replace: bool,
    },
    Modify {
        key: ServiceKey,
        mutation: Mutation,
    },
    Deregister {
        key: ServiceKey,
    },
    Emit(Vec<NewEvent>),
    /// An operation (ADR 0035) with the events of its change.
    PutOperation(Box<harness_protocol::operation::Operation>, Vec<NewEvent>),
    Shutdown,
}

/// An event not tied to a service mutation (deployment progress, notices).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: EventType,
    pub project: Option<String>,
    pub service: Option<String>,
    pub data: Value,
}

/// What a write produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The entry after the change (the last one for deregister); `None` for plain events.
    pub entry: Option<ServiceEntry>,
    /// Seqs of the events this write emitted (possibly empty when nothing changed).
    pub seqs: Range<u64>,
}

struct Request {
    op: Op,
    reply: async_channel::Sender<Result<Applied, StoreError>>,
}

/// What a subscriber gets for `since` from storage.
pub enum Replay {
    /// Raw events, oldest first, already filtered.
    Events(Vec<(u64, Box<str>)>),
    /// `since` is older than retention.
    Resync,
}

struct Inner {
    path: PathBuf,
    db: Arc<Db>,
    services: Arc<Mirror>,
    ops: async_channel::Sender<Request>,
    hub: Arc<Hub>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ops.close();
    }
}

/// Handle to the store; cheap to clone, all methods are async and never block the executor.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl Store {
    /// Opens or creates the store at `path` (file mode 0600). Fails if another process has it open.
    pub async fn open(path: impl AsRef<Path>, retention: Retention) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        let p = path.clone();
        let (db, last_seq, services) = blocking::unblock(move || {
            let (db, last_seq) = open_db(&p)?;
            let services = Mirror::load(&db)?;
            Ok::<_, StoreError>((db, last_seq, services))
        })
        .await?;
        let services = Arc::new(services);
        let db = Arc::new(Db {
            path: path.clone(),
            current: std::sync::RwLock::new(Some(Arc::new(db))),
            failed_at: std::sync::Mutex::new(None),
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        let hub = Arc::new(Hub::new(last_seq));
        // A bounded queue allocates every slot up front: 1024 keeps the idle daemon small while a batch
        // (up to MAX_BATCH operations) still forms behind a slow fsync.
        let (tx, rx) = async_channel::bounded(1024);
        let writer = {
            let db = db.clone();
            let hub = hub.clone();
            let services = services.clone();
            std::thread::Builder::new()
                .name("registry-writer".into())
                .spawn(move || writer_loop(&db, &rx, &hub, &services, retention))
                .map_err(|e| StoreError::Open {
                    path: path.clone(),
                    message: e.to_string(),
                })?
        };
        Ok(Store {
            inner: Arc::new(Inner {
                path,
                db,
                services,
                ops: tx,
                hub,
                writer: std::sync::Mutex::new(Some(writer)),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether a commit failed within `within`: what the registry holds may then be behind
    /// what happened (writers retry until their change is recorded).
    pub fn failed_within(&self, within: Duration) -> bool {
        self.inner
            .db
            .failed_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < within)
    }

    /// The seq of the last committed and published event (0 if none).
    pub fn last_seq(&self) -> u64 {
        self.inner.hub.last_seq()
    }

    pub fn live_subscribers(&self) -> usize {
        self.inner.hub.subscriber_count()
    }

    pub(crate) async fn submit(&self, op: Op) -> Result<Applied, StoreError> {
        let (reply, rx) = async_channel::bounded(1);
        self.inner
            .ops
            .send(Request { op, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.recv().await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a read transaction of the current database, on the blocking pool.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.inner.db.clone();
        blocking::unblock(move || {
            let db = db.get()?;
            let txn = db.begin_read().map_err(storage)?;
            f(&txn)
        })
        .await
    }

    /// Adds a new service (in whatever state `entry` carries, normally `pending`).
    pub async fn register(&self, entry: ServiceEntry) -> Result<ServiceEntry, StoreError> {
        entry.key().validate()?;
        let applied = self
            .submit(Op::Register {
                entry: Box::new(entry),
                replace: false,
            })
            .await?;
        applied.entry.ok_or(StoreError::Closed)
    }

    /// Adds or replaces a service wholesale (used when re-registering after a config change).
    pub async fn upsert(&self, entry: ServiceEntry) -> Result<ServiceEntry, StoreError> {
        entry.key().validate()?;
        let applied = self
            .submit(Op::Register {
                entry: Box::new(entry),
                replace: true,
            })
            .await?;
        applied.entry.ok_or(StoreError::Closed)
    }

    /// Applies `mutation` to the current entry atomically. State changes must go through
    /// [`ServiceEntry::transition`] inside the mutation; the resulting events are derived from the
    /// difference (`service.state`, `service.health`, `service.updated`).
    pub async fn modify(
        &self,
        key: &ServiceKey,
        mutation: impl FnOnce(&mut ServiceEntry) -> Result<(), ModelError> + Send + 'static,
    ) -> Result<ServiceEntry, StoreError> {
        let applied = self
            .submit(Op::Modify {
                key: key.clone(),
                mutation: Box::new(mutation),
            })
            .await?;
        applied.entry.ok_or(StoreError::Closed)
    }

    /// Shorthand for a legal state transition.
    pub async fn transition(
        &self,
        key: &ServiceKey,
        to: harness_protocol::model::ServiceState,
    ) -> Result<ServiceEntry, StoreError> {
        self.modify(key, move |e| e.transition(to)).await
    }

    pub async fn deregister(&self, key: &ServiceKey) -> Result<ServiceEntry, StoreError> {
        let applied = self.submit(Op::Deregister { key: key.clone() }).await?;
        applied.entry.ok_or(StoreError::Closed)
    }

    /// Appends events that are not service mutations; returns their seqs.
    pub async fn emit(&self, events: Vec<NewEvent>) -> Result<Range<u64>, StoreError> {
        Ok(self.submit(Op::Emit(events)).await?.seqs)
    }

    /// The entry of `key`, from the copy of the services table the store keeps in memory (the
    /// reads of `get`, `list` and `list_encoded` need no disk and no thread of the blocking pool).
    pub async fn get(&self, key: &ServiceKey) -> Result<Option<ServiceEntry>, StoreError> {
        let k = key.storage_key();
        let map = self.inner.services.read();
        match map.get(k.as_str()) {
            Some(v) => Ok(Some(serde_json::from_str(v.get()).map_err(storage)?)),
            None => Ok(None),
        }
    }

    /// Services, optionally of one project, ordered by project then name.
    pub async fn list(&self, project: Option<&str>) -> Result<Vec<ServiceEntry>, StoreError> {
        let decode = |v: &RawValue| serde_json::from_str(v.get()).map_err(storage);
        let raw = self
            .inner
            .services
            .entries(project.unwrap_or(""), |v| Ok(v.clone()))?;
        if raw.len() <= DECODE_INLINE {
            return raw.iter().map(|v| decode(v)).collect();
        }
        // Thousands of entries take milliseconds to decode: not on the executor.
        blocking::unblock(move || raw.iter().map(|v| decode(v)).collect()).await
    }

    /// [`Store::list`] as the store holds the entries: each the JSON `serde_json` wrote for a
    /// [`ServiceEntry`], not decoded (for `status`, which sends them on).
    pub async fn list_encoded(
        &self,
        project: Option<&str>,
    ) -> Result<Vec<Box<serde_json::value::RawValue>>, StoreError> {
        self.inner
            .services
            .entries(project.unwrap_or(""), |v| Ok(v.clone()))
    }

    /// Every service and the seq they reflect, from one read transaction.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let db = self.inner.db.clone();
        blocking::unblock(move || {
            let db = db.get()?;
            let txn = db.begin_read().map_err(storage)?;
            read_snapshot(&txn)
        })
        .await
    }

    /// Retained events with `seq > since`, at most `limit`.
    pub async fn events_after(&self, since: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let db = self.inner.db.clone();
        blocking::unblock(move || {
            let db = db.get()?;
            let txn = db.begin_read().map_err(storage)?;
            let table = match txn.open_table(EVENTS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(storage(e)),
            };
            let mut out = Vec::new();
            for item in table
                .range(since.saturating_add(1)..)
                .map_err(storage)?
                .take(limit)
            {
                let (_, v) = item.map_err(storage)?;
                out.push(serde_json::from_slice(v.value()).map_err(storage)?);
            }
            Ok(out)
        })
        .await
    }

    /// The oldest seq that is still retained minus one: a subscriber with `since` below it must resync.
    pub async fn pruned_through(&self) -> Result<u64, StoreError> {
        let db = self.inner.db.clone();
        blocking::unblock(move || {
            let db = db.get()?;
            let txn = db.begin_read().map_err(storage)?;
            read_meta(&txn, "pruned_through")
        })
        .await
    }

    pub fn subscribe_live(&self, filter: EventFilter, max_queued: usize) -> LiveReceiver {
        self.inner.hub.subscribe(filter, max_queued)
    }

    /// Events in `(since, upto]` that match `filter`, at most `limit`, or `Resync` if some were pruned.
    pub async fn replay(
        &self,
        since: u64,
        upto: u64,
        filter: EventFilter,
        limit: usize,
    ) -> Result<Replay, StoreError> {
        let db = self.inner.db.clone();
        blocking::unblock(move || {
            let db = db.get()?;
            let txn = db.begin_read().map_err(storage)?;
            if since < read_meta(&txn, "pruned_through")? {
                return Ok(Replay::Resync);
            }
            let table = match txn.open_table(EVENTS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => {
                    return Ok(Replay::Events(Vec::new()));
                }
                Err(e) => return Err(storage(e)),
            };
            let unfiltered =
                filter.types.is_empty() && filter.services.is_empty() && filter.project.is_none();
            let mut out = Vec::new();
            for item in table
                .range(since.saturating_add(1)..=upto)
                .map_err(storage)?
            {
                let (k, v) = item.map_err(storage)?;
                let text = std::str::from_utf8(v.value()).map_err(storage)?;
                if !unfiltered {
                    let head: EventHead = serde_json::from_str(text).map_err(storage)?;
                    if !filter.matches(head.kind, head.project.as_deref(), head.service.as_deref())
                    {
                        continue;
                    }
                }
                out.push((k.value(), text.into()));
                if out.len() >= limit {
                    break;
                }
            }
            Ok(Replay::Events(out))
        })
        .await
    }

    /// Stops the writer after the operations already queued and releases the file, so that the same
    /// path can be opened again. Other handles fail with [`StoreError::Closed`] afterwards.
    pub async fn close(self) -> Result<(), StoreError> {
        let _ = self.submit(Op::Shutdown).await;
        self.inner.hub.close_all();
        let handle = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(handle) = handle {
            blocking::unblock(move || handle.join())
                .await
                .map_err(|_| StoreError::Closed)?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct EventHead {
    #[serde(rename = "type")]
    kind: EventType,
    project: Option<String>,
    service: Option<String>,
}

pub(crate) fn read_meta(txn: &redb::ReadTransaction, key: &str) -> Result<u64, StoreError> {
    match txn.open_table(META) {
        Ok(t) => Ok(t.get(key).map_err(storage)?.map(|v| v.value()).unwrap_or(0)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
        Err(e) => Err(storage(e)),
    }
}

fn read_snapshot(txn: &redb::ReadTransaction) -> Result<Snapshot, StoreError> {
    let seq = read_meta(txn, "last_seq")?;
    let mut services = Vec::new();
    match txn.open_table(SERVICES) {
        Ok(table) => {
            for item in table.iter().map_err(storage)? {
                let (_, v) = item.map_err(storage)?;
                services.push(serde_json::from_slice(v.value()).map_err(storage)?);
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(storage(e)),
    }
    Ok(Snapshot { seq, services })
}

/// The services table in memory, as committed: each entry the JSON the table holds under its
/// key. The writer thread changes it after each commit, before it answers the writers, so a
/// read after a write sees it. (`status` read the table on the blocking pool: two thread
/// wake-ups per call, the larger part of its time on an idle machine.)
struct Mirror(std::sync::RwLock<std::collections::BTreeMap<String, Box<RawValue>>>);

/// A change of the services table: the key and its new JSON, `None` when removed.
type Change = (String, Option<Box<RawValue>>);

impl Mirror {
    fn load(db: &Database) -> Result<Mirror, StoreError> {
        let mut map = std::collections::BTreeMap::new();
        let txn = db.begin_read().map_err(storage)?;
        match txn.open_table(SERVICES) {
            Ok(table) => {
                for item in table.iter().map_err(storage)? {
                    let (k, v) = item.map_err(storage)?;
                    map.insert(k.value().to_owned(), raw(v.value())?);
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(storage(e)),
        }
        Ok(Mirror(std::sync::RwLock::new(map)))
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, std::collections::BTreeMap<String, Box<RawValue>>> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The entries of `project` (all when empty), each through `decode`, in key order.
    fn entries<T>(
        &self,
        project: &str,
        decode: impl Fn(&Box<RawValue>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let map = self.read();
        // Keys are `project/name` (no `/` in either part): the project's entries are the keys from
        // `project/` up to `project0` (`0` follows `/`).
        if project.is_empty() {
            return map.values().map(decode).collect();
        }
        let (from, to) = (format!("{project}/"), format!("{project}0"));
        map.range::<str, _>((
            std::ops::Bound::Included(from.as_str()),
            std::ops::Bound::Excluded(to.as_str()),
        ))
        .map(|(_, v)| decode(v))
        .collect()
    }

    fn replace(&self, fresh: Mirror) {
        let fresh = fresh.0.into_inner().unwrap_or_else(|p| p.into_inner());
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = fresh;
    }

    fn apply(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        for (key, value) in changes {
            match value {
                Some(v) => {
                    map.insert(key, v);
                }
                None => {
                    map.remove(&key);
                }
            }
        }
    }
}

/// What the services table holds, kept as checked JSON.
fn raw(bytes: &[u8]) -> Result<Box<RawValue>, StoreError> {
    let text = String::from_utf8(bytes.to_vec()).map_err(storage)?;
    RawValue::from_string(text).map_err(storage)
}

/// The open database, replaced after an I/O error. redb refuses every later transaction once a
/// write failed ("Previous I/O error occurred"): after a disk-full commit the registry stayed
/// unusable until the daemon restarted. So a failed commit closes the database and the next
/// operation opens it again (redb's open repairs what the failed commit left).
struct Db {
    path: PathBuf,
    current: std::sync::RwLock<Option<Arc<Database>>>,
    /// When a commit last failed.
    failed_at: std::sync::Mutex<Option<std::time::Instant>>,
    /// Set by [`Store::close`]: the database is not opened again.
    closed: std::sync::atomic::AtomicBool,
}

impl Db {
    /// The database, opening it again if the last one was closed after an error.
    fn get(&self) -> Result<Arc<Database>, StoreError> {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        if let Some(db) = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Ok(db.clone());
        }
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        if let Some(db) = cur.as_ref() {
            return Ok(db.clone());
        }
        let (db, _) = open_db(&self.path)
            .map_err(|e| StoreError::Storage(format!("cannot reopen after an I/O error: {e}")))?;
        tracing::info!(path = %self.path.display(), "registry store reopened after an I/O error");
        let db = Arc::new(db);
        *cur = Some(db.clone());
        Ok(db)
    }

    /// Closes the database after a failed commit, once the transactions in flight on it are
    /// done (reads on the blocking pool hold it for one read each), so that it can be opened again.
    fn close_after_error(&self, db: Arc<Database>) {
        *self.failed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, &db)) {
            *cur = None;
        }
        drop(cur);
        release(db);
    }

    /// Closes the database for good ([`Store::close`]): later operations fail with
    /// [`StoreError::Closed`] instead of opening it again.
    fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        let db = self
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(db) = db {
            release(db);
        }
    }
}

/// Drops `db` once the reads in flight on it are done (at most 5 s), which closes its file.
fn release(db: Arc<Database>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&db) > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(db);
}

/// The registry's own page cache (read cache and write buffer); the event throughput bench is
/// the same with 256 KiB as with 1 GiB.
const CACHE_BYTES: usize = 256 << 10;

fn open_db(path: &Path) -> Result<(Database, u64), StoreError> {
    let open_err = |e: &dyn std::fmt::Display| StoreError::Open {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    if !path.exists() {
        // Create with 0600 first: the registry holds commands, hosts and environment.
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        opts.open(path).map_err(|e| open_err(&e))?;
    }
    // redb's default cache (1 GiB) keeps every page read or written until it is full, so the
    // daemon grew with its event history (137 MB after 500k events). Appends and the reads of
    // recent events and service records need little; the file stays in the OS page cache.
    let db = redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|e| open_err(&e))?;
    let txn = db.begin_write().map_err(|e| open_err(&e))?;
    let last_seq = {
        let mut meta = txn.open_table(META).map_err(|e| open_err(&e))?;
        let version = meta
            .get("format_version")
            .map_err(|e| open_err(&e))?
            .map(|v| v.value());
        match version {
            None => {
                meta.insert("format_version", FORMAT_VERSION)
                    .map_err(|e| open_err(&e))?;
            }
            Some(v) if v > FORMAT_VERSION => {
                return Err(StoreError::UnsupportedFormat {
                    path: path.to_path_buf(),
                    found: v,
                });
            }
            Some(_) => {}
        }
        txn.open_table(SERVICES).map_err(|e| open_err(&e))?;
        txn.open_table(EVENTS).map_err(|e| open_err(&e))?;
        txn.open_table(crate::operations::OPERATIONS)
            .map_err(|e| open_err(&e))?;
        meta.get("last_seq")
            .map_err(|e| open_err(&e))?
            .map(|v| v.value())
            .unwrap_or(0)
    };
    txn.commit().map_err(|e| open_err(&e))?;
    Ok((db, last_seq))
}

fn writer_loop(
    db: &Db,
    rx: &async_channel::Receiver<Request>,
    hub: &Hub,
    services: &Mirror,
    retention: Retention,
) {
    let mut batch = Vec::new();
    let mut last_age_check = std::time::Instant::now();
    // After a failed commit the memory copy is read again from the reopened database (a commit
    // that reported an error may still have reached the disk).
    let mut reload = false;
    while let Ok(first) = rx.recv_blocking() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let check_age = last_age_check.elapsed() >= Duration::from_secs(1);
        if check_age {
            last_age_check = std::time::Instant::now();
        }
        let shutdown = batch.iter().any(|r| matches!(r.op, Op::Shutdown));
        let outcome = db.get().and_then(|handle| {
            let r = commit_batch(&handle, &mut batch, retention, check_age);
            match &r {
                Ok(_) if reload => match Mirror::load(&handle) {
                    Ok(fresh) => {
                        services.replace(fresh);
                        reload = false;
                    }
                    Err(e) => tracing::warn!(error = %e, "registry: cannot reread the services"),
                },
                Ok(_) => {}
                // redb fails every later transaction of this handle: open it again.
                Err(_) => db.close_after_error(handle),
            }
            r
        });
        match outcome {
            Ok((results, published, changes)) => {
                if !reload {
                    services.apply(changes);
                }
                hub.publish(published);
                for (req, result) in batch.drain(..).zip(results) {
                    let _ = req.reply.try_send(result);
                }
            }
            Err(e) => {
                reload = true;
                tracing::error!(error = %e, "registry commit failed; batch rejected");
                let message = match &e {
                    StoreError::Storage(m) => m.clone(),
                    other => other.to_string(),
                };
                for req in batch.drain(..) {
                    let _ = req
                        .reply
                        .try_send(Err(StoreError::Storage(message.clone())));
                }
            }
        }
        if shutdown {
            rx.close();
            while let Ok(req) = rx.try_recv() {
                let _ = req.reply.try_send(Err(StoreError::Closed));
            }
            // Before `close` returns: the file is free for the next daemon even while other
            // clones of this store still exist (tasks that have not ended yet).
            db.close();
            break;
        }
    }
}

type BatchOutcome = (
    Vec<Result<Applied, StoreError>>,
    Vec<Arc<Published>>,
    Vec<Change>,
);

fn commit_batch(
    db: &Database,
    batch: &mut [Request],
    retention: Retention,
    check_age: bool,
) -> Result<BatchOutcome, StoreError> {
    let txn = db.begin_write().map_err(storage)?;
    let mut results = Vec::with_capacity(batch.len());
    let mut published = Vec::new();
    let mut changes = Vec::new();
    {
        let mut meta = txn.open_table(META).map_err(storage)?;
        let mut services = txn.open_table(SERVICES).map_err(storage)?;
        let mut events = txn.open_table(EVENTS).map_err(storage)?;
        let mut operations = txn
            .open_table(crate::operations::OPERATIONS)
            .map_err(storage)?;
        let seq = meta
            .get("last_seq")
            .map_err(storage)?
            .map(|v| v.value())
            .unwrap_or(0);
        let mut log = Appender {
            seq,
            events: &mut events,
            published: &mut published,
        };
        for req in batch.iter_mut() {
            let op = std::mem::replace(&mut req.op, Op::Shutdown);
            let before = log.seq;
            let result = match op {
                Op::PutOperation(operation, events) => {
                    crate::operations::write(&mut operations, &mut meta, &operation).and_then(
                        |()| {
                            for ev in events {
                                log.append(ev)?;
                            }
                            Ok(None)
                        },
                    )
                }
                // A change is recorded once the table holds it, whatever the operation's result:
                // the memory copy is what the commit makes durable.
                op => apply(op, &mut services, &mut log, &mut changes),
            };
            results.push(result.map(|entry| Applied {
                entry,
                seqs: before + 1..log.seq + 1,
            }));
        }
        let last = log.seq;
        meta.insert("last_seq", last).map_err(storage)?;
        prune(&mut meta, &mut events, last, retention, check_age)?;
        if check_age {
            crate::operations::prune(&mut operations, retention)?;
        }
    }
    txn.commit().map_err(storage)?;
    Ok((results, published, changes))
}

/// Appends events inside the batch's transaction; they are published only after the commit.
struct Appender<'a, 't> {
    seq: u64,
    events: &'a mut redb::Table<'t, u64, &'static [u8]>,
    published: &'a mut Vec<Arc<Published>>,
}

impl Appender<'_, '_> {
    fn append(&mut self, ev: NewEvent) -> Result<u64, StoreError> {
        let seq = self.seq + 1;
        let event = Event {
            seq,
            kind: ev.kind,
            time: Timestamp::now(),
            project: ev.project,
            service: ev.service,
            data: ev.data,
        };
        let json = serde_json::to_string(&event).map_err(storage)?;
        self.events.insert(seq, json.as_bytes()).map_err(storage)?;
        self.seq = seq;
        self.published.push(Arc::new(Published {
            seq,
            kind: event.kind,
            project: event.project,
            service: event.service,
            json: json.into_boxed_str(),
        }));
        Ok(seq)
    }
}

fn service_event(kind: EventType, entry: &ServiceEntry, data: Value) -> NewEvent {
    NewEvent {
        kind,
        project: Some(entry.project.clone()),
        service: Some(entry.name.clone()),
        data,
    }
}

fn to_value(v: impl serde::Serialize) -> Result<Value, StoreError> {
    serde_json::to_value(v).map_err(storage)
}

fn apply(
    op: Op,
    services: &mut redb::Table<&str, &[u8]>,
    log: &mut Appender<'_, '_>,
    changes: &mut Vec<Change>,
) -> Result<Option<ServiceEntry>, StoreError> {
    match op {
        Op::Register { mut entry, replace } => {
            let key = entry.key();
            let k = key.storage_key();
            let existing = services.get(k.as_str()).map_err(storage)?.is_some();
            if existing && !replace {
                return Err(StoreError::AlreadyExists(key));
            }
            entry.updated_at = Timestamp::now();
            let bytes = serde_json::to_vec(&entry).map_err(storage)?;
            services
                .insert(k.as_str(), bytes.as_slice())
                .map_err(storage)?;
            changes.push((k, Some(raw(&bytes)?)));
            let kind = if existing {
                EventType::ServiceUpdated
            } else {
                EventType::ServiceRegistered
            };
            let data = to_value(ServiceChange {
                entry: (*entry).clone(),
            })?;
            log.append(service_event(kind, &entry, data))?;
            Ok(Some(*entry))
        }
        Op::Modify { key, mutation } => {
            let k = key.storage_key();
            let before: ServiceEntry = match services.get(k.as_str()).map_err(storage)? {
                Some(v) => serde_json::from_slice(v.value()).map_err(storage)?,
                None => return Err(StoreError::NotFound(key)),
            };
            let mut after = before.clone();
            mutation(&mut after)?;
            if after.key() != key {
                return Err(
                    ModelError::Invalid("a mutation cannot rename a service".into()).into(),
                );
            }
            if after == before {
                return Ok(Some(after));
            }
            after.updated_at = Timestamp::now();
            let bytes = serde_json::to_vec(&after).map_err(storage)?;
            services
                .insert(k.as_str(), bytes.as_slice())
                .map_err(storage)?;
            changes.push((k, Some(raw(&bytes)?)));
            let state_changed = before.state != after.state;
            if state_changed {
                let data = to_value(StateChange {
                    from: before.state.clone(),
                    to: after.state.clone(),
                    entry: after.clone(),
                })?;
                log.append(service_event(EventType::ServiceState, &after, data))?;
            }
            // A transition resets health; that is part of the state event, not a health event.
            if !state_changed && before.health.status != after.health.status {
                let data = to_value(HealthChange {
                    from: before.health.status,
                    to: after.health.status,
                    entry: after.clone(),
                })?;
                log.append(service_event(EventType::ServiceHealth, &after, data))?;
            }
            if !state_changed && other_fields_differ(&before, &after) {
                let data = to_value(ServiceChange {
                    entry: after.clone(),
                })?;
                log.append(service_event(EventType::ServiceUpdated, &after, data))?;
            }
            Ok(Some(after))
        }
        Op::Deregister { key } => {
            let k = key.storage_key();
            let entry: ServiceEntry = match services.remove(k.as_str()).map_err(storage)? {
                Some(v) => serde_json::from_slice(v.value()).map_err(storage)?,
                None => return Err(StoreError::NotFound(key)),
            };
            changes.push((k, None));
            let data = to_value(ServiceChange {
                entry: entry.clone(),
            })?;
            log.append(service_event(EventType::ServiceDeregistered, &entry, data))?;
            Ok(Some(entry))
        }
        Op::Emit(list) => {
            for ev in list {
                log.append(ev)?;
            }
            Ok(None)
        }
        Op::Shutdown | Op::PutOperation(..) => Ok(None),
    }
}

/// Whether anything but state, health and timestamps changed. Health details without a status change
/// (a new check time and output) are stored but are not events: they would flood the log.
fn other_fields_differ(a: &ServiceEntry, b: &ServiceEntry) -> bool {
    a.location != b.location
        || a.runtime != b.runtime
        || a.endpoints != b.endpoints
        || a.restart_count != b.restart_count
        || a.spec_hash != b.spec_hash
}

fn prune(
    meta: &mut redb::Table<&str, u64>,
    events: &mut redb::Table<u64, &[u8]>,
    last: u64,
    retention: Retention,
    check_age: bool,
) -> Result<(), StoreError> {
    let pruned = meta
        .get("pruned_through")
        .map_err(storage)?
        .map(|v| v.value())
        .unwrap_or(0);
    let mut upto = pruned;
    // Prune in chunks of a tenth of the limit so that the cost is amortized over many commits.
    let slack = (retention.max_events / 10).max(1);
    if last.saturating_sub(pruned) > retention.max_events.saturating_add(slack) {
        upto = last - retention.max_events;
    }
    if check_age {
        let cutoff = Timestamp::now()
            .checked_sub(
                jiff::SignedDuration::try_from(retention.max_age)
                    .unwrap_or(jiff::SignedDuration::MAX),
            )
            .unwrap_or(Timestamp::MIN);
        for item in events.range(upto.saturating_add(1)..).map_err(storage)? {
            let (k, v) = item.map_err(storage)?;
            #[derive(Deserialize)]
            struct T {
                time: Timestamp,
            }
            let t: T = serde_json::from_slice(v.value()).map_err(storage)?;
            if t.time >= cutoff {
                break;
            }
            upto = k.value();
        }
    }
    if upto > pruned {
        events
            .retain_in(pruned.saturating_add(1)..=upto, |_, _| false)
            .map_err(storage)?;
        meta.insert("pruned_through", upto).map_err(storage)?;
    }
    Ok(())
}

/// How a store error reaches a client: its [`ErrorCode`](harness_protocol::wire::ErrorCode).
impl From<StoreError> for harness_protocol::wire::WireError {
    fn from(e: StoreError) -> Self {
        use StoreError as S;
        use harness_protocol::wire::ErrorCode;
        let code = match &e {
            S::NotFound(_) => ErrorCode::NotFound,
            S::AlreadyExists(_) => ErrorCode::AlreadyExists,
            S::Model(harness_protocol::model::ModelError::IllegalTransition { .. })
            | S::Model(harness_protocol::model::ModelError::HealthWhileInactive { .. }) => {
                ErrorCode::IllegalTransition
            }
            S::Model(_) => ErrorCode::InvalidParams,
            S::Closed => ErrorCode::Unavailable,
            S::Open { .. } | S::UnsupportedFormat { .. } | S::Storage(_) => ErrorCode::Internal,
        };
        harness_protocol::wire::WireError::new(code, e.to_string())
    }
}
