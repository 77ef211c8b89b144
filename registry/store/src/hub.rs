//! In-memory fan-out of committed events to live subscribers.
//!
//! The store's writer thread publishes each committed batch once; every subscriber gets a shared
//! reference, so fan-out costs one pointer per subscriber and batch. Queues are unbounded channels with
//! an explicit event count: a subscriber whose backlog exceeds its limit is cut off (marked lagging) at
//! publish time instead of ever blocking the writer or the other subscribers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use harness_protocol::event::{EventFilter, EventType};

/// A committed event, serialized once for all subscribers.
#[derive(Debug)]
pub struct Published {
    pub seq: u64,
    pub kind: EventType,
    pub project: Option<String>,
    pub service: Option<String>,
    /// The event as JSON (`{"seq":…,"type":…,"time":…,"data":…}`).
    pub json: Box<str>,
}

pub type Batch = Arc<[Arc<Published>]>;

struct LiveSub {
    filter: EventFilter,
    tx: async_channel::Sender<Batch>,
    queued: Arc<AtomicUsize>,
    lagged: Arc<AtomicBool>,
    max_queued: usize,
}

#[derive(Default)]
struct HubInner {
    last_seq: u64,
    next_id: u64,
    subs: HashMap<u64, LiveSub>,
}

#[derive(Default)]
pub struct Hub {
    inner: Mutex<HubInner>,
}

impl Hub {
    pub fn new(last_seq: u64) -> Self {
        Hub {
            inner: Mutex::new(HubInner {
                last_seq,
                ..HubInner::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubInner> {
        // A panic while holding the lock cannot leave the map inconsistent, so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn last_seq(&self) -> u64 {
        self.lock().last_seq
    }

    pub fn subscriber_count(&self) -> usize {
        self.lock().subs.len()
    }

    /// Registers a live queue. Everything published after this call with `seq > live_from` arrives on it.
    pub fn subscribe(self: &Arc<Self>, filter: EventFilter, max_queued: usize) -> LiveReceiver {
        let (tx, rx) = async_channel::unbounded();
        let queued = Arc::new(AtomicUsize::new(0));
        let lagged = Arc::new(AtomicBool::new(false));
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.subs.insert(
            id,
            LiveSub {
                filter,
                tx,
                queued: queued.clone(),
                lagged: lagged.clone(),
                max_queued,
            },
        );
        LiveReceiver {
            id,
            live_from: inner.last_seq,
            rx,
            queued,
            lagged,
            hub: Arc::downgrade(self),
        }
    }

    /// Called by the writer after a commit, in seq order.
    pub fn publish(&self, events: Vec<Arc<Published>>) {
        let Some(last) = events.last() else { return };
        let mut inner = self.lock();
        inner.last_seq = last.seq;
        let all: Batch = events.into();
        let mut cut = Vec::new();
        for (id, sub) in inner.subs.iter() {
            let batch: Batch = if filter_is_empty(&sub.filter) {
                all.clone()
            } else {
                let picked: Vec<_> = all
                    .iter()
                    .filter(|e| {
                        sub.filter
                            .matches(e.kind, e.project.as_deref(), e.service.as_deref())
                    })
                    .cloned()
                    .collect();
                if picked.is_empty() {
                    continue;
                }
                picked.into()
            };
            let queued = sub.queued.fetch_add(batch.len(), Ordering::AcqRel) + batch.len();
            if queued > sub.max_queued || sub.tx.try_send(batch).is_err() {
                sub.lagged.store(queued > sub.max_queued, Ordering::Release);
                sub.tx.close();
                cut.push(*id);
            }
        }
        for id in cut {
            inner.subs.remove(&id);
        }
    }
}

fn filter_is_empty(f: &EventFilter) -> bool {
    f.types.is_empty() && f.services.is_empty() && f.project.is_none()
}

/// The receiving end of a live subscription; unregisters itself on drop.
pub struct LiveReceiver {
    id: u64,
    /// The last seq published before this receiver was registered.
    pub live_from: u64,
    rx: async_channel::Receiver<Batch>,
    queued: Arc<AtomicUsize>,
    lagged: Arc<AtomicBool>,
    hub: std::sync::Weak<Hub>,
}

/// Why a live subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveEnd {
    Lagged,
    Closed,
}

impl LiveReceiver {
    pub async fn recv(&self) -> Result<Batch, LiveEnd> {
        match self.rx.recv().await {
            Ok(batch) => {
                self.queued.fetch_sub(batch.len(), Ordering::AcqRel);
                Ok(batch)
            }
            Err(_) if self.lagged.load(Ordering::Acquire) => Err(LiveEnd::Lagged),
            Err(_) => Err(LiveEnd::Closed),
        }
    }
}

impl Drop for LiveReceiver {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.lock().subs.remove(&self.id);
        }
    }
}

impl Hub {
    /// Ends every live subscription (store shutdown).
    pub fn close_all(&self) {
        let mut inner = self.lock();
        for sub in inner.subs.values() {
            sub.tx.close();
        }
        inner.subs.clear();
    }
}
