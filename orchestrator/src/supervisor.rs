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
use harness_protocol::{Health, HealthStatus, ServiceEntry, ServiceKey, ServiceState};
use harness_store::Store;
use jiff::Timestamp;

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
    pub done: Sender<StopOutcome>,
}

/// The answer to a [`StopRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StopOutcome {
    /// Stopped (verified), and whether SIGKILL was needed.
    Stopped { killed: bool },
    /// Not done yet, and why: the service's host does not answer. The supervisor keeps the
    /// service `unknown` with `stop_pending` and finishes the stop once the host answers.
    Pending(String),
    /// Not done, and why: the stop could not be recorded, so nothing was killed and the
    /// process keeps running.
    Refused(String),
}

/// The first retry of a stop that could not reach its host waits this long at least; later
/// ones twice as long each, up to [`STOP_RETRY_MAX`] (and always until the host answers).
const STOP_RETRY_MIN: Duration = Duration::from_secs(1);
const STOP_RETRY_MAX: Duration = Duration::from_secs(30);

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
    /// Re-attached to a process that is still running (a box already: `Begin` is held twice
    /// in the supervisor's future).
    Attach(Launched),
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

/// Why a launch gave no process.
enum Unstarted {
    /// Nothing runs: why.
    Failed(String),
    /// The start's answer was lost and a stop came before the host answered again: the stop
    /// is done (verified and recorded).
    Stopped,
}

impl From<String> for Unstarted {
    fn from(reason: String) -> Self {
        Unstarted::Failed(reason)
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
                let _ = req.done.try_send(StopOutcome::Stopped { killed: false });
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
                    Ok(p) => p,
                    // A stop came while the start's answer was lost; it is done.
                    Err(Unstarted::Stopped) => return,
                    Err(Unstarted::Failed(reason)) => {
                        if !Box::pin(self.launch_failed(reason, &mut backoff)).await {
                            return;
                        }
                        begin = Begin::Launch;
                        continue;
                    }
                },
                Begin::Attach(p) => p,
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
        // A tcp or http check counts only a listener of this process tree, when that can be
        // known: a process on this machine, whose sockets the daemon can read.
        let tree = (self.spec.placement == crate::addresses::Placement::Local).then(|| proc.pid());
        let reach = proc.reachability();
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
                Place {
                    tree,
                    reach: reach.clone(),
                },
            ))
        });
        let pump = self.hub.pump();
        let up_since = Instant::now();
        // Waiting for the host to answer when it is recorded as not answering (a daemon
        // restarted meanwhile), else for it to stop answering.
        let mut want_up = reach.is_some()
            && matches!(
                self.store.get(&self.key).await,
                Ok(Some(e)) if matches!(e.state, ServiceState::Unknown { stop_pending: false, .. })
            );
        let woke = loop {
            // `Err`: the host went down (`Some`) or answers again (`None`).
            let exited = async { Ok(Woke::Exited(proc.wait().await)) };
            let stop = async { Ok(Woke::Stop(self.stops.recv().await)) };
            let sick = async {
                match &unhealthy {
                    Some(rx) if rx.recv().await.is_ok() => Ok(Woke::Unhealthy),
                    _ => futures_lite::future::pending().await,
                }
            };
            let lost = async {
                match &reach {
                    Some(r) => Err(r.wait(want_up).await),
                    None => futures_lite::future::pending().await,
                }
            };
            match exited.or(stop).or(sick).or(lost).await {
                Err(down) => {
                    want_up = down.is_some();
                    if let Some(r) = &reach {
                        Box::pin(self.reached(down, r.host())).await;
                    }
                }
                // A check that cannot reach the host says nothing of the service.
                Ok(Woke::Unhealthy) if reach.as_ref().is_some_and(|r| r.down().is_some()) => {}
                // Record first, then act: a stop that cannot be recorded kills nothing
                // (status would show a dead process as running).
                Ok(Woke::Stop(req)) => match Box::pin(self.record(ServiceState::Stopping)).await {
                    Ok(()) => break Woke::Stop(req),
                    Err(e) => {
                        tracing::warn!(service = %self.key, "stop refused: {e}");
                        let _ = req.done.try_send(StopOutcome::Refused(format!(
                            "not stopped, it keeps running: the stop cannot be recorded ({e})"
                        )));
                    }
                },
                Ok(w) => break w,
            }
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
                // `stopping` is recorded (see `watch`).
                let mut reply = Some(req.done);
                let killed = self
                    .stop_verified(proc, req.signal, req.timeout, &mut reply)
                    .await;
                pump.finish().await;
                // Stopped, recorded or not: if not, the registry keeps `stopping`, and status,
                // which checks recorded pids while the registry cannot be written, shows it
                // exited.
                let _ = self.record_retrying(ServiceState::Stopped).await;
                self.ready.update(|r| r.stopped = true);
                // Answered once the registry says so: a `status` right after sees `stopped`.
                if let Some(tx) = reply {
                    let _ = tx.try_send(StopOutcome::Stopped { killed });
                }
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

    /// Launches one run. Every step is recorded before the next acts: `starting` in the
    /// registry, then the launch id on disk, then the process; a run whose pid cannot be
    /// recorded is stopped again (a pid the registry does not hold is never reported).
    async fn launch(&self) -> Result<Launched, Unstarted> {
        if let Err(e) = self.record(ServiceState::Starting).await {
            return Err(
                format!("not started: the start cannot be recorded in the registry ({e})").into(),
            );
        }
        // Another listener on one of its ports would answer its health check and make it fail:
        // refused before anything is spawned.
        if !self.spec.local_ports.is_empty() {
            let ports = self.spec.local_ports.clone();
            if let Some(why) = blocking::unblock(move || port_in_use(&ports)).await {
                return Err(why.into());
            }
        }
        if let Err(e) = self.hub.reset_raw().await {
            return Err(format!("cannot prepare {}: {e}", self.dir.display()).into());
        }
        // Recorded before anything can run: a daemon killed from here on finds the process.
        // A start wave recorded it already (one sync for the whole wave).
        let (project, name) = (&self.key.project, &self.key.name);
        let id = match self.launches.take_recorded(project, name) {
            Some(id) => id,
            None => {
                let id = self.launches.next(project, name);
                if let Err(e) = self.launches.record(project, name, &id).await {
                    return Err(
                        format!("cannot record the launch (nothing was started): {e}").into(),
                    );
                }
                id
            }
        };
        let began = Instant::now();
        let p = match runtime::launch(&self.spec, &self.dir, &self.executor, &self.launches, &id)
            .await
        {
            Ok(p) => p,
            Err(runtime::LaunchError::Executor(e @ command_executor::Error::AnswerLost { .. })) => {
                return Box::pin(self.answer_lost(&id, e.to_string())).await;
            }
            Err(e) => return Err(e.to_string().into()),
        };
        let spawned = Instant::now();
        tracing::debug!(service = %self.key, ms = began.elapsed().as_millis() as u64, "launched");
        self.record_started(&id, p, spawned)
            .await
            .map_err(Unstarted::Failed)
    }

    /// Records the pid (and `running`, unless a health check gates it) of run `id` that started
    /// at `spawned`; one whose pid cannot be recorded is stopped again.
    async fn record_started(
        &self,
        id: &str,
        mut p: Launched,
        spawned: Instant,
    ) -> Result<Launched, String> {
        let (pid, st) = (p.pid(), p.start_time());
        // A local process is noted in the launch journal (not synced), where a daemon killed
        // before the registry holds the pid finds it if its environment cannot be read.
        let local = self.spec.container.is_none()
            && !matches!(
                self.spec.placement,
                crate::addresses::Placement::Host { .. }
            );
        if local {
            self.launches.note_pid(id, pid, st).await;
        }
        let container = p.container_id().map(str::to_owned);
        let gated = self.spec.health.is_some();
        let mut last = None;
        for attempt in 0..RECORD_ATTEMPTS {
            if attempt > 0 {
                Timer::after(RECORD_RETRY).await;
            }
            let container = container.clone();
            let r = self
                .store
                .modify(&self.key, move |e| {
                    e.runtime.pid = Some(pid);
                    e.runtime.process_start_time = Some(st);
                    if container.is_some() {
                        if let harness_protocol::Location::Container { id, .. } = &mut e.location {
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
            match r {
                Ok(_) => {
                    self.ready.update(|r| {
                        r.launched_at = Some(spawned);
                        r.launched_pid = local.then_some((pid, st));
                    });
                    return Ok(p);
                }
                Err(e) => last = Some(e),
            }
        }
        let e = last.map(|e| e.to_string()).unwrap_or_default();
        tracing::warn!(service = %self.key, "cannot record the start: {e}; stopping it again");
        self.terminate(&mut p, self.spec.stop.signal, self.spec.stop.timeout)
            .await;
        Err(format!(
            "started as pid {pid} but its pid cannot be recorded in the registry ({e}); \
             stopped it again"
        ))
    }

    /// The start of launch `id` reached its host but its answer was lost: the run may be alive
    /// there, so the service is `unknown` (never `failed`, never started again meanwhile) until
    /// the host answers. Then the run is adopted if it began (`running`), or the launch failed
    /// if it did not. A stop asked for meanwhile is pending; once the host answers, every run
    /// of the service there is killed and the stop is done (ADR 0032).
    async fn answer_lost(&self, id: &str, error: String) -> Result<Launched, Unstarted> {
        let target = self.spec.host.as_ref().map(|h| {
            let user = match &self.spec.placement {
                crate::addresses::Placement::Host { user, .. } => user.clone(),
                _ => None,
            };
            h.target(user.as_deref())
        });
        let Some(reach) = target
            .as_ref()
            .and_then(|t| command_executor::service::remote::host_reachability(&self.executor, t))
        else {
            return Err(error.into());
        };
        let host = reach.host().to_owned();
        let since = Timestamp::now();
        tracing::warn!(service = %self.key, "start pending: {error}");
        let unknown = |stop_pending| ServiceState::Unknown {
            host: host.clone(),
            since,
            reason: format!("{error}; adopted or stopped once {host} answers"),
            stop_pending,
        };
        self.set_state(unknown(false)).await;
        self.ready.update(|r| {
            r.failed = Some(format!(
                "not known whether it started: {error}; it is adopted if it runs, or stopped if a stop is asked, once {host} answers"
            ))
        });
        let why = format!(
            "{host} did not answer the start: the stop finishes when {host} answers ({error})"
        );
        let mut stop_asked = false;
        let mut delay = STOP_RETRY_MIN;
        loop {
            let wait = delay;
            let mut back = Box::pin(async {
                Timer::after(wait).await;
                reach.wait(true).await;
            });
            while let Some(req) = self.stop_before(&mut back).await {
                if !stop_asked {
                    stop_asked = true;
                    self.set_state(unknown(true)).await;
                }
                let _ = req.done.try_send(StopOutcome::Pending(why.clone()));
            }
            drop(back);
            delay = (delay * 2).min(STOP_RETRY_MAX);
            let found = runtime::Recorded {
                launch_id: Some(id),
                keep: !stop_asked,
                local: &[],
                recorded: None,
            };
            match runtime::adopt(&self.spec, &self.dir, &self.executor, &self.launches, found).await
            {
                Ok(Some(p)) => {
                    tracing::info!(service = %self.key, pid = p.pid(), "adopted the run whose start's answer was lost");
                    self.ready.update(|r| r.failed = None);
                    return self
                        .record_started(id, p, Instant::now())
                        .await
                        .map_err(Unstarted::Failed);
                }
                Ok(None) if stop_asked => {
                    self.launches
                        .forget(&self.key.project, &self.key.name)
                        .await;
                    let _ = self.record_retrying(ServiceState::Stopped).await;
                    self.ready.update(|r| r.stopped = true);
                    return Err(Unstarted::Stopped);
                }
                Ok(None) => {
                    self.launches
                        .forget(&self.key.project, &self.key.name)
                        .await;
                    return Err(format!(
                        "not started: {host} answered that the run never began (the start's answer had been lost: {error})"
                    )
                    .into());
                }
                Err(e) => {
                    tracing::warn!(service = %self.key, "{host} still does not say whether the run began: {e}");
                }
            }
        }
    }

    /// A launch failed: recorded as failed, then the restart policy decides (`restart: always`
    /// tries again after its backoff). False when the supervisor is done.
    async fn launch_failed(&self, reason: String, backoff: &mut Backoff) -> bool {
        let retry = match self.spec.restart.policy {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure | RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        } && self
            .spec
            .restart
            .max_restarts
            .is_none_or(|max| backoff.attempt < max);
        let mut reason = reason;
        if reason.contains("(os error 24)") {
            reason.push_str(
                "; the daemon is out of file descriptors: raise its open-file limit \
                 (`ulimit -Hn`, LimitNOFILE=) or run fewer services",
            );
        }
        if retry {
            reason.push_str(&format!(
                "; retrying (restart: {})",
                match self.spec.restart.policy {
                    RestartPolicy::OnFailure => "on-failure",
                    RestartPolicy::Always => "always",
                    _ => "unless-stopped",
                }
            ));
        }
        self.fail(reason).await;
        if !retry {
            return false;
        }
        let Backoff { attempt, delay } = backoff;
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
        let policy = &self.spec.restart;
        *delay = (*delay * 2).min(policy.backoff.max.max(policy.backoff.initial));
        self.backoff(d).await
    }

    /// Records that the host went down (a starting or running service becomes `unknown`) or
    /// answers again (an `unknown` service without a pending stop is running again, or starting
    /// while a health check has not passed).
    async fn reached(&self, down: Option<command_executor::service::remote::Down>, host: &str) {
        let gated = self.spec.health.is_some();
        let host = host.to_owned();
        let r = self
            .store
            .modify(&self.key, move |e| match (down, &e.state) {
                (Some(d), ServiceState::Starting | ServiceState::Running) => {
                    let since = Timestamp::try_from(d.since).unwrap_or_else(|_| Timestamp::now());
                    // What a check would say of a host that does not answer is nothing: unknown,
                    // not failing (the health loop checks again once the host answers).
                    if gated {
                        e.health = Health {
                            status: HealthStatus::Unknown,
                            last_check: e.health.last_check,
                            last_output: Some(format!(
                                "not checked: {host} unreachable since {}",
                                since.round(jiff::Unit::Second).unwrap_or(since)
                            )),
                            consecutive_failures: 0,
                        };
                    }
                    e.transition(ServiceState::Unknown {
                        host,
                        since,
                        reason: d.detail,
                        stop_pending: false,
                    })
                }
                (
                    None,
                    ServiceState::Unknown {
                        stop_pending: false,
                        ..
                    },
                ) => {
                    let back = if gated && e.health.status != HealthStatus::Healthy {
                        ServiceState::Starting
                    } else {
                        ServiceState::Running
                    };
                    e.transition(back)
                }
                _ => Ok(()),
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(service = %self.key, "registry: {e}");
        }
    }

    /// Stops the run; returns whether SIGKILL was needed. When the host does not answer, the
    /// service is `unknown` with `stop_pending`, `reply` (taken) gets [`StopOutcome::Pending`]
    /// at once, and the stop is tried again whenever the host answers (stop requests meanwhile
    /// are answered `Pending` too): it returns only once the stop is verified, so a process that
    /// may be alive is never recorded as stopped. A `reply` left is the caller's to answer.
    async fn stop_verified(
        &self,
        proc: &mut Launched,
        signal: Signal,
        timeout: Duration,
        reply: &mut Option<Sender<StopOutcome>>,
    ) -> bool {
        let mut delay = STOP_RETRY_MIN;
        loop {
            let err = match proc.terminate(signal, timeout).await {
                Ok((_, killed)) => {
                    self.launches
                        .forget(&self.key.project, &self.key.name)
                        .await;
                    return killed;
                }
                Err(e) => e,
            };
            let reach = proc.reachability();
            // A container whose engine could not be told to stop it may still run: pending too,
            // tried again after the delay (there is no follower to say when the engine answers).
            let container = proc.container_id().is_some();
            if reach.is_none() && !container {
                tracing::warn!(service = %self.key, "stop: {err} (the next daemon start retries)");
                return false;
            }
            let host = match &reach {
                // A container's engine may fail while its host answers.
                Some(r) if !container || r.down().is_some() => r.host().to_owned(),
                _ => self
                    .spec
                    .host
                    .as_ref()
                    .map(|h| format!("{}'s docker engine", h.name))
                    .unwrap_or_else(|| "the docker engine".to_owned()),
            };
            let since = reach
                .as_ref()
                .and_then(|r| r.down())
                .and_then(|d| Timestamp::try_from(d.since).ok())
                .unwrap_or_else(Timestamp::now);
            tracing::warn!(service = %self.key, "stop pending: {err}");
            self.set_state(ServiceState::Unknown {
                host: host.clone(),
                since,
                reason: err.to_string(),
                stop_pending: true,
            })
            .await;
            let why = format!(
                "{host} unreachable since {}: the stop finishes when {host} answers ({err})",
                since.round(jiff::Unit::Second).unwrap_or(since)
            );
            if let Some(tx) = reply.take() {
                let _ = tx.try_send(StopOutcome::Pending(why.clone()));
            }
            let wait = delay;
            let mut back = Box::pin(async {
                Timer::after(wait).await;
                if let Some(r) = &reach {
                    r.wait(true).await;
                }
            });
            while let Some(req) = self.stop_before(&mut back).await {
                let _ = req.done.try_send(StopOutcome::Pending(why.clone()));
            }
            drop(back);
            delay = (delay * 2).min(STOP_RETRY_MAX);
        }
    }

    /// The next stop asked for before `back` (the wait for an unreachable host) is over; `None`
    /// once it is. Pending stops are answered by the caller while it waits.
    async fn stop_before<F: Future<Output = ()>>(
        &self,
        back: &mut std::pin::Pin<Box<F>>,
    ) -> Option<StopRequest> {
        let more = async { Some(self.stops.recv().await) };
        let came = async {
            back.as_mut().await;
            None
        };
        came.or(more).await
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
            r.exited = Some(info);
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

    /// Sleeps `d` unless a stop comes first (then records it). False when stopped. A stop that
    /// cannot be recorded is refused, and the backoff goes on.
    async fn backoff(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            let stop = async { Some(self.stops.recv().await) };
            let slept = async {
                Timer::at(until).await;
                None
            };
            let Some(req) = slept.or(stop).await else {
                return true;
            };
            match self.record_retrying(ServiceState::Stopped).await {
                Ok(()) => {
                    self.ready.update(|r| r.stopped = true);
                    let _ = req.done.try_send(StopOutcome::Stopped { killed: false });
                    return false;
                }
                Err(e) => {
                    let _ = req.done.try_send(StopOutcome::Refused(format!(
                        "not stopped, its restart is still due: the stop cannot be recorded ({e})"
                    )));
                }
            }
        }
    }

    /// Records the failure and tells whoever waits for the service. A failure that cannot be
    /// recorded yet (disk full) is told at once, and recorded once it can be.
    async fn fail(&self, reason: String) {
        tracing::info!(service = %self.key, "failed: {reason}");
        let failed = ServiceState::Failed {
            reason: reason.clone(),
        };
        let first = self.record(failed.clone()).await;
        self.ready.update(|st| st.failed = Some(reason));
        if first.is_err() {
            self.set_state(failed).await;
        }
    }

    /// Records `to`. A storage error (disk full) is retried until the change is recorded, so
    /// that the registry catches up with what happened before the supervisor acts on it (an
    /// exit before the restart, a restart before the launch).
    async fn set_state(&self, to: ServiceState) {
        let mut wait = RECORD_RETRY;
        loop {
            match self.record(to.clone()).await {
                Ok(()) => return,
                Err(harness_store::StoreError::Storage(e)) => {
                    tracing::warn!(service = %self.key, "registry: {e}; retrying in {wait:?}");
                    Timer::after(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    tracing::warn!(service = %self.key, "registry: {e}");
                    return;
                }
            }
        }
    }

    /// Moves to `to`, durably, or says why not.
    async fn record(&self, to: ServiceState) -> Result<(), harness_store::StoreError> {
        record_state(&self.store, &self.key, to).await
    }

    /// Moves to `to`, trying a few times (the store reopens after an I/O error).
    async fn record_retrying(&self, to: ServiceState) -> Result<(), harness_store::StoreError> {
        let mut attempt = 0;
        loop {
            match self.record(to.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(service = %self.key, "registry: {e}");
                    attempt += 1;
                    if attempt == RECORD_ATTEMPTS {
                        return Err(e);
                    }
                }
            }
            Timer::after(RECORD_RETRY).await;
        }
    }
}

/// Why the service cannot start on this machine: another process listens on one of its ports
/// (on 127.0.0.1 or a wildcard address), named by pid and command when this daemon can read its
/// file descriptors.
fn port_in_use(ports: &[u16]) -> Option<String> {
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    for &port in ports {
        let users = command_executor::service::procfs::port_users(loopback, port);
        let Some((listener, owners)) = users.first() else {
            continue;
        };
        let owner = match owners.as_slice() {
            [] => "a process this daemon cannot inspect (another user's?)".to_owned(),
            [o] => format!("pid {} ({})", o.pid, o.name),
            [o, rest @ ..] => format!(
                "pid {} ({}) and {} other process(es)",
                o.pid,
                o.name,
                rest.len()
            ),
        };
        return Some(format!(
            "port {port} is in use by {owner}, listening on {}:{port}; stop it or change `ports:`",
            listener.addr
        ));
    }
    None
}

/// How often a record the service's truth depends on is tried, and how far apart.
const RECORD_ATTEMPTS: u32 = 3;
const RECORD_RETRY: Duration = Duration::from_millis(100);

/// Moves the entry to `to` (see [`set_state`]), returning the registry's error.
pub(crate) async fn record_state(
    store: &Store,
    key: &ServiceKey,
    to: ServiceState,
) -> Result<(), harness_store::StoreError> {
    store
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
        .await
        .map(|_| ())
}

/// Moves the entry to `to`, through `pending` when there is no direct legal move (e.g. a stopped
/// service that fails to start again). Registry problems are logged, never fatal to a service.
pub(crate) async fn set_state(store: &Store, key: &ServiceKey, to: ServiceState) {
    if let Err(e) = record_state(store, key, to).await {
        tracing::warn!(service = %key, "registry: {e}");
    }
}

/// Where a checked service runs, as its health loop needs it.
struct Place {
    /// Its process tree (a local process), whose listeners alone count for tcp and http checks.
    tree: Option<u32>,
    /// Its host's reachability (a remote process): no check runs while the host does not answer.
    reach: Option<command_executor::service::remote::Reachability>,
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
    place: Place,
) {
    let Place { tree, reach } = place;
    let target = spec.target.clone();
    let began = Instant::now();
    let mut failures: u32 = 0;
    let mut status = HealthStatus::Unknown;
    let mut last_counted: Option<Instant> = None;
    let fast = spec.interval.min(Duration::from_millis(200));
    Timer::after(Duration::from_millis(20).min(spec.interval)).await;
    loop {
        let context = (spec.env.as_slice(), spec.cwd.as_deref());
        let checked_at = Timestamp::now();
        // On a host that does not answer, a check says nothing of the service: its health is
        // unknown (not failing, see `reached`), and a check under way when the host goes down is
        // abandoned.
        let check = async {
            Some(
                crate::health::check(&spec.probe, spec.timeout, &executor, &target, context, tree)
                    .await,
            )
        };
        let down = async {
            match &reach {
                Some(r) => {
                    r.wait(false).await;
                    None
                }
                None => futures_lite::future::pending().await,
            }
        };
        let result = match reach.as_ref().and_then(|r| r.down()) {
            Some(_) => None,
            None => check.or(down).await,
        };
        let now = Instant::now();
        let Some(result) = result else {
            // `reached` recorded the health as unknown; checked again once the host answers.
            if let Some(r) = &reach {
                r.wait(true).await;
            }
            continue;
        };
        let (ok, output) = match result {
            Ok(o) => (true, o),
            Err(o) => (false, o),
        };
        ready.probed(ok, &output, checked_at);
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
