//! What should exist: turns a services.yaml [`Project`] into running services and keeps them so.
//!
//! The daemon owns one [`Orchestrator`]. It starts services in dependency order (independent ones
//! in parallel, dependents only once their conditions hold), records every change in the
//! registry [`Store`] — so progress is observed by subscribing to the registry's events — runs
//! health checks, applies restart policies, keeps every service's output in rotated log files,
//! and stops services with nothing left behind.
//!
//! Services survive the daemon: a local service's output goes to files, not pipes, and a new
//! daemon re-attaches to what is still running ([`Orchestrator::open`]).
//!
//! ```no_run
//! # async fn demo(store: harness_store::Store, project: harness_config::Project) -> orchestrator::Result<()> {
//! use orchestrator::*;
//! let orch = Orchestrator::open(OrchestratorOptions::new("/var/lib/harness", store)).await?;
//! let report = orch.apply(&project, ApplyOptions::default()).await?;
//! for s in report.failures() {
//!     eprintln!("{}: {}", s.name, s.error.as_deref().unwrap_or(""));
//! }
//! orch.stop(&project.name, StopOptions::default()).await?;
//! # Ok(()) }
//! ```
//!
//! State directory layout (`state_dir`):
//!
//! ```text
//! launches                                 journal of launch records (`+ID`/`-ID`, `=ID PID STARTTIME` lines, see launches.rs)
//! projects/<project>/project.yaml          the applied definition (resolved services.yaml)
//! projects/<project>/base_dir              folder of services.yaml (relative paths)
//! projects/<project>/hashes                `SERVICE HASH`: definition hash of each running instance
//! projects/<project>/services/<svc>/stdout, stderr   raw output of the current run (0600)
//! projects/<project>/services/<svc>/offsets          how much of it is in the log
//! projects/<project>/services/<svc>/<svc>.log[.N]    `TIME out|err TEXT`, size-rotated (0600)
//! ```
//! (Daemons before the `hashes` file and the journal's `=` lines wrote `services/<svc>/hash` and
//! `services/<svc>/pid`; both are still read when nothing newer names the service.)
//! Pid and start time of each running service also live in the registry entry (`runtime`);
//! remote and container services keep their own run records there (see `runtime`).
//!
//! Progress: every state change (`service.state`: pending → starting → running → …) and health
//! change (`service.health`) is a registry event as it happens; subscribe to the store (or the
//! daemon's event stream) to follow an `apply`. Log lines are not events: use
//! [`Orchestrator::logs`].

pub mod addresses;
mod apply;
pub mod deploy;
mod drift;
mod error;
mod health;
pub mod hosts;
mod launches;
mod logs;
mod names;
pub mod network;
pub mod operations;
mod readiness;
mod report;
mod runtime;
mod spec;
mod supervisor;
pub mod usage;
pub mod watch;

/// A project loaded from `yaml` through the real loader, for unit tests.
#[cfg(test)]
pub(crate) fn test_project(yaml: &str) -> harness_config::Project {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("services.yaml");
    std::fs::write(&path, yaml).expect("write services.yaml");
    let loaded = harness_config::load(&path);
    loaded
        .project
        .unwrap_or_else(|| panic!("{:?}", loaded.errors))
}

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use command_executor::Executor;
use harness_config::Project;
use harness_protocol::{ServiceEntry, ServiceKey};
use harness_store::Store;

pub use error::{Error, Result};

/// How [`Orchestrator::exec_with`] runs a command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    /// stdin is a pipe the caller writes ([`command_executor::Process::take_stdin`]); else empty.
    pub stdin: bool,
    /// Output as it is read rather than in lines ([`command_executor::Command::chunked_output`]).
    pub chunked: bool,
    /// Run on a pseudo-terminal of this size ([`command_executor::Command::pty`]).
    pub pty: Option<command_executor::PtySize>,
    /// `TERM` for the program on a terminal (set on top of the service's environment).
    pub term: Option<String>,
}
pub use logs::{LogLimits, LogLine, LogQuery, Logs, StreamKind};
pub use report::{
    Action, ApplyOptions, ApplyReport, ServiceHealth, ServiceReport, StopOptions, StopReport,
    StoppedService,
};

pub use operations::{CancelRequest, OperationLog, Operations, StepId};

use logs::LogHub;
use readiness::Readiness;
use supervisor::Stops;

/// How long after a failed registry commit `status` checks recorded local pids itself.
const STATUS_VERIFY_AFTER_FAILURE: std::time::Duration = std::time::Duration::from_secs(60);

/// How the daemon sets up its orchestrator.
#[derive(Clone)]
pub struct OrchestratorOptions {
    /// Where definitions and logs are kept (see the crate docs for the layout).
    pub state_dir: PathBuf,
    pub store: Store,
    /// Runs health-check commands and `exec`.
    pub executor: Executor,
    pub log_limits: LogLimits,
}

impl OrchestratorOptions {
    pub fn new(state_dir: impl Into<PathBuf>, store: Store) -> Self {
        OrchestratorOptions {
            state_dir: state_dir.into(),
            store,
            executor: Executor::default(),
            log_limits: LogLimits::default(),
        }
    }
}

/// The service manager. Cheap to clone. Dropping the last clone detaches from the services
/// without stopping them (as a killed daemon would); [`Orchestrator::shutdown`] is the orderly
/// way.
#[derive(Clone)]
pub struct Orchestrator {
    life: Arc<Life>,
}

/// Detaches every supervisor when the last handle goes (their tasks hold `Inner`, so `Inner`
/// alone would never drop).
struct Life(Arc<Inner>);

impl Drop for Life {
    fn drop(&mut self) {
        self.0.detach_all();
    }
}

pub(crate) struct Inner {
    pub state_dir: PathBuf,
    pub store: Store,
    pub executor: Executor,
    pub log_limits: LogLimits,
    pub projects: Mutex<BTreeMap<String, ProjectRt>>,
    pub hubs: Mutex<HashMap<ServiceKey, Arc<LogHub>>>,
    /// Applies, stops and restarts of one project run one at a time; other projects' run beside
    /// them (one slow health-gated start does not hold up another project's `status` or `stop`).
    pub ops: Mutex<BTreeMap<String, Arc<async_lock::Mutex<()>>>>,
    /// Held shared by every apply, stop and restart, and exclusively by shutdown, which so waits
    /// for all of them and lets none begin after it.
    pub gate: async_lock::RwLock<()>,
    pub shut: std::sync::atomic::AtomicBool,
    /// Bumped per project by every stop, so that an apply still waiting for readiness gives up
    /// at once instead of holding its project's lock (and the stop) until its startup timeouts.
    pub generations: Mutex<BTreeMap<String, u64>>,
    pub generation_changed: event_listener::Event,
    /// Launch ids and service cgroups (crash-consistent launches).
    pub launches: Arc<launches::Launches>,
    /// Services this daemon found not running when it started although recorded running
    /// (`drift` reports them until `sync` acknowledges them).
    pub gone_at_start: Mutex<Vec<drift::GoneAtStart>>,
    /// The meshes (project, network) a watch task re-applies when a member's interface is gone
    /// (a member rebooted): one task each (docs/adr/0034-wireguard-mesh.md).
    pub mesh_watches: Mutex<BTreeSet<(String, String)>>,
}

/// Held while an apply, stop or restart changes one project.
pub(crate) struct Operation<'a> {
    _project: async_lock::MutexGuardArc<()>,
    _gate: async_lock::RwLockReadGuard<'a, ()>,
}

/// A project as applied.
pub(crate) struct ProjectRt {
    /// Shared with whoever reads it (`known_project`), never copied per use or per service.
    pub project: Arc<Project>,
    pub base_dir: Option<PathBuf>,
    pub services: BTreeMap<String, Slot>,
}

/// One service's supervision.
pub(crate) struct Slot {
    /// The definition hash of the running instance.
    pub hash: Option<String>,
    pub health_check: Option<String>,
    /// Signal and timeout of the running instance.
    pub stop: Option<(command_executor::Signal, std::time::Duration)>,
    pub ready: Arc<Readiness>,
    pub handle: Option<Handle>,
}

impl Slot {
    pub fn new() -> Slot {
        Slot {
            hash: None,
            health_check: None,
            stop: None,
            ready: Arc::new(Readiness::default()),
            handle: None,
        }
    }
}

/// A running supervisor.
pub(crate) struct Handle {
    pub stops: Arc<Stops>,
    pub task: smol::Task<()>,
}

impl Orchestrator {
    /// Opens the orchestrator on `state_dir` and re-attaches to every service the registry
    /// records as running: a process that still has the recorded pid *and* start time is
    /// supervised again (never started twice); one that is gone is marked exited and its restart
    /// policy applied; one waiting out a backoff resumes it. A service stopped on request is
    /// started again only under `restart: always` (like Docker; `unless-stopped` stays stopped).
    pub async fn open(opts: OrchestratorOptions) -> Result<Orchestrator> {
        let projects = opts.state_dir.join("projects");
        async_fs::create_dir_all(&projects)
            .await
            .map_err(|e| Error::io(&projects, e))?;
        let launches = {
            let dir = opts.state_dir.clone();
            Arc::new(blocking::unblock(move || launches::Launches::new(&dir)).await)
        };
        let inner = Arc::new(Inner {
            launches,
            state_dir: opts.state_dir,
            store: opts.store,
            executor: opts.executor,
            log_limits: opts.log_limits,
            projects: Mutex::new(BTreeMap::new()),
            hubs: Mutex::new(HashMap::new()),
            ops: Mutex::new(BTreeMap::new()),
            gate: async_lock::RwLock::new(()),
            shut: false.into(),
            generations: Mutex::new(BTreeMap::new()),
            generation_changed: event_listener::Event::new(),
            gone_at_start: Mutex::new(Vec::new()),
            mesh_watches: Mutex::new(BTreeSet::new()),
        });
        let orch = Orchestrator {
            life: Arc::new(Life(inner)),
        };
        apply::reattach(&orch.life.0).await?;
        for name in orch.projects() {
            if let Some(p) = orch.project(&name) {
                orch.life.0.set_log_limits(&p);
            }
            // The meshes a previous daemon brought up are watched again (a member that rebooted
            // meanwhile rejoins).
            for net in network::recorded(&orch.life.0.state_dir, &name).await {
                apply::watch_mesh(&orch.life.0, &name, &net);
            }
        }
        Ok(orch)
    }

    fn inner(&self) -> Result<&Arc<Inner>> {
        let inner = &self.life.0;
        if inner.shut.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::ShutDown);
        }
        Ok(inner)
    }

    /// Brings the project to its definition, idempotently: services that run with an unchanged
    /// definition stay; changed ones are restarted; missing ones start. Services start as soon as
    /// their `depends_on` conditions hold (`started`, `healthy`, `completed_successfully`), and
    /// each must become ready — healthy if it has a health check — within its `startup_timeout`.
    /// A failure fails that service and skips its dependents; the others proceed. Services that
    /// are no longer in the project are reported as orphans (stopped with `remove_orphans`).
    ///
    /// Relative `working_dir`s and binaries are taken relative to `opts.base_dir` (the folder of
    /// services.yaml); give it whenever the project came from a file.
    ///
    /// Progress (every state and health change) is in the registry's event stream as it
    /// happens; the returned report is the summary.
    pub async fn apply(&self, project: &Project, opts: ApplyOptions) -> Result<ApplyReport> {
        let inner = self.inner()?;
        let _op = inner.operation(&project.name).await;
        inner.set_log_limits(project);
        apply::apply(inner, project, &opts).await
    }

    /// Stops services of `project` (all, or `opts.services`), dependents before their
    /// dependencies, each with its configured signal to its whole process group, SIGKILL after
    /// its timeout, and finally anything left in its session. Stopping a service that running
    /// services depend on is refused with [`Error::HasDependents`] unless `opts.force`, which
    /// stops those dependents first.
    pub async fn stop(&self, project: &str, opts: StopOptions) -> Result<StopReport> {
        let inner = self.inner()?;
        inner.cancel(project);
        let _op = inner.operation(project).await;
        apply::stop(inner, project, &opts).await
    }

    /// Stops `services` (all when empty) and starts them again with the last applied
    /// definition; their dependents keep running.
    pub async fn restart(&self, project: &str, services: &[String]) -> Result<ApplyReport> {
        self.restart_with(project, services, None).await
    }

    /// [`Orchestrator::restart`], recording its steps in `operation`.
    pub async fn restart_with(
        &self,
        project: &str,
        services: &[String],
        operation: Option<OperationLog>,
    ) -> Result<ApplyReport> {
        let inner = self.inner()?;
        let _op = inner.operation(project).await;
        apply::restart(inner, project, services, operation).await
    }

    /// Registry entries (state, pid, endpoints, health, restarts), of one project or all.
    ///
    /// While the registry cannot be written (disk full) it may be behind: then a local process
    /// it records as active is checked (pid and start time) and, if it is gone, shown as
    /// `exited` without a pid until its supervisor can record what happened.
    pub async fn status(&self, project: Option<&str>) -> Result<Vec<ServiceEntry>> {
        let store = &self.inner()?.store;
        let mut list = store.list(project).await?;
        if store.failed_within(STATUS_VERIFY_AFTER_FAILURE) {
            let checks: Vec<(usize, u32, u64)> = list
                .iter()
                .enumerate()
                .filter(|(_, e)| {
                    e.location == harness_protocol::Location::Local && e.state.is_active()
                })
                .filter_map(|(i, e)| Some((i, e.runtime.pid?, e.runtime.process_start_time?)))
                .collect();
            let gone: Vec<usize> = blocking::unblock(move || {
                use command_executor::service::procfs;
                checks
                    .into_iter()
                    .filter(|&(_, pid, st)| {
                        procfs::stat(pid).is_none_or(|r| r.zombie || r.start_time != st)
                    })
                    .map(|(i, _, _)| i)
                    .collect()
            })
            .await;
            for i in gone {
                let e = &mut list[i];
                e.state = harness_protocol::ServiceState::Exited {
                    code: None,
                    signal: None,
                };
                e.runtime.pid = None;
                e.runtime.process_start_time = None;
            }
        }
        Ok(list)
    }

    /// [`Orchestrator::status`] as the registry holds the entries (their JSON, not decoded), or
    /// `None` while the registry may be behind (a write failed recently): then the entries must
    /// be checked, with [`Orchestrator::status`].
    pub async fn status_encoded(
        &self,
        project: Option<&str>,
    ) -> Result<Option<Vec<Box<serde_json::value::RawValue>>>> {
        let store = &self.inner()?.store;
        if store.failed_within(STATUS_VERIFY_AFTER_FAILURE) {
            return Ok(None);
        }
        Ok(Some(store.list_encoded(project).await?))
    }

    /// The projects this daemon has applied.
    pub fn projects(&self) -> Vec<String> {
        self.life
            .0
            .projects
            .lock()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The definition of an applied project, as applied.
    pub fn project(&self, name: &str) -> Option<Arc<Project>> {
        let projects = self.life.0.projects.lock().ok()?;
        projects.get(name).map(|rt| rt.project.clone())
    }

    /// Health of services (all of the project when `services` is empty): what is checked, the
    /// status, the last check's time and output.
    pub async fn health(&self, project: &str, services: &[String]) -> Result<Vec<ServiceHealth>> {
        apply::health(self.inner()?, project, services).await
    }

    /// Deletes the log files of `services` (all when empty) of a project.
    pub async fn clear_logs(&self, project: &str, services: &[String]) -> Result<Vec<String>> {
        let inner = self.inner()?;
        let def = self.project(project);
        let mut names: Vec<String> = inner
            .store
            .list(Some(project))
            .await?
            .into_iter()
            .map(|e| e.name)
            .collect();
        if let Some(p) = &def {
            names.extend(p.services.keys().cloned());
        }
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Err(Error::UnknownProject {
                project: project.to_owned(),
            });
        }
        if !services.is_empty() {
            names = crate::names::expand(project, &names, services)?;
        }
        for n in &names {
            let dir = inner.service_dir(project, n);
            inner
                .hub(project, n)
                .clear()
                .await
                .map_err(|e| Error::io(&dir, e))?;
        }
        Ok(names)
    }

    /// Log lines per the query: history (with `tail`/`since`), then, with `follow`, new lines as
    /// they are written, across restarts of the services, until the stream is dropped.
    pub async fn logs(&self, query: LogQuery) -> Result<Logs> {
        apply::logs(self.inner()?, &query).await
    }

    /// Runs `argv` in the service's context (its working directory and environment, where it
    /// runs). The process's events carry its output; the caller waits or signals it.
    pub async fn exec(
        &self,
        project: &str,
        service: &str,
        argv: &[String],
    ) -> Result<command_executor::Process> {
        apply::exec(
            self.inner()?,
            project,
            service,
            argv,
            &ExecOptions::default(),
        )
        .await
    }

    /// [`Orchestrator::exec`] with stdin, streamed output or a terminal (`harness exec`).
    pub async fn exec_with(
        &self,
        project: &str,
        service: &str,
        argv: &[String],
        opts: &ExecOptions,
    ) -> Result<command_executor::Process> {
        apply::exec(self.inner()?, project, service, argv, opts).await
    }

    /// Compares the registry with what runs everywhere (ADR 0036): local processes carrying this
    /// daemon's launch ids, run directories on every host its projects use, labelled containers
    /// on every engine, and each running instance's definition with `given` (the services file;
    /// the applied definition when `None`). Read-only.
    pub async fn drift(
        &self,
        given: Option<(Project, Option<PathBuf>)>,
    ) -> Result<harness_protocol::drift::DriftResult> {
        let inner = self.inner()?;
        drift::drift(inner, given.map(|(p, b)| (Arc::new(p), b))).await
    }

    /// Resolves drift findings: `dry_run` says what `auto` would do, `auto` does only the safe
    /// ones, `adopt`/`kill`/`forget` act on one finding. Each action holds its project's
    /// operation lock, as start and stop do, and re-verifies what it acts on.
    pub async fn sync(
        &self,
        mode: harness_protocol::drift::SyncMode,
        project: Option<String>,
        given: Option<(Project, Option<PathBuf>)>,
    ) -> Result<harness_protocol::drift::SyncResult> {
        let inner = self.inner()?;
        drift::sync(inner, mode, project, given.map(|(p, b)| (Arc::new(p), b))).await
    }

    /// Ends the orchestrator: with `stop_services` every service of every project is stopped
    /// first; without, they keep running for the next daemon to re-attach. Once shut down, a
    /// second call does nothing (`daemon.stop --stop-services` shuts down before the daemon does).
    pub async fn shutdown(&self, stop_services: bool) -> Result<()> {
        let Ok(inner) = self.inner() else {
            return Ok(());
        };
        for name in self.projects() {
            inner.cancel(&name);
        }
        {
            let _all = inner.gate.write().await;
            if stop_services {
                let names: Vec<String> = inner
                    .projects
                    .lock()
                    .map(|p| p.keys().cloned().collect())
                    .unwrap_or_default();
                for name in names {
                    let opts = StopOptions {
                        force: true,
                        ..StopOptions::default()
                    };
                    apply::stop(inner, &name, &opts).await?;
                }
            }
            inner.shut.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        inner.launches.written().await;
        inner.detach_all();
        Ok(())
    }
}

impl Inner {
    pub fn generation(&self, project: &str) -> u64 {
        self.generations
            .lock()
            .map(|g| g.get(project).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Makes pending starts of `project` give up (see `generations`).
    pub fn cancel(&self, project: &str) {
        if let Ok(mut g) = self.generations.lock() {
            *g.entry(project.to_owned()).or_insert(0) += 1;
        }
        self.generation_changed.notify(usize::MAX);
    }

    /// The right to change `project`: its own lock, under the shared gate.
    pub async fn operation(&self, project: &str) -> Operation<'_> {
        let gate = self.gate.read().await;
        let lock = self
            .ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(project.to_owned())
            .or_default()
            .clone();
        Operation {
            _project: lock.lock_arc().await,
            _gate: gate,
        }
    }

    /// Resolves once `project` was cancelled after generation `seen`.
    pub async fn cancelled(&self, project: &str, seen: u64) {
        loop {
            let listener = self.generation_changed.listen();
            if self.generation(project) != seen {
                return;
            }
            listener.await;
        }
    }

    /// Cancels every supervisor; the processes keep running.
    fn detach_all(&self) {
        let handles: Vec<Handle> = match self.projects.lock() {
            Ok(mut p) => p
                .values_mut()
                .flat_map(|rt| rt.services.values_mut().filter_map(|s| s.handle.take()))
                .collect(),
            Err(_) => Vec::new(),
        };
        drop(handles);
    }

    pub fn project_dir(&self, project: &str) -> PathBuf {
        self.state_dir.join("projects").join(project)
    }

    pub fn service_dir(&self, project: &str, service: &str) -> PathBuf {
        self.project_dir(project).join("services").join(service)
    }

    /// Each service's `logging:` over the daemon's default rotation.
    fn set_log_limits(&self, project: &Project) {
        for (name, s) in &project.services {
            let mut limits = self.log_limits;
            if let Some(b) = s.logging.max_size {
                limits.max_bytes = b;
            }
            if let Some(k) = s.logging.max_files {
                limits.keep = usize::try_from(k).unwrap_or(usize::MAX).max(1);
            }
            self.hub(&project.name, name).set_limits(limits);
        }
    }

    pub fn hub(&self, project: &str, service: &str) -> Arc<LogHub> {
        let key = ServiceKey {
            project: project.to_owned(),
            name: service.to_owned(),
        };
        let mut hubs = match self.hubs.lock() {
            Ok(h) => h,
            Err(p) => p.into_inner(),
        };
        hubs.entry(key)
            .or_insert_with(|| {
                LogHub::new(service, self.service_dir(project, service), self.log_limits)
            })
            .clone()
    }
}
