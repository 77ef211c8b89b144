//! One task per service: launches it, records every change in the registry, runs its health
//! checks, drains its logs, applies its restart policy, and stops it on request. Exits are noticed
//! as they happen (the process's own exit notification), never by polling.

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_channel::Sender;
use async_io::Timer;
use command_executor::{Executor, Signal};
use event_listener::Event;
use futures_lite::FutureExt;
use harness_config::RestartPolicy;
use jiff::Timestamp;
use registry::{Health, HealthStatus, ServiceEntry, ServiceKey, ServiceState, Store};

use crate::logs::{LogHub, Pump};
use crate::readiness::Readiness;
use crate::runtime::{self, ExitInfo, Launched};
use crate::spec::{HealthSpec, Resolved};

/// After this long up, the backoff starts again from its initial delay.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);
/// Lines of output shown with a failure.
pub(crate) const FAILURE_LINES: usize = 20;

pub(crate) struct StopRequest {
    pub signal: Signal,
    pub timeout: Duration,
    /// Gets whether SIGKILL was needed.
    pub done: Sender<bool>,
}

/// Stop requests to one supervisor. A queue of its own rather than an async channel, which
/// takes ~800 bytes per service for the one or two requests a supervisor ever gets.
pub(crate) struct Stops {
    /// `None` once the supervisor is done: no more are taken.
    queue: Mutex<Option<VecDeque<StopRequest>>>,
    arrived: Event,
}

impl Stops {
    pub fn new() -> Arc<Stops> {
        Arc::new(Stops {
            queue: Mutex::new(Some(VecDeque::new())),
            arrived: Event::new(),
        })
    }

    /// Queues `req`; gives it back when the supervisor is done (or gone).
    pub fn send(&self, req: StopRequest) -> Result<(), StopRequest> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        match queue.as_mut() {
            Some(q) => q.push_back(req),
            None => return Err(req),
        }
        drop(queue);
        self.arrived.notify(1);
        Ok(())
    }

    fn try_recv(&self) -> Option<StopRequest> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.as_mut()?.pop_front()
    }

    /// The next request; waits until one comes.
    async fn recv(&self) -> StopRequest {
        loop {
            let listener = self.arrived.listen();
            if let Some(req) = self.try_recv() {
                return req;
            }
            listener.await;
        }
    }

    /// Takes no more requests; returns those still queued.
    fn close(&self) -> VecDeque<StopRequest> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.take().unwrap_or_default()
    }
}

/// How a supervisor begins.
pub(crate) enum Begin {
    Launch,
    /// Re-attached to a process that is still running (boxed: `Begin` is held twice in the
    /// supervisor's future).
    Attach(Box<Launched>),
    /// Recorded as running, but it ended while no daemon watched.
    Ended,
    /// Recorded as waiting out a backoff: start after this long.
    Backoff(Duration),
}

/// One task per service for the service's whole life, so its future is kept small: only what
/// watching a running process needs is held in it; launching, stopping, restarting and health
/// checks are boxed (or tasks of their own) and take memory only while they run.
pub(crate) struct Supervisor {
    pub store: Store,
    pub executor: Executor,
    pub key: ServiceKey,
    pub spec: Resolved,
    pub dir: PathBuf,
    pub hub: Arc<LogHub>,
    pub ready: Arc<Readiness>,
    pub stops: Arc<Stops>,
    pub launches: Arc<crate::launches::Launches>,
}

impl Drop for Supervisor {
    /// A supervisor that is cancelled takes no more stops; queued ones are dropped, so their
    /// senders see the end instead of waiting.
    fn drop(&mut self) {
        self.stops.close();
    }
}

enum Woke {
    Exited(ExitInfo),
    Stop(StopRequest),
    /// The health check turned unhealthy and `restart.on_unhealthy` is set.
    Unhealthy,
}

/// Restart bookkeeping across runs.
struct Backoff {
    attempt: u32,
    delay: Duration,
}

impl Supervisor {
    /// The supervisor's task. Not an `async fn`: that would keep a second copy of `self` in the
    /// future (arguments are moved into locals); the block uses `self` where it was captured.
    #[allow(clippy::manual_async_fn)]
    pub fn run(self, begin: Begin) -> impl Future<Output = ()> + Send + 'static {
        async move {
            self.supervise(begin).await;
            // A stop that raced with the end is answered, never left waiting: no more can come.
            let queued = self.stops.close();
            if !queued.is_empty() {
                Box::pin(self.set_state(ServiceState::Stopped)).await;
                self.ready.update(|r| r.stopped = true);
            }
            for req in queued {
                let _ = req.done.try_send(false);
            }
        }
    }

    async fn supervise(&self, begin: Begin) {
        let mut backoff = Backoff {
            attempt: 0,
            delay: self.spec.restart.backoff.initial,
        };
        let mut begin = begin;
        loop {
            let mut proc = match begin {
                Begin::Launch => match Box::pin(self.launch()).await {
                    Some(p) => p,
                    None => return,
                },
                Begin::Attach(p) => *p,
                Begin::Ended => {
                    if !Box::pin(self.ended(&mut backoff)).await {
                        return;
                    }
                    begin = Begin::Launch;
                    continue;
                }
                Begin::Backoff(d) => {
                    if !Box::pin(self.backoff(d)).await {
                        return;
                    }
                    begin = Begin::Launch;
                    continue;
                }
            };
            if !self.watch(&mut proc, &mut backoff).await {
                return;
            }
            begin = Begin::Launch;
        }
    }

    /// Recorded as running, but it ended while no daemon watched: its last output, its exit,
    /// and the restart policy. False when the supervisor is done.
    async fn ended(&self, backoff: &mut Backoff) -> bool {
        self.hub.pump().finish().await;
        let info = ExitInfo {
            code: None,
            signal: None,
        };
        self.record_exit(info).await;
        self.restart_after(info, false, Duration::ZERO, backoff)
            .await
    }

    /// Watches one run of the process until it exits, is stopped or turns unhealthy: where a
    /// supervisor spends a service's life, so it holds little. False when the supervisor is done.
    async fn watch(&self, proc: &mut Launched, backoff: &mut Backoff) -> bool {
        self.ready.update(|r| r.started = true);
        let mut unhealthy = None;
        let health = self.spec.health.clone().map(|h| {
            let on_unhealthy = self.spec.restart.on_unhealthy.then(|| {
                let (tx, rx) = async_channel::bounded::<()>(1);
                unhealthy = Some(rx);
                tx
            });
            smol::spawn(health_loop(
                self.store.clone(),
                self.executor.clone(),
                self.key.clone(),
                h,
                self.ready.clone(),
                on_unhealthy,
            ))
        });
        let pump = self.hub.pump();
        let up_since = Instant::now();
        let woke = {
            let exited = async { Woke::Exited(proc.wait().await) };
            let stop = async { Woke::Stop(self.stops.recv().await) };
            let sick = async {
                match &unhealthy {
                    Some(rx) if rx.recv().await.is_ok() => Woke::Unhealthy,
                    _ => futures_lite::future::pending().await,
                }
            };
            exited.or(stop).or(sick).await
        };
        drop(health);
        Box::pin(self.after_run(proc, pump, woke, up_since.elapsed(), backoff)).await
    }

    /// What follows the end of a run. False when the supervisor is done.
    async fn after_run(
        &self,
        proc: &mut Launched,
        pump: Pump,
        woke: Woke,
        up: Duration,
        backoff: &mut Backoff,
    ) -> bool {
        match woke {
            Woke::Stop(req) => {
                self.set_state(ServiceState::Stopping).await;
                let (_, killed) = self.terminate(proc, req.signal, req.timeout).await;
                pump.finish().await;
                self.set_state(ServiceState::Stopped).await;
                self.ready.update(|r| r.stopped = true);
                let _ = req.done.try_send(killed);
                false
            }
            Woke::Exited(info) => {
                // Nothing left behind: children it did not take with it go too.
                self.sweep(proc).await;
                pump.finish().await;
                self.record_exit(info).await;
                self.restart_after(info, false, up, backoff).await
            }
            Woke::Unhealthy => {
                tracing::info!(service = %self.key, "unhealthy: restarting");
                let (info, _) = self
                    .terminate(proc, self.spec.stop.signal, self.spec.stop.timeout)
                    .await;
                pump.finish().await;
                self.record_exit(info).await;
                self.restart_after(info, true, up, backoff).await
            }
        }
    }

    async fn launch(&self) -> Option<Launched> {
        self.set_state(ServiceState::Starting).await;
        if let Err(e) = self.hub.reset_raw().await {
            self.fail(format!("cannot prepare {}: {e}", self.dir.display()))
                .await;
            return None;
        }
        // Recorded before anything can run: a daemon killed from here on finds the process.
        // A start wave recorded it already (one sync for the whole wave).
        let (project, name) = (&self.key.project, &self.key.name);
        let id = match self.launches.take_recorded(project, name) {
            Some(id) => id,
            None => {
                let id = self.launches.next(project, name);
                if let Err(e) = self.launches.record(project, name, &id).await {
                    self.fail(format!(
                        "cannot record the launch (nothing was started): {e}"
                    ))
                    .await;
                    return None;
                }
                id
            }
        };
        match runtime::launch(&self.spec, &self.dir, &self.executor, &self.launches, &id).await {
            Ok(p) => {
                let (pid, st) = (p.pid(), p.start_time());
                let container = p.container_id().map(str::to_owned);
                let gated = self.spec.health.is_some();
                let r = self
                    .store
                    .modify(&self.key, move |e| {
                        e.runtime.pid = Some(pid);
                        e.runtime.process_start_time = Some(st);
                        if container.is_some() {
                            if let registry::Location::Container { id, .. } = &mut e.location {
                                *id = container.clone();
                            }
                            e.runtime.container_id = container;
                        }
                        if !gated && e.state == ServiceState::Starting {
                            e.transition(ServiceState::Running)?;
                        }
                        Ok(())
                    })
                    .await;
                if let Err(e) = r {
                    tracing::warn!(service = %self.key, "cannot record the start: {e}");
                }
                Some(p)
            }
            Err(reason) => {
                self.fail(reason.to_string()).await;
                None
            }
        }
    }

    /// Stops the run; forgets its launch once it is known to be gone.
    async fn terminate(
        &self,
        proc: &mut Launched,
        signal: Signal,
        timeout: Duration,
    ) -> (ExitInfo, bool) {
        match proc.terminate(signal, timeout).await {
            Ok(r) => {
                self.launches
                    .forget(&self.key.project, &self.key.name)
                    .await;
                r
            }
            Err(e) => {
                tracing::warn!(service = %self.key, "stop: {e} (the next daemon start retries)");
                (ExitInfo::UNKNOWN, false)
            }
        }
    }

    /// Kills what the run left behind; forgets its launch once that is done.
    async fn sweep(&self, proc: &Launched) {
        match proc.sweep().await {
            Ok(()) => {
                self.launches
                    .forget(&self.key.project, &self.key.name)
                    .await
            }
            Err(e) => {
                tracing::warn!(service = %self.key, "cleaning up: {e} (the next daemon start retries)")
            }
        }
    }

    async fn record_exit(&self, info: ExitInfo) {
        self.set_state(ServiceState::Exited {
            code: info.code,
            signal: info.signal,
        })
        .await;
        self.ready.update(|r| {
            if info.success() {
                r.completed_ok = true;
            }
        });
    }

    /// Decides on a restart after an exit; waits out the backoff. False when the supervisor is done.
    /// `unhealthy`: the process was stopped because its health check failed.
    async fn restart_after(
        &self,
        info: ExitInfo,
        unhealthy: bool,
        up: Duration,
        backoff: &mut Backoff,
    ) -> bool {
        let Backoff { attempt, delay } = backoff;
        let policy = &self.spec.restart;
        let restart = match policy.policy {
            _ if unhealthy => true,
            RestartPolicy::No => false,
            RestartPolicy::OnFailure => !info.success(),
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        };
        if up >= BACKOFF_RESET_AFTER {
            *attempt = 0;
            *delay = policy.backoff.initial;
        }
        if !restart {
            let why = format!("it exited ({})", info.describe());
            self.ready.update(|r| r.ended = Some(why));
            return false;
        }
        if let Some(max) = policy.max_restarts
            && *attempt >= max
        {
            self.fail(format!(
                "exited ({}) after {max} restart(s); max_restarts reached",
                info.describe()
            ))
            .await;
            return false;
        }
        *attempt += 1;
        let next = Timestamp::now()
            .checked_add(jiff::SignedDuration::try_from(*delay).unwrap_or_default())
            .ok();
        self.set_state(ServiceState::Restarting {
            attempt: *attempt,
            next_start: next,
        })
        .await;
        let d = *delay;
        *delay = (*delay * 2).min(policy.backoff.max.max(policy.backoff.initial));
        self.backoff(d).await
    }

    /// Sleeps `d` unless a stop comes first (then records it). False when stopped.
    async fn backoff(&self, d: Duration) -> bool {
        let stop = async { Some(self.stops.recv().await) };
        let slept = async {
            Timer::after(d).await;
            None
        };
        match slept.or(stop).await {
            None => true,
            Some(req) => {
                self.set_state(ServiceState::Stopped).await;
                self.ready.update(|r| r.stopped = true);
                let _ = req.done.try_send(false);
                false
            }
        }
    }

    async fn fail(&self, reason: String) {
        tracing::info!(service = %self.key, "failed: {reason}");
        let r = reason.clone();
        self.set_state(ServiceState::Failed { reason: r }).await;
        self.ready.update(|st| st.failed = Some(reason));
    }

    async fn set_state(&self, to: ServiceState) {
        set_state(&self.store, &self.key, to).await;
    }
}

/// Moves the entry to `to`, through `pending` when there is no direct legal move (e.g. a stopped
/// service that fails to start again). Registry problems are logged, never fatal to a service.
pub(crate) async fn set_state(store: &Store, key: &ServiceKey, to: ServiceState) {
    let r = store
        .modify(key, move |e: &mut ServiceEntry| {
            if e.state == to {
                return Ok(());
            }
            if !e.state.can_transition_to(&to) && e.state.can_transition_to(&ServiceState::Pending)
            {
                e.transition(ServiceState::Pending)?;
            }
            e.transition(to)
        })
        .await;
    if let Err(e) = r {
        tracing::warn!(service = %key, "registry: {e}");
    }
}

/// Checks until cancelled. Failures count at most once per interval and not during the start
/// period; until the first pass, checks run up to 5 times per second so a health-gated start is
/// not held back by a long interval.
async fn health_loop(
    store: Store,
    executor: Executor,
    key: ServiceKey,
    spec: Box<HealthSpec>,
    ready: Arc<Readiness>,
    on_unhealthy: Option<Sender<()>>,
) {
    let target = spec.target.clone();
    let began = Instant::now();
    let mut failures: u32 = 0;
    let mut status = HealthStatus::Unknown;
    let mut last_counted: Option<Instant> = None;
    let fast = spec.interval.min(Duration::from_millis(200));
    Timer::after(Duration::from_millis(20).min(spec.interval)).await;
    loop {
        let context = (spec.env.as_slice(), spec.cwd.as_deref());
        let result =
            crate::health::check(&spec.probe, spec.timeout, &executor, &target, context).await;
        let now = Instant::now();
        let (ok, output) = match result {
            Ok(o) => (true, o),
            Err(o) => (false, o),
        };
        if ok {
            failures = 0;
            status = HealthStatus::Healthy;
        } else if began.elapsed() >= spec.start_period
            && last_counted.is_none_or(|t| now.duration_since(t) + fast / 2 >= spec.interval)
        {
            failures += 1;
            last_counted = Some(now);
            if failures >= spec.retries {
                status = HealthStatus::Unhealthy;
            }
        }
        let health = Health {
            status,
            last_check: Some(Timestamp::now()),
            last_output: Some(output.clone()),
            consecutive_failures: failures,
        };
        // Health first, then the state: a transition in the same change would hide the health
        // event.
        let r = store.modify(&key, move |e| e.set_health(health)).await;
        if let Err(e) = r {
            tracing::debug!(service = %key, "health not recorded: {e}");
        }
        if status == HealthStatus::Healthy {
            let r = store
                .modify(&key, |e| {
                    if e.state == ServiceState::Starting {
                        e.transition(ServiceState::Running)?;
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = r {
                tracing::debug!(service = %key, "running not recorded: {e}");
            }
        }
        match status {
            HealthStatus::Healthy => ready.update(|r| {
                r.healthy = true;
                r.unhealthy = None;
            }),
            HealthStatus::Unhealthy => {
                ready.update(|r| r.unhealthy = Some(output));
                if let Some(tx) = &on_unhealthy {
                    let _ = tx.try_send(());
                }
            }
            HealthStatus::Unknown => {}
        }
        let wait = if status == HealthStatus::Healthy {
            spec.interval
        } else {
            fast
        };
        Timer::after(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Size of the future `f` returns, without building its arguments.
    fn future_size<A, B, F, Fut>(_: F) -> usize
    where
        F: FnOnce(A, B) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// One supervisor task lives as long as its service: with 100 services its future was most
    /// of the daemon's per-service memory (6.3 KB, when it held its launch and stop sequences
    /// inline and a second copy of itself).
    #[test]
    fn supervisor_future_is_small() {
        let size = future_size(Supervisor::run);
        eprintln!("supervisor future: {size} bytes");
        assert!(size < 2048, "supervisor future: {size} bytes");
    }
}
