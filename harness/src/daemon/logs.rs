//! Log reading sessions: `logs` streams over request/response by handing the client a session
//! that each call drains one batch from. Sessions left alone for a minute are dropped (the client
//! went away), which also ends their followers in the orchestrator.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orchestrator::Logs;

use super::State;

const IDLE: Duration = Duration::from_secs(60);

pub struct Session {
    pub logs: async_lock::Mutex<Logs>,
    last_used: Mutex<Instant>,
}

#[derive(Default)]
pub struct Sessions {
    next: AtomicU64,
    map: Mutex<HashMap<u64, Arc<Session>>>,
}

impl Sessions {
    pub fn open(&self, logs: Logs) -> (u64, Arc<Session>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let session = Arc::new(Session {
            logs: async_lock::Mutex::new(logs),
            last_used: Mutex::new(Instant::now()),
        });
        if let Ok(mut map) = self.map.lock() {
            map.insert(id, session.clone());
        }
        (id, session)
    }

    pub fn get(&self, id: u64) -> Option<Arc<Session>> {
        let session = self.map.lock().ok()?.get(&id).cloned()?;
        if let Ok(mut t) = session.last_used.lock() {
            *t = Instant::now();
        }
        Some(session)
    }

    pub fn close(&self, id: u64) {
        let removed = self.map.lock().ok().and_then(|mut map| map.remove(&id));
        if let Some(session) = removed {
            // The reader (and its history) is freed with the last reference to the session.
            drop(session);
            trim_memory();
        }
    }

    fn expire(&self) {
        let mut dropped = false;
        if let Ok(mut map) = self.map.lock() {
            let before = map.len();
            map.retain(|_, s| {
                s.last_used
                    .lock()
                    .map(|t| t.elapsed() < IDLE)
                    .unwrap_or(false)
            });
            dropped = map.len() < before;
        }
        if dropped {
            trim_memory();
        }
    }
}

/// A finished `logs` of 500,000 lines freed its history (tens of MB of small strings), which glibc
/// kept in its arenas: the daemon stayed at 85 MB long after. Give it back.
fn trim_memory() {
    super::release_free_memory();
}

/// Drops idle sessions, forever.
pub async fn sweep(state: Arc<State>) {
    loop {
        smol::Timer::after(Duration::from_secs(10)).await;
        state.logs.expire();
    }
}
