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
        if let Ok(mut map) = self.map.lock() {
            map.remove(&id);
        }
    }

    fn expire(&self) {
        if let Ok(mut map) = self.map.lock() {
            map.retain(|_, s| {
                s.last_used
                    .lock()
                    .map(|t| t.elapsed() < IDLE)
                    .unwrap_or(false)
            });
        }
    }
}

/// Drops idle sessions, forever.
pub async fn sweep(state: Arc<State>) {
    loop {
        smol::Timer::after(Duration::from_secs(10)).await;
        state.logs.expire();
    }
}
