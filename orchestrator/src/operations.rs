//! Operations as they happen (ADR 0035): [`Operations`] hands out an [`OperationLog`] per start,
//! stop, restart, scale, deploy or rollback; the orchestrator appends steps to it, the daemon ends
//! it, and `ops.cancel` asks it to stop.
//!
//! The log is kept in memory and written to the store behind the caller's back: every change marks
//! the operation dirty and one writer task per running operation writes the latest version with an
//! `operation` event per change (coalesced while a write is in flight). Recording a step never
//! waits for the disk, and a failed write (disk full) is retried every half second until it is
//! recorded or the daemon ends; meanwhile `ops.get` answers from memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use harness_protocol::operation::{
    MAX_HEALTH_STEPS, Operation, OperationKind, OperationOutcome, Requester, Step, StepKind,
    StepResult,
};
use harness_store::{Store, StoreError};
use jiff::Timestamp;
use serde_json::Value;

/// The reason given to an operation that was running when its daemon ended.
pub const INTERRUPTED: &str =
    "interrupted: the daemon ended (killed, crashed or stopped) while it ran";

/// How long a failed write of an operation waits before it is tried again.
const RETRY: Duration = Duration::from_millis(500);

/// What `ops.cancel` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelRequest {
    pub rollback: bool,
}

/// Every operation of the daemon: the running ones in memory, all of them in the store.
pub struct Operations {
    store: Store,
    next: Mutex<u64>,
    running: Mutex<BTreeMap<u64, OperationLog>>,
}

impl std::fmt::Debug for Operations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operations").finish_non_exhaustive()
    }
}

impl Operations {
    /// Opens the operations of `store`. Any recorded as running belonged to a daemon that ended
    /// without finishing them: they are failed now, with [`INTERRUPTED`], and so are their steps
    /// that were under way.
    pub async fn open(store: Store) -> Result<Arc<Operations>, StoreError> {
        let stale = store
            .operations(usize::MAX, |o| o.outcome.is_running())
            .await?;
        let now = Timestamp::now();
        for mut op in stale {
            let mut changes = Vec::new();
            for (i, s) in op.steps.iter_mut().enumerate() {
                if s.result == StepResult::Running {
                    s.result = StepResult::Failed {
                        reason: "interrupted".into(),
                    };
                    s.ended_at = Some(now);
                    changes.push(Some(i));
                }
            }
            op.outcome = OperationOutcome::Failed {
                reason: INTERRUPTED.into(),
            };
            op.ended_at = Some(now);
            changes.push(None);
            store.put_operation(op, changes).await?;
        }
        let next = store.last_operation_id().await?;
        Ok(Arc::new(Operations {
            store,
            next: Mutex::new(next),
            running: Mutex::new(BTreeMap::new()),
        }))
    }

    fn running_map(&self) -> MutexGuard<'_, BTreeMap<u64, OperationLog>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Begins an operation. `params` are masked here (secret-looking keys). It is in the store
    /// (and its first event sent) before this returns, unless the store cannot be written: then
    /// it is kept in memory and written when the store recovers.
    pub async fn begin(
        self: &Arc<Self>,
        kind: OperationKind,
        project: Option<String>,
        services: Vec<String>,
        requester: Requester,
        mut params: Value,
    ) -> OperationLog {
        harness_config::mask_secrets(&mut params);
        let id = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            *next += 1;
            *next
        };
        let op = Operation {
            id,
            kind,
            project,
            services,
            requester,
            params,
            started_at: Timestamp::now(),
            ended_at: None,
            outcome: OperationOutcome::Running,
            steps: Vec::new(),
            steps_dropped: 0,
        };
        let log = OperationLog(Arc::new(Shared {
            state: Mutex::new(LogState {
                op: op.clone(),
                dirty: Vec::new(),
                health: HashMap::new(),
                cancel: None,
                flushing: true,
            }),
            changed: event_listener::Event::new(),
        }));
        self.running_map().insert(id, log.clone());
        if let Err(e) = self.store.put_operation(op, vec![None]).await {
            tracing::warn!(operation = id, "operation not recorded yet: {e}");
            log.lock().dirty.push(None);
        }
        log.lock().flushing = false;
        let ops = Arc::downgrade(self);
        let store = self.store.clone();
        let writer = log.clone();
        smol::spawn(async move {
            writer.write_until_done(&store).await;
            if let Some(ops) = ops.upgrade() {
                ops.running_map().remove(&id);
            }
        })
        .detach();
        log
    }

    /// The running operation `id`, if this daemon runs it.
    pub fn running(&self, id: u64) -> Option<OperationLog> {
        self.running_map().get(&id).cloned()
    }

    /// Operation `id`: from memory while this daemon runs it, else from the store.
    pub async fn get(&self, id: u64) -> Result<Option<Operation>, StoreError> {
        if let Some(log) = self.running(id) {
            return Ok(Some(log.snapshot()));
        }
        self.store.operation(id).await
    }

    /// Operations for which `keep` holds, newest first, at most `limit`; running ones as they
    /// are in memory.
    pub async fn list(
        &self,
        limit: usize,
        keep: impl Fn(&Operation) -> bool + Send + Sync + Clone + 'static,
    ) -> Result<Vec<Operation>, StoreError> {
        let live: BTreeMap<u64, Operation> = self
            .running_map()
            .iter()
            .map(|(id, l)| (*id, l.snapshot()))
            .collect();
        let k = keep.clone();
        let stored = self.store.operations(limit, move |o| k(o)).await?;
        let mut out: BTreeMap<u64, Operation> = stored.into_iter().map(|o| (o.id, o)).collect();
        for (id, op) in live {
            if keep(&op) {
                out.insert(id, op);
            } else {
                out.remove(&id);
            }
        }
        Ok(out.into_values().rev().take(limit).collect())
    }
}

struct LogState {
    op: Operation,
    /// Changes not written yet (`None`: the head).
    dirty: Vec<Option<usize>>,
    /// Health checks seen per service.
    health: HashMap<String, u32>,
    cancel: Option<CancelRequest>,
    /// A write is in flight (the first one, in `begin`).
    flushing: bool,
}

struct Shared {
    state: Mutex<LogState>,
    /// Any change: the writer, cancel and end waiters listen.
    changed: event_listener::Event,
}

/// One operation being recorded. Cheap to clone; every method is synchronous and quick.
#[derive(Clone)]
pub struct OperationLog(Arc<Shared>);

impl std::fmt::Debug for OperationLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("OperationLog").field(&self.id()).finish()
    }
}

/// A step of an [`OperationLog`], to end it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepId(usize);

impl OperationLog {
    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self, st: &mut LogState, change: Option<usize>) {
        if !st.dirty.contains(&change) {
            st.dirty.push(change);
        }
        self.0.changed.notify(usize::MAX);
    }

    pub fn id(&self) -> u64 {
        self.lock().op.id
    }

    pub fn snapshot(&self) -> Operation {
        self.lock().op.clone()
    }

    /// Begins a step.
    pub fn step(
        &self,
        kind: StepKind,
        service: Option<&str>,
        host: Option<&str>,
        detail: Option<String>,
    ) -> StepId {
        let mut st = self.lock();
        let i = st.op.steps.len();
        st.op.steps.push(Step {
            kind,
            service: service.map(str::to_owned),
            host: host.map(str::to_owned),
            attempt: None,
            detail,
            started_at: Timestamp::now(),
            ended_at: None,
            result: StepResult::Running,
        });
        self.changed(&mut st, Some(i));
        StepId(i)
    }

    /// Ends a step (once; later calls change nothing).
    pub fn end(&self, step: StepId, result: StepResult) {
        let mut st = self.lock();
        let Some(s) = st.op.steps.get_mut(step.0) else {
            return;
        };
        if s.result != StepResult::Running || result == StepResult::Running {
            return;
        }
        s.result = result;
        s.ended_at = Some(Timestamp::now());
        self.changed(&mut st, Some(step.0));
    }

    /// A step that is over as it is recorded.
    pub fn instant(
        &self,
        kind: StepKind,
        service: Option<&str>,
        host: Option<&str>,
        detail: Option<String>,
        result: StepResult,
    ) {
        let id = self.step(kind, service, host, detail);
        self.end(id, result);
    }

    /// One health check of `service`, begun at `began`: a step of its own (the first
    /// [`MAX_HEALTH_STEPS`] per service; later ones are counted in `steps_dropped`).
    pub fn health_attempt(
        &self,
        service: &str,
        host: Option<&str>,
        ok: bool,
        output: &str,
        began: Timestamp,
    ) {
        let mut st = self.lock();
        let n = {
            let n = st.health.entry(service.to_owned()).or_insert(0);
            *n += 1;
            *n
        };
        if n as usize > MAX_HEALTH_STEPS {
            st.op.steps_dropped += 1;
            return;
        }
        let i = st.op.steps.len();
        let output = output.trim();
        st.op.steps.push(Step {
            kind: StepKind::HealthCheck,
            service: Some(service.to_owned()),
            host: host.map(str::to_owned),
            attempt: Some(n),
            detail: (!output.is_empty()).then(|| output.chars().take(300).collect()),
            started_at: began,
            ended_at: Some(Timestamp::now()),
            result: if ok {
                StepResult::Ok
            } else {
                StepResult::Failed {
                    reason: "the check failed".into(),
                }
            },
        });
        self.changed(&mut st, Some(i));
    }

    /// Ends the operation (the first call wins). Steps still under way end `cancelled` when it
    /// was cancelled, else failed.
    pub fn finish(&self, outcome: OperationOutcome) {
        let mut st = self.lock();
        if !st.op.outcome.is_running() || outcome.is_running() {
            return;
        }
        let now = Timestamp::now();
        let cancelled = matches!(outcome, OperationOutcome::Cancelled { .. });
        let mut ended = Vec::new();
        for (i, s) in st.op.steps.iter_mut().enumerate() {
            if s.result == StepResult::Running {
                s.result = if cancelled {
                    StepResult::Cancelled
                } else {
                    StepResult::Failed {
                        reason: "not finished when the operation ended".into(),
                    }
                };
                s.ended_at = Some(now);
                ended.push(i);
            }
        }
        for i in ended {
            self.changed(&mut st, Some(i));
        }
        st.op.outcome = outcome;
        st.op.ended_at = Some(now);
        self.changed(&mut st, None);
    }

    pub fn is_running(&self) -> bool {
        self.lock().op.outcome.is_running()
    }

    /// Asks the operation to stop; false when it has ended already. The code running it sees
    /// [`OperationLog::cancelled`] resolve.
    pub fn request_cancel(&self, req: CancelRequest) -> bool {
        let mut st = self.lock();
        if !st.op.outcome.is_running() {
            return false;
        }
        if st.cancel.is_none() {
            st.cancel = Some(req);
        }
        drop(st);
        self.0.changed.notify(usize::MAX);
        true
    }

    /// Whether a cancel was asked for.
    pub fn cancel_requested(&self) -> Option<CancelRequest> {
        self.lock().cancel
    }

    /// Resolves once a cancel is asked for.
    pub async fn cancelled(&self) -> CancelRequest {
        loop {
            let listener = self.0.changed.listen();
            if let Some(c) = self.cancel_requested() {
                return c;
            }
            listener.await;
        }
    }

    /// Resolves once the operation has ended; its final form.
    pub async fn ended(&self) -> Operation {
        loop {
            let listener = self.0.changed.listen();
            {
                let st = self.lock();
                if !st.op.outcome.is_running() {
                    return st.op.clone();
                }
            }
            listener.await;
        }
    }

    /// Services this operation launched (a `spawning` step), in the order it launched them.
    pub fn spawned(&self) -> Vec<String> {
        let st = self.lock();
        let mut out: Vec<String> = Vec::new();
        for s in &st.op.steps {
            if s.kind == StepKind::Spawning
                && let Some(n) = &s.service
                && !out.contains(n)
            {
                out.push(n.clone());
            }
        }
        out
    }

    /// Writes every change to the store until the operation has ended and all of it is written.
    async fn write_until_done(&self, store: &Store) {
        loop {
            let listener = self.0.changed.listen();
            let batch = {
                let mut st = self.lock();
                if st.dirty.is_empty() || st.flushing {
                    if !st.op.outcome.is_running() && st.dirty.is_empty() && !st.flushing {
                        return;
                    }
                    None
                } else {
                    st.flushing = true;
                    Some((st.op.clone(), std::mem::take(&mut st.dirty)))
                }
            };
            let Some((op, changes)) = batch else {
                listener.await;
                continue;
            };
            let id = op.id;
            let result = store.put_operation(op, changes.clone()).await;
            let failed = {
                let mut st = self.lock();
                st.flushing = false;
                match result {
                    Ok(_) => false,
                    Err(StoreError::Closed) => return,
                    Err(e) => {
                        tracing::warn!(operation = id, "operation not recorded yet, retrying: {e}");
                        for c in changes {
                            if !st.dirty.contains(&c) {
                                st.dirty.push(c);
                            }
                        }
                        true
                    }
                }
            };
            if failed {
                async_io::Timer::after(RETRY).await;
            }
        }
    }
}
