//! The orchestrator's operations: apply (start in dependency order), stop (reverse order),
//! restart, re-attach on open, and the read-only views (health, logs, exec).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::Timer;
use command_executor::Command;
use futures_lite::FutureExt;
use harness_config::{Condition, Project};
use harness_protocol::{Endpoint, HealthStatus, Location, ServiceEntry, ServiceKey, ServiceState};

use crate::addresses::{Placement, daemon_ip};
use crate::operations::{OperationLog, StepId};
use crate::readiness::{self, ProbeSink, Readiness};
use crate::report::*;
use crate::spec::Resolved;
use crate::supervisor::{
    self, Begin, FAILURE_LINES, StopOutcome, StopRequest, Supervisor, set_state,
};
use crate::{Error, Handle, Inner, ProjectRt, Result, Slot};
use crate::{LogQuery, Logs};
use harness_protocol::operation::{StepKind, StepResult};

/// How long a service may take to become ready when it sets no `startup_timeout`.
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(300);

fn check_project_name(name: &str) -> Result<()> {
    ServiceKey::new(name, "x").map_err(|e| Error::Service {
        service: name.to_owned(),
        message: e.to_string(),
    })?;
    if name == "." || name == ".." {
        return Err(Error::Service {
            service: name.to_owned(),
            message: "project names . and .. are reserved".into(),
        });
    }
    Ok(())
}

fn key(project: &str, name: &str) -> ServiceKey {
    ServiceKey {
        project: project.to_owned(),
        name: name.to_owned(),
    }
}

async fn write_atomic(path: PathBuf, bytes: Vec<u8>) -> Result<()> {
    let p = path.clone();
    blocking::unblock(move || {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = p.with_extension("tmp");
        // 0600: definitions carry environment values, which may be secrets.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        std::io::Write::write_all(&mut f, &bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &p)
    })
    .await
    .map_err(|e| Error::io(path, e))
}

async fn save_project(inner: &Inner, project: &Project, base: Option<&Path>) -> Result<()> {
    let yaml = serde_saphyr::to_string(project).map_err(|e| Error::SavedProject {
        project: project.name.clone(),
        message: e.to_string(),
    })?;
    let dir = inner.project_dir(&project.name);
    let base = base
        .map(|b| b.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Both durable before anything launches; their syncs overlap.
    let (a, b) = futures_lite::future::zip(
        write_atomic(dir.join("project.yaml"), yaml.into_bytes()),
        write_atomic(dir.join("base_dir"), base.into_bytes()),
    )
    .await;
    a.and(b)
}

async fn load_saved(inner: &Inner, name: &str) -> Result<Option<(Arc<Project>, Option<PathBuf>)>> {
    let dir = inner.project_dir(name);
    let path = dir.join("project.yaml");
    let text = match async_fs::read_to_string(&path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let p = path.clone();
    let loaded = blocking::unblock(move || {
        harness_config::load_str(&p, text, &|_: &str| None::<String>).into_result()
    })
    .await
    .map_err(|e| Error::SavedProject {
        project: name.to_owned(),
        message: e.to_string(),
    })?;
    let base = async_fs::read_to_string(dir.join("base_dir"))
        .await
        .ok()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    Ok(Some((Arc::new(loaded), base)))
}

/// `projects/<project>/hashes`: `SERVICE HASH` lines, the definition hash each service's running
/// instance was started from. One file per project, rewritten in place (not synced) once per
/// apply before its launches: a per-service file was one new inode per launch, which on a
/// journal-less ext4 is most of the CPU of a cold start. A lost or torn file only means one
/// needless restart after a crash.
const HASHES: &str = "hashes";

/// The hashes recorded for `project_dir`'s services; a service missing from `hashes` is looked
/// up in its own `services/<svc>/hash` (written by daemons before the `hashes` file). Blocking.
pub(crate) fn read_hashes(project_dir: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(project_dir.join(HASHES)).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(s, h)| !s.is_empty() && !h.is_empty())
        .map(|(s, h)| (s.to_owned(), h.to_owned()))
        .collect()
}

/// The recorded hash of one service: from `hashes` (already read into `hashes`), else from the
/// service's own `hash` file of an older daemon. Blocking.
pub(crate) fn saved_hash(
    hashes: &BTreeMap<String, String>,
    project_dir: &Path,
    service: &str,
) -> Option<String> {
    hashes.get(service).cloned().or_else(|| {
        std::fs::read_to_string(project_dir.join("services").join(service).join("hash"))
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
    })
}

/// Rewrites `hashes` with `hashes`, in place (no new inode once it exists), not synced.
async fn save_hashes(project_dir: PathBuf, hashes: BTreeMap<String, String>) {
    let path = project_dir.join(HASHES);
    let text: String = hashes.iter().map(|(s, h)| format!("{s} {h}\n")).collect();
    let r = blocking::unblock(move || {
        std::fs::create_dir_all(&project_dir)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        std::io::Write::write_all(&mut f, text.as_bytes())
    })
    .await;
    if let Err(e) = r {
        tracing::warn!("cannot record the definition hashes: {e}");
    }
}

/// The project as last applied: from memory (shared, not copied), else from the state dir.
pub(crate) async fn known_project(
    inner: &Inner,
    name: &str,
) -> Result<Option<(Arc<Project>, Option<PathBuf>)>> {
    if let Ok(p) = inner.projects.lock()
        && let Some(rt) = p.get(name)
    {
        return Ok(Some((rt.project.clone(), rt.base_dir.clone())));
    }
    load_saved(inner, name).await
}

fn endpoints(project: &Project, name: &str) -> Vec<Endpoint> {
    let Some(s) = project.services.get(name) else {
        return Vec::new();
    };
    let Ok(placement) = Placement::of(s) else {
        return Vec::new();
    };
    s.ports
        .iter()
        .enumerate()
        .map(|(i, p)| Endpoint {
            name: p.name.clone().unwrap_or_else(|| {
                if i == 0 {
                    "default".into()
                } else {
                    format!("port{i}")
                }
            }),
            ip: daemon_ip(project, &placement),
            port: p.published.unwrap_or(p.port),
        })
        .collect()
}

pub(crate) async fn ensure_entry(
    inner: &Inner,
    project: &Project,
    name: &str,
) -> Result<ServiceEntry> {
    let k = ServiceKey::new(&project.name, name).map_err(|e| Error::Service {
        service: name.to_owned(),
        message: e.to_string(),
    })?;
    let eps = endpoints(project, name);
    let mut loc = project
        .services
        .get(name)
        .and_then(|s| Placement::of(s).ok())
        .map(|p| crate::addresses::location(project, name, &p))
        .unwrap_or(Location::Local);
    let entry = inner.store.get(&k).await?;
    // The file does not know the container's id: keep the one recorded for the same container.
    if let (
        Location::Container { engine, id, name },
        Some(ServiceEntry {
            location:
                Location::Container {
                    engine: was_engine,
                    id: was_id,
                    name: was_name,
                },
            ..
        }),
    ) = (&mut loc, &entry)
        && engine == was_engine
        && name == was_name
    {
        id.clone_from(was_id);
    }
    match entry {
        None => {
            let mut e = ServiceEntry::new(k, loc);
            e.endpoints = eps;
            Ok(inner.store.register(e).await?)
        }
        Some(e) if e.endpoints != eps || e.location != loc => Ok(inner
            .store
            .modify(&k, move |e| {
                e.endpoints = eps;
                e.location = loc;
                Ok(())
            })
            .await?),
        Some(e) => Ok(e),
    }
}

pub(crate) fn spawn_supervisor(
    inner: &Inner,
    project: &str,
    spec: Resolved,
    ready: Arc<Readiness>,
    begin: Begin,
) -> Handle {
    let stops = supervisor::Stops::new();
    let sup = Supervisor {
        store: inner.store.clone(),
        executor: inner.executor.clone(),
        key: key(project, &spec.name),
        dir: inner.service_dir(project, &spec.name),
        hub: inner.hub(project, &spec.name),
        spec,
        ready,
        stops: stops.clone(),
        launches: inner.launches.clone(),
    };
    Handle {
        stops,
        task: smol::spawn(sup.run(begin)),
    }
}

pub(crate) fn with_slot<T>(
    inner: &Inner,
    project: &str,
    name: &str,
    f: impl FnOnce(&mut Slot) -> T,
) -> Option<T> {
    let mut p = inner.projects.lock().ok()?;
    let rt = p.get_mut(project)?;
    Some(f(rt
        .services
        .entry(name.to_owned())
        .or_insert_with(Slot::new)))
}

/// Live while the entry says a process may exist or a restart is pending.
pub(crate) fn is_up(state: &ServiceState) -> bool {
    state.is_active() || matches!(state, ServiceState::Restarting { .. })
}

// ---------------------------------------------------------------------------------------------
// re-attach

pub(crate) async fn reattach(inner: &Arc<Inner>) -> Result<()> {
    let root = inner.state_dir.join("projects");
    let mut names = Vec::new();
    if let Ok(mut dir) = async_fs::read_dir(&root).await {
        use futures_lite::StreamExt;
        while let Some(Ok(e)) = dir.next().await {
            if let Some(n) = e.file_name().to_str() {
                names.push(n.to_owned());
            }
        }
    }
    for name in names {
        match load_saved(inner, &name).await {
            Ok(Some((project, base_dir))) => {
                if let Ok(mut p) = inner.projects.lock() {
                    p.insert(
                        name.clone(),
                        ProjectRt {
                            project,
                            base_dir,
                            services: BTreeMap::new(),
                        },
                    );
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("cannot re-attach project {name}: {e}"),
        }
    }
    // This daemon's local processes, by the launch id in their environment: whatever no entry
    // adopts below is killed (a launch the daemon was killed before recording, or the rest of
    // an earlier incarnation): a service never has two live incarnations.
    let local = crate::runtime::local_processes(&inner.launches).await;
    let mut adopted: BTreeSet<String> = BTreeSet::new();
    let mut adopted_sessions: BTreeSet<u32> = BTreeSet::new();
    let entries = inner.store.list(None).await?;
    // Records of services the registry no longer has: their local processes go with the strays
    // below; the journal forgets them when it is next rewritten.
    inner.launches.retain(|project, service| {
        entries
            .iter()
            .any(|e| e.project == project && e.name == service)
    });
    // Each project's recorded definition hashes, read once.
    let mut hashes: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for entry in entries {
        let dir = inner.service_dir(&entry.project, &entry.name);
        let intent = inner.launches.recorded(&entry.project, &entry.name);
        // A service stopped on request comes back with a new daemon only under `restart: always`.
        let stopped = entry.state == ServiceState::Stopped;
        let up = is_up(&entry.state);
        if !up && !stopped && intent.is_none() {
            continue;
        }
        let k = entry.key();
        let known = known_project(inner, &entry.project).await.ok().flatten();
        let resolved = match &known {
            Some((p, base)) => Resolved::new(p, &entry.name, base.as_deref()),
            None => Err("its project definition is missing from the state directory".into()),
        };
        // The registry's pid, else the one the launch journal noted right after the spawn
        // (a daemon killed before the registry held it).
        let recorded = match (entry.runtime.pid, entry.runtime.process_start_time) {
            (Some(pid), Some(st)) if up => Some((pid, st)),
            _ if up => intent.as_deref().and_then(|id| inner.launches.pid_of(id)),
            _ => None,
        };
        // Adopted when it should run; otherwise whatever a recorded launch left is killed.
        let alive = match &resolved {
            Ok(spec) if up || intent.is_some() => {
                let found = crate::runtime::adopt(
                    spec,
                    &dir,
                    &inner.executor,
                    &inner.launches,
                    crate::runtime::Recorded {
                        launch_id: intent.as_deref(),
                        keep: up,
                        local: &local,
                        recorded,
                    },
                )
                .await;
                match found {
                    Ok(found) => {
                        if !up {
                            inner.launches.forget(&entry.project, &entry.name).await;
                        }
                        found
                    }
                    Err(e) => {
                        tracing::warn!(service = %k, "cannot find its processes: {e}");
                        None
                    }
                }
            }
            _ => None,
        };
        if let (Some(id), Some(_)) = (&intent, &alive) {
            adopted.insert(id.clone());
        }
        if let Some(session) = alive.as_ref().and_then(|p| p.local_session()) {
            adopted_sessions.insert(session);
        }
        if !up && !stopped {
            continue;
        }
        let spec = match resolved {
            Ok(s) if stopped && s.restart.policy != harness_config::RestartPolicy::Always => {
                continue;
            }
            Ok(s) => s,
            Err(_) if stopped => continue,
            Err(reason) => {
                if alive.is_some() {
                    tracing::warn!(service = %k, "running but cannot be supervised: {reason}");
                } else {
                    set_state(&inner.store, &k, ServiceState::Failed { reason }).await;
                }
                continue;
            }
        };
        let ready = Arc::new(Readiness::default());
        let stopping = matches!(
            entry.state,
            ServiceState::Stopping
                | ServiceState::Unknown {
                    stop_pending: true,
                    ..
                }
        );
        if alive.is_none() && matches!(entry.state, ServiceState::Starting | ServiceState::Running)
        {
            crate::drift::note_gone_at_start(inner, &entry);
        }
        let begin = match (&entry.state, alive) {
            (ServiceState::Restarting { next_start, .. }, _) => {
                let left = next_start
                    .map(|t| t.duration_since(jiff::Timestamp::now()))
                    .and_then(|d| Duration::try_from(d).ok())
                    .unwrap_or_default();
                Begin::Backoff(left)
            }
            (_, Some(proc)) => {
                let healthy = entry.health.status == HealthStatus::Healthy;
                ready.update(|r| {
                    r.started = true;
                    r.healthy = healthy;
                });
                let (pid, st) = (proc.pid(), proc.start_time());
                let container = proc.container_id().map(str::to_owned);
                // Without a health check nothing else would move it on from `starting`.
                let settle = entry.state == ServiceState::Starting && spec.health.is_none();
                if entry.runtime.pid != Some(pid)
                    || settle
                    || (container.is_some() && entry.runtime.container_id != container)
                {
                    let r = inner
                        .store
                        .modify(&k, move |e| {
                            e.runtime.pid = Some(pid);
                            e.runtime.process_start_time = Some(st);
                            if container.is_some() {
                                if let harness_protocol::Location::Container { id, .. } =
                                    &mut e.location
                                {
                                    *id = container.clone();
                                }
                                e.runtime.container_id = container;
                            }
                            if settle && e.state == ServiceState::Starting {
                                e.transition(ServiceState::Running)?;
                            }
                            Ok(())
                        })
                        .await;
                    if let Err(e) = r {
                        tracing::warn!(service = %k, "cannot record the re-attached pid: {e}");
                    }
                }
                Begin::Attach(proc)
            }
            (ServiceState::Stopped, None) => Begin::Launch,
            (_, None) => Begin::Ended,
        };
        if !hashes.contains_key(&entry.project) {
            let dir = inner.project_dir(&entry.project);
            let read = blocking::unblock(move || read_hashes(&dir)).await;
            hashes.insert(entry.project.clone(), read);
        }
        let hash = match hashes.get(&entry.project).and_then(|m| m.get(&entry.name)) {
            Some(h) => Some(h.clone()),
            // Recorded by an older daemon in the service's own file.
            None => async_fs::read_to_string(
                inner.service_dir(&entry.project, &entry.name).join("hash"),
            )
            .await
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty()),
        }
        .or_else(|| Some(spec.hash()));
        let check = spec.health_description();
        let stop = (spec.stop.signal, spec.stop.timeout);
        let handle = spawn_supervisor(inner, &entry.project, spec, ready.clone(), begin);
        if stopping {
            // The daemon died mid-stop: finish it.
            let (done, _rx) = async_channel::bounded(1);
            let _ = handle.stops.send(StopRequest {
                signal: stop.0,
                timeout: stop.1,
                done,
            });
        }
        let installed = with_slot(inner, &entry.project, &entry.name, |slot| {
            slot.hash = hash;
            slot.health_check = check;
            slot.stop = Some(stop);
            slot.ready = ready;
            slot.handle = Some(handle);
        });
        if installed.is_none() {
            tracing::warn!(service = %k, "re-attached without a project");
        }
    }
    let stray: Vec<(u32, u64)> = local
        .iter()
        // An adopted process that leads no session (one `sync --adopt` took over) is spared by
        // its own pid and process group.
        .filter(|t| {
            !adopted.contains(&t.launch_id)
                && !adopted_sessions.contains(&t.row.session)
                && !adopted_sessions.contains(&t.row.pgrp)
        })
        .map(|t| (t.row.pid, t.row.start_time))
        .collect();
    if !stray.is_empty() {
        tracing::warn!(
            "killing {} local processes of launches no service adopted",
            stray.len()
        );
        blocking::unblock(move || command_executor::service::local::kill_processes(&stray)).await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// apply

enum Plan {
    Unchanged,
    Fail(String),
    /// Not started, its state untouched: why (its last run may still be alive on a host that
    /// does not answer).
    Refuse(String),
    Start(Box<Resolved>, Action),
    /// Left as it is: its stop could not be recorded, so it keeps running the old definition.
    Refused(String),
}

/// The wireguard networks that services about to start or running need (they run on a member,
/// or name the network), with those services.
fn meshes_needed(
    project: &Project,
    plans: &BTreeMap<String, Plan>,
) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for net in crate::network::wireguard_networks(project) {
        // (The interface names depend on the state dir, the members do not.)
        let members: BTreeSet<String> =
            match crate::network::plan(project, &net, std::path::Path::new("")) {
                Ok(p) => p.members.into_iter().map(|m| m.name).collect(),
                // up() reports it, naming the network, for the services on its nodes.
                Err(_) => project
                    .networks
                    .get(&net)
                    .map(|n| {
                        n.nodes
                            .iter()
                            .map(|node| {
                                if node.host == harness_config::LOCAL_NODE {
                                    harness_config::LOCAL_NODE.to_owned()
                                } else {
                                    node.name.clone()
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_else(|| crate::network::automatic_members(project)),
            };
        for (name, plan) in plans {
            // Running ones too: the mesh is re-applied (members that joined or left, a member
            // that rebooted) on every start.
            if !matches!(plan, Plan::Start(..) | Plan::Unchanged) {
                continue;
            }
            let Some(svc) = project.services.get(name) else {
                continue;
            };
            let machine = crate::addresses::Placement::of(svc)
                .ok()
                .map(|p| p.machine().unwrap_or(harness_config::LOCAL_NODE).to_owned());
            if svc.network.as_deref() == Some(net.as_str())
                || machine.is_some_and(|m| members.contains(&m))
            {
                out.entry(net.clone()).or_default().push(name.clone());
            }
        }
    }
    out
}

/// How often a watched mesh's members are asked whether their interface still exists.
const MESH_CHECK: Duration = Duration::from_secs(3);

/// Starts (once per mesh) the task that brings a member back whose interface is gone (it
/// rebooted; a host that was unreachable is checked again once it answers): the whole mesh is
/// re-applied, under the project's lock, so the member gets its interface back with its key and
/// address and every peer its endpoint. The task ends when the mesh is no longer recorded (the
/// project's last `stop`) or the daemon shuts down.
pub(crate) fn watch_mesh(inner: &Arc<Inner>, project: &str, net: &str) {
    let id = (project.to_owned(), net.to_owned());
    {
        let Ok(mut w) = inner.mesh_watches.lock() else {
            return;
        };
        if !w.insert(id.clone()) {
            return;
        }
    }
    let weak = Arc::downgrade(inner);
    smol::spawn(async move {
        let (project, net) = &id;
        loop {
            Timer::after(MESH_CHECK).await;
            let Some(inner) = weak.upgrade() else { return };
            if inner.shut.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            let Some(state) = crate::network::read_state(&inner.state_dir, project, net).await
            else {
                break;
            };
            let Ok(Some((def, _))) = known_project(&inner, project).await else {
                break;
            };
            let gone = crate::network::missing_members(&inner.executor, &def, &state).await;
            if gone.is_empty() {
                continue;
            }
            let _op = inner.operation(project).await;
            // A stop may have taken the mesh down while this waited for the lock.
            if crate::network::read_state(&inner.state_dir, project, net)
                .await
                .is_none()
            {
                break;
            }
            let Ok(Some((def, _))) = known_project(&inner, project).await else {
                break;
            };
            match crate::network::up(&inner.executor, &def, net, &inner.state_dir).await {
                Ok(_) => tracing::info!(
                    project = %project,
                    network = %net,
                    "mesh re-applied: the interface of {} was gone",
                    gone.join(", ")
                ),
                Err(e) => tracing::warn!(project = %project, "{e}; tried again in {MESH_CHECK:?}"),
            }
        }
        if let Some(inner) = weak.upgrade()
            && let Ok(mut w) = inner.mesh_watches.lock()
        {
            w.remove(&id);
        }
    })
    .detach();
}

/// Takes down the project's meshes once none of its services is up.
async fn meshes_down_if_idle(inner: &Arc<Inner>, project: &str, def: Option<&Project>) {
    let Ok(entries) = inner.store.list(Some(project)).await else {
        return;
    };
    if entries.iter().any(|e| is_up(&e.state)) {
        return;
    }
    let Some(def) = def else { return };
    // Every mesh recorded as up: also an automatic one the definition no longer needs.
    for net in crate::network::recorded(&inner.state_dir, project).await {
        if let Err(e) = crate::network::down(&inner.executor, def, &net, &inner.state_dir).await {
            tracing::warn!(
                project,
                "{e}; the mesh stays recorded and the next stop retries"
            );
        }
    }
}

pub(crate) async fn apply(
    inner: &Arc<Inner>,
    project: &Project,
    opts: &ApplyOptions,
) -> Result<ApplyReport> {
    // The one copy of the definition kept while the project is applied, shared by what needs it.
    apply_selected(inner, Arc::new(project.clone()), opts, true).await
}

/// `with_deps`: also start what the named services depend on (apply), or only them (restart).
async fn apply_selected(
    inner: &Arc<Inner>,
    shared: Arc<Project>,
    opts: &ApplyOptions,
    with_deps: bool,
) -> Result<ApplyReport> {
    let project: &Project = &shared;
    check_project_name(&project.name)?;
    let began = Instant::now();
    let generation = inner.generation(&project.name);
    let order: Vec<String> = project.start_waves()?.concat();
    let selected = if with_deps || opts.services.is_empty() {
        selection(project, &opts.services)?
    } else {
        selection(project, &[])?
            .into_iter()
            .filter(|n| opts.services.contains(n))
            .collect()
    };
    let base = opts.base_dir.clone();
    // The definition is saved (a restart saved it before stopping anything) while the registry
    // entries are written and the recorded hashes read: their syncs overlap, and all of it is
    // done before anything launches.
    let saving = async {
        if with_deps {
            save_project(inner, project, base.as_deref()).await
        } else {
            Ok(())
        }
    };
    let previous: BTreeSet<String> = {
        let mut names: BTreeSet<String> = inner
            .store
            .list(Some(&project.name))
            .await?
            .into_iter()
            .map(|e| e.name)
            .collect();
        if let Ok(p) = inner.projects.lock()
            && let Some(rt) = p.get(&project.name)
        {
            names.extend(rt.services.keys().cloned());
        }
        names
    };
    if let Ok(mut p) = inner.projects.lock() {
        let rt = p.entry(project.name.clone()).or_insert_with(|| ProjectRt {
            project: shared.clone(),
            base_dir: base.clone(),
            services: BTreeMap::new(),
        });
        rt.project = shared.clone();
        rt.base_dir = base.clone();
    }

    // Registry entries, concurrently: the store commits them in one group.
    let registering: Vec<_> = order
        .iter()
        .filter(|n| selected.contains(*n))
        .map(|name| {
            let (inner, project, name) = (inner.clone(), shared.clone(), name.clone());
            smol::spawn(async move { ensure_entry(&inner, &project, &name).await })
        })
        .collect();
    let registered = async {
        let mut entries = BTreeMap::new();
        for t in registering {
            let e = t.await?;
            entries.insert(e.name.clone(), e);
        }
        Ok::<_, Error>(entries)
    };
    // What each service's running instance was started from, as recorded (for those whose
    // slot does not know it: the first apply after a daemon start).
    let hashes_read = {
        let dir = inner.project_dir(&project.name);
        blocking::unblock(move || read_hashes(&dir))
    };
    let ((saved, registered), recorded_hashes) =
        futures_lite::future::zip(futures_lite::future::zip(saving, registered), hashes_read).await;
    saved?;
    let mut entries = registered?;
    tracing::debug!(project = %project.name, "saved and registered");

    // Decide per service.
    let mut plans: BTreeMap<String, Plan> = BTreeMap::new();
    let mut stop_first: BTreeSet<String> = BTreeSet::new();
    for name in order.iter().filter(|n| selected.contains(*n)) {
        let Some(entry) = entries.remove(name) else {
            continue;
        };
        let plan = match Resolved::new(project, name, base.as_deref()) {
            _ if let ServiceState::Unknown {
                host,
                since,
                stop_pending,
                ..
            } = &entry.state =>
            {
                let since = since.round(jiff::Unit::Second).unwrap_or(*since);
                Plan::Refuse(format!(
                    "not started: {host} has not answered since {since}, and its last run there may \
                     still be alive; a second copy is never started ({})",
                    if *stop_pending {
                        format!("the pending stop finishes when {host} answers; start again then")
                    } else {
                        format!("it is presumed running and is watched again when {host} answers")
                    }
                ))
            }
            Err(reason) => Plan::Fail(reason),
            Ok(spec) => {
                let hash = spec.hash();
                let (running_hash, supervised) = with_slot(inner, &project.name, name, |s| {
                    (
                        s.hash.clone(),
                        s.handle.as_ref().is_some_and(|h| !h.task.is_finished()),
                    )
                })
                .unwrap_or((None, false));
                let running_hash = match running_hash {
                    Some(h) => Some(h),
                    None => {
                        let (known, dir, name) = (
                            recorded_hashes.get(name).cloned(),
                            inner.project_dir(&project.name),
                            name.clone(),
                        );
                        match known {
                            Some(h) => Some(h),
                            None => {
                                blocking::unblock(move || saved_hash(&BTreeMap::new(), &dir, &name))
                                    .await
                            }
                        }
                    }
                };
                let same = running_hash.as_deref() == Some(hash.as_str());
                let up = is_up(&entry.state) && supervised;
                // A one-shot job that completed with this definition has done its work.
                let done = matches!(entry.state, ServiceState::Exited { code: Some(0), .. });
                // A stop still under way (one a killed daemon began, finished by this one) is
                // waited for, then the service starts: never "unchanged" as it goes away.
                let stopping = up && entry.state == ServiceState::Stopping;
                if stopping {
                    stop_first.insert(name.clone());
                }
                if (up || done) && same && !stopping {
                    Plan::Unchanged
                } else if up && !stopping {
                    Plan::Start(Box::new(spec), Action::Restarted)
                } else {
                    Plan::Start(Box::new(spec), Action::Started)
                }
            }
        };
        plans.insert(name.clone(), plan);
    }

    // Changed services stop first, dependents before dependencies. One whose stop could not be
    // recorded keeps running and is not started a second time.
    for name in order.iter().rev() {
        if (matches!(plans.get(name), Some(Plan::Start(_, Action::Restarted)))
            || stop_first.contains(name))
            && let Err(e) = stop_one(inner.clone(), project.name.clone(), name.clone(), None).await
        {
            plans.insert(name.clone(), Plan::Refused(e.to_string()));
        }
    }

    // WireGuard meshes come up before the first service on one of their members starts; a
    // mesh that cannot come up fails the services on it, naming the network and the host.
    for (net, users) in meshes_needed(project, &plans) {
        let t = Instant::now();
        let up = crate::network::up(&inner.executor, project, &net, &inner.state_dir).await;
        if up.is_ok() {
            watch_mesh(inner, &project.name, &net);
            tracing::info!(
                project = %project.name,
                network = %net,
                "mesh up in {} ms",
                t.elapsed().as_millis()
            );
        }
        if let Err(e) = up {
            tracing::warn!(project = %project.name, "{e}");
            for name in users {
                if matches!(plans.get(&name), Some(Plan::Start(..))) {
                    plans.insert(name, Plan::Fail(e.to_string()));
                }
            }
        }
    }

    // What will not be started in this apply is judged by its registry entry.
    let entries_now = inner.store.list(Some(&project.name)).await?;
    for e in entries_now {
        if matches!(
            plans.get(&e.name),
            Some(Plan::Start(..) | Plan::Fail(_) | Plan::Refused(_))
        ) {
            continue;
        }
        with_slot(inner, &project.name, &e.name, |s| {
            s.ready.update(|r| seed(r, &e));
        });
    }

    // Fresh readiness for everything that starts, before any task looks at it.
    for (name, plan) in &plans {
        if matches!(plan, Plan::Start(..) | Plan::Fail(_) | Plan::Refused(_)) {
            with_slot(inner, &project.name, name, |s| {
                s.ready = Arc::new(Readiness::default());
            });
        }
    }

    type Deps = Vec<(String, Condition, Arc<Readiness>, Option<Duration>)>;
    let mut starts: Vec<(String, Plan, Deps)> = Vec::new();
    for name in order.iter().filter(|n| selected.contains(*n)) {
        let Some(plan) = plans.remove(name) else {
            continue;
        };
        let deps: Deps = project
            .services
            .get(name)
            .map(|s| {
                s.depends_on
                    .iter()
                    .filter(|(d, _)| project.services.contains_key(*d))
                    .filter_map(|(d, c)| {
                        let r = with_slot(inner, &project.name, d, |s| s.ready.clone())?;
                        let timeout = project.services.get(d).and_then(|s| s.startup_timeout);
                        Some((d.clone(), *c, r, timeout))
                    })
                    .collect()
            })
            .unwrap_or_default();
        starts.push((name.clone(), plan, deps));
    }
    // The hash of what each service will run, recorded once for the project before anything
    // launches (a service not started here keeps what its slot or the file says).
    let mut hashes = recorded_hashes;
    let mut slots = BTreeSet::new();
    if let Ok(p) = inner.projects.lock()
        && let Some(rt) = p.get(&project.name)
    {
        for (name, slot) in &rt.services {
            slots.insert(name.clone());
            if let Some(h) = &slot.hash {
                hashes.insert(name.clone(), h.clone());
            }
        }
    }
    for (name, plan, _) in &starts {
        if let Plan::Start(spec, _) = plan {
            hashes.insert(name.clone(), spec.hash());
        }
    }
    // (An orphan still running keeps its slot, and its hash.)
    hashes.retain(|name, _| project.services.contains_key(name) || slots.contains(name));
    save_hashes(inner.project_dir(&project.name), hashes).await;
    // What launches at once is recorded at once: one write and one sync for the wave (ADR 0028).
    // If that fails, each launch records (and fails) on its own.
    let wave: Vec<String> = starts
        .iter()
        .filter(|(_, plan, deps)| matches!(plan, Plan::Start(..)) && deps.is_empty())
        .map(|(n, _, _)| n.clone())
        .collect();
    if let Err(e) = inner.launches.record_wave(&project.name, &wave).await {
        tracing::warn!(project = %project.name, "cannot record the start wave: {e}");
    }
    tracing::debug!(project = %project.name, services = wave.len(), "start wave recorded");
    let mut tasks: Vec<(String, smol::Task<ServiceReport>)> = Vec::new();
    for (name, plan, deps) in starts {
        let inner = inner.clone();
        let project_name = project.name.clone();
        let n = name.clone();
        let op = opts.operation.clone();
        let task = smol::spawn(async move {
            let ctx = StartCtx {
                began,
                generation,
                op,
            };
            start_one(&inner, &project_name, &n, plan, deps, ctx).await
        });
        tasks.push((name, task));
    }
    let mut services = Vec::new();
    for (_, t) in tasks {
        services.push(t.await);
    }

    // Orphans.
    for name in previous.difference(&project.services.keys().cloned().collect()) {
        let k = key(&project.name, name);
        let entry = inner.store.get(&k).await?;
        let action = if opts.remove_orphans {
            stop_one(inner.clone(), project.name.clone(), name.clone(), None).await?;
            if entry.is_some() {
                inner.store.deregister(&k).await?;
            }
            if let Ok(mut p) = inner.projects.lock()
                && let Some(rt) = p.get_mut(&project.name)
            {
                rt.services.remove(name);
            }
            Action::Removed
        } else {
            Action::Orphaned
        };
        services.push(ServiceReport {
            name: name.clone(),
            action,
            state: entry.map(|e| e.state).unwrap_or(ServiceState::Stopped),
            pid: None,
            elapsed: began.elapsed(),
            error: None,
            last_lines: Vec::new(),
        });
    }
    Ok(ApplyReport {
        project: project.name.clone(),
        services,
    })
}

/// Readiness of a service this apply does not start, from what the registry says of it.
fn seed(r: &mut readiness::Ready, e: &ServiceEntry) {
    let up = is_up(&e.state);
    r.started |= up || matches!(e.state, ServiceState::Exited { .. });
    r.healthy |= up && e.health.status == HealthStatus::Healthy;
    r.completed_ok |= matches!(e.state, ServiceState::Exited { code: Some(0), .. });
    if !up {
        r.stopped |= e.state == ServiceState::Stopped;
        match &e.state {
            ServiceState::Failed { reason } => r.failed = Some(reason.clone()),
            other => r.ended = Some(format!("it is {other}")),
        }
    }
}

/// The named services and everything they depend on; all when `names` is empty.
fn selection(project: &Project, names: &[String]) -> Result<BTreeSet<String>> {
    if names.is_empty() {
        return Ok(project.services.keys().cloned().collect());
    }
    let mut out = BTreeSet::new();
    let mut todo: Vec<String> =
        crate::names::expand(&project.name, project.services.keys(), names)?;
    while let Some(n) = todo.pop() {
        if out.insert(n.clone())
            && let Some(s) = project.services.get(&n)
        {
            todo.extend(
                s.depends_on
                    .keys()
                    .filter(|d| project.services.contains_key(*d))
                    .cloned(),
            );
        }
    }
    Ok(out)
}

/// What every start of one apply shares.
struct StartCtx {
    began: Instant,
    generation: u64,
    op: Option<OperationLog>,
}

async fn start_one(
    inner: &Arc<Inner>,
    project: &str,
    name: &str,
    plan: Plan,
    deps: Vec<(String, Condition, Arc<Readiness>, Option<Duration>)>,
    ctx: StartCtx,
) -> ServiceReport {
    const STOPPED: &str = "not started: a stop was requested";
    let StartCtx {
        began,
        generation,
        op,
    } = ctx;
    let k = key(project, name);
    let ready = with_slot(inner, project, name, |s| s.ready.clone()).unwrap_or_default();
    let (spec, action) = match plan {
        Plan::Unchanged => return report(inner, &k, Action::Unchanged, began, None).await,
        Plan::Refuse(reason) => {
            return report(inner, &k, Action::Failed, began, Some(reason)).await;
        }
        Plan::Fail(reason) => {
            set_state(
                &inner.store,
                &k,
                ServiceState::Failed {
                    reason: reason.clone(),
                },
            )
            .await;
            ready.update(|r| r.failed = Some(reason.clone()));
            return report(inner, &k, Action::Failed, began, Some(reason)).await;
        }
        Plan::Refused(reason) => {
            ready.update(|r| r.failed = Some(reason.clone()));
            return report(inner, &k, Action::Failed, began, Some(reason)).await;
        }
        Plan::Start(spec, action) => (*spec, action),
    };
    let host = spec_host(&spec);
    let host = host.as_deref();
    let steps = Steps(op.as_ref());
    for (dep, cond, r, timeout) in deps {
        let limit = timeout.unwrap_or(DEFAULT_READY_TIMEOUT);
        let step = steps.begin(
            StepKind::WaitingForDependencies,
            name,
            host,
            Some(format!("{dep} ({})", condition_name(cond))),
        );
        let waited = async { Some(Some(r.wait(|st| readiness::condition(st, cond)).await)) }
            .or(async {
                Timer::after(limit).await;
                Some(None)
            })
            .or(async {
                inner
                    .cancelled(project, generation)
                    .or(op_cancelled(op.as_ref()))
                    .await;
                None
            })
            .await;
        let Some(waited) = waited else {
            steps.end(step, StepResult::Cancelled);
            set_state(&inner.store, &k, ServiceState::Stopped).await;
            return report(inner, &k, Action::Skipped, began, Some(STOPPED.into())).await;
        };
        let why = match waited {
            Some(Ok(())) => {
                steps.end(step, StepResult::Ok);
                continue;
            }
            Some(Err(why)) => format!("dependency {dep} failed: {why}"),
            None => format!(
                "dependency {dep} was not {} within {}",
                condition_name(cond),
                harness_config::format_duration(limit)
            ),
        };
        set_state(
            &inner.store,
            &k,
            ServiceState::Failed {
                reason: why.clone(),
            },
        )
        .await;
        steps.end(
            step,
            StepResult::Failed {
                reason: why.clone(),
            },
        );
        ready.update(|r| r.failed = Some(why.clone()));
        return report(inner, &k, Action::Skipped, began, Some(why)).await;
    }
    // (Recorded on disk with the project's others before the wave: `hashes`.)
    let hash = spec.hash();
    let stop = (spec.stop.signal, spec.stop.timeout);
    let gated = spec.health.is_some();
    let settle = start_settle(&spec);
    let restart = spec.restart.policy;
    let limit = spec.startup_timeout.unwrap_or(DEFAULT_READY_TIMEOUT);
    let check = spec.health_description();
    // No await from here to the spawn: a stop either came before (skip) or will find it.
    if inner.generation(project) != generation
        || op.as_ref().is_some_and(|o| o.cancel_requested().is_some())
    {
        // A launch the wave recorded for it will not happen.
        if inner.launches.take_recorded(project, name).is_some() {
            inner.launches.forget(project, name).await;
        }
        set_state(&inner.store, &k, ServiceState::Stopped).await;
        return report(inner, &k, Action::Skipped, began, Some(STOPPED.into())).await;
    }
    let spawning = steps.begin(StepKind::Spawning, name, host, None);
    if let Some(op) = &op {
        ready.watch_probes(Some(ProbeSink {
            log: op.clone(),
            service: name.to_owned(),
            host: host.map(str::to_owned),
        }));
    }
    let handle = spawn_supervisor(inner, project, spec, ready.clone(), Begin::Launch);
    let old = with_slot(inner, project, name, |s| {
        s.hash = Some(hash);
        s.health_check = check;
        s.stop = Some(stop);
        s.handle.replace(handle)
    });
    drop(old);
    let cond = if gated {
        Condition::Healthy
    } else {
        Condition::Started
    };
    let outcome = async {
        // Spawning ends when it runs (or cannot be started); then it is waited for until ready.
        let started = ready
            .wait(|st| readiness::condition(st, Condition::Started))
            .await;
        match &started {
            Ok(()) => steps.end(spawning, StepResult::Ok),
            Err(why) => steps.end(
                spawning,
                StepResult::Failed {
                    reason: why.clone(),
                },
            ),
        }
        if let Err(why) = started {
            return Some(Err(why));
        }
        Some(ready.wait(|st| readiness::condition(st, cond)).await)
    }
    .or(async {
        Timer::after(limit).await;
        None
    })
    .or(async {
        inner
            .cancelled(project, generation)
            .or(op_cancelled(op.as_ref()))
            .await;
        Some(Err(CANCELLED_BEFORE_READY.into()))
    })
    .await;
    ready.watch_probes(None);
    let cancelled = matches!(&outcome, Some(Err(why)) if why == CANCELLED_BEFORE_READY);
    steps.end(
        spawning,
        match &outcome {
            _ if cancelled => StepResult::Cancelled,
            Some(Err(why)) => StepResult::Failed {
                reason: why.clone(),
            },
            None => StepResult::Failed {
                reason: "startup_timeout".into(),
            },
            Some(Ok(())) => StepResult::Ok,
        },
    );
    match &outcome {
        Some(Ok(())) => steps.instant(StepKind::Ready, name, host, StepResult::Ok),
        Some(Err(why)) if !cancelled => steps.instant(
            StepKind::Ready,
            name,
            host,
            StepResult::Failed {
                reason: why.clone(),
            },
        ),
        None => steps.instant(
            StepKind::Ready,
            name,
            host,
            StepResult::Failed {
                reason: format!(
                    "not {} within its startup_timeout of {}",
                    condition_name(cond),
                    harness_config::format_duration(limit)
                ),
            },
        ),
        Some(Err(_)) => {}
    }
    match outcome {
        // Started without a health check: it is watched until its settle window after its
        // spawn has passed (`start_settle`), so that a process that exits at once (a one-shot
        // job, a bad working directory) is reported as exited. Counted from its own spawn, not
        // from when its pid was recorded: the windows of a wave overlap its spawns.
        Some(Ok(())) if !gated => {
            let (since, pid) = {
                let r = ready.get();
                (r.launched_at.unwrap_or_else(Instant::now), r.launched_pid)
            };
            let exited = async { Some(ready.wait(|r| r.exited).await) }
                .or(async {
                    Timer::at(since + settle).await;
                    // Past the short window, a program still busy starting (it or a process
                    // it started is runnable, in disk wait, or has just exited) is watched on
                    // to the long one; one asleep waiting for something has settled.
                    // Past the long window, one still busy (under load it may not have run
                    // at all yet) is watched on until it is asleep, up to START_SETTLE_BUSY.
                    if settle < START_SETTLE_LAUNCHED {
                        if let Some((pid, st)) = pid {
                            let waiting = || {
                                blocking::unblock(move || {
                                    command_executor::service::procfs::tree_waiting(pid, st)
                                })
                            };
                            if !waiting().await {
                                Timer::at(since + START_SETTLE_LAUNCHED).await;
                                while since.elapsed() < START_SETTLE_BUSY && !waiting().await {
                                    Timer::after(START_SETTLE_STEP).await;
                                }
                            }
                        } else {
                            Timer::at(since + START_SETTLE_LAUNCHED).await;
                        }
                    }
                    None
                })
                .await;
            match exited {
                None => report(inner, &k, action, began, None).await,
                Some(info) if info.success() && !restarts_on_success(&restart) => {
                    report(inner, &k, Action::Completed, began, None).await
                }
                Some(info) => {
                    let why = format!("it exited during the start ({})", info.describe());
                    report(inner, &k, Action::Failed, began, Some(why)).await
                }
            }
        }
        Some(Ok(())) => report(inner, &k, action, began, None).await,
        Some(Err(why)) => report(inner, &k, Action::Failed, began, Some(why)).await,
        None => {
            let why = format!(
                "not {} within its startup_timeout of {}",
                condition_name(cond),
                harness_config::format_duration(limit)
            );
            report(inner, &k, Action::Failed, began, Some(why)).await
        }
    }
}

/// Why a start that was cancelled (a stop, or `ops.cancel`) before its service was ready failed.
pub(crate) const CANCELLED_BEFORE_READY: &str = "a stop was requested before it was ready";

/// Resolves once `op` is cancelled (`ops.cancel`); never without one.
async fn op_cancelled(op: Option<&OperationLog>) {
    match op {
        Some(op) => {
            op.cancelled().await;
        }
        None => std::future::pending().await,
    }
}

/// The host a service runs on, for steps (none on this machine).
fn spec_host(spec: &Resolved) -> Option<String> {
    match &spec.placement {
        crate::addresses::Placement::Local => None,
        crate::addresses::Placement::Host { host, .. } => Some(host.clone()),
        crate::addresses::Placement::Container { host } => host.clone(),
    }
}

/// Steps of an optional operation (an apply without one records nothing).
#[derive(Clone, Copy)]
struct Steps<'a>(Option<&'a OperationLog>);

impl Steps<'_> {
    fn begin(
        self,
        kind: StepKind,
        service: &str,
        host: Option<&str>,
        detail: Option<String>,
    ) -> Option<StepId> {
        self.0.map(|op| op.step(kind, Some(service), host, detail))
    }

    fn end(self, step: Option<StepId>, result: StepResult) {
        if let (Some(op), Some(step)) = (self.0, step) {
            op.end(step, result);
        }
    }

    fn instant(self, kind: StepKind, service: &str, host: Option<&str>, result: StepResult) {
        if let Some(op) = self.0 {
            op.instant(kind, Some(service), host, None, result);
        }
    }
}

/// [`stop_one`] as a `stopping` step of `op`.
async fn stop_logged(
    inner: Arc<Inner>,
    project: String,
    name: String,
    timeout: Option<Duration>,
    op: Option<OperationLog>,
) -> Result<Option<StoppedService>> {
    let step = Steps(op.as_ref()).begin(StepKind::Stopping, &name, None, None);
    let r = stop_one(inner, project, name, timeout).await;
    let result = match &r {
        Ok(Some(s)) if s.pending.is_some() => StepResult::Failed {
            reason: s.pending.clone().unwrap_or_default(),
        },
        Ok(_) => StepResult::Ok,
        Err(e) => StepResult::Failed {
            reason: e.to_string(),
        },
    };
    Steps(op.as_ref()).end(step, result);
    r
}

/// How long `start` watches a service without a health check after launching it, when this
/// machine runs its program directly: one that exits within this is reported as exited (or
/// completed), not as started. Past it, the service counts as started only if it and every
/// process it started are asleep waiting for something (`procfs::tree_waiting`); one still busy
/// is watched to [`START_SETTLE_LAUNCHED`] and on while busy, up to [`START_SETTLE_BUSY`]. A program that fails at once (`exit 7`, `false`, a
/// shell script whose first command fails) exits within a few ms of its spawn on an idle
/// machine (12 ms at most at a load average of 8 on 2 cores, bench/results-coldstart-2026-12-06.md);
/// under heavier load it may not have run yet, and is then still runnable, not asleep. A program
/// that cannot be executed or whose working directory is missing fails the spawn itself, before
/// any window (ADR 0044).
pub(crate) const START_SETTLE: Duration = Duration::from_millis(50);

/// The window when a launcher starts first and then the program: `sudo` for a `user:` service
/// (sudo, then sh entering the directory: up to 26 ms at that load), an SSH runner on a host, a
/// docker engine.
pub(crate) const START_SETTLE_LAUNCHED: Duration = Duration::from_millis(100);

/// How long past its spawn a direct service that is still busy (runnable, in disk wait) at
/// [`START_SETTLE_LAUNCHED`] is watched on, checked every [`START_SETTLE_STEP`], until it and its
/// processes are asleep: on a loaded machine a program that fails at once may not have run yet
/// 100 ms after its spawn. A program busy computing for longer (it never sleeps) counts as started
/// at this bound (ADR 0044).
pub(crate) const START_SETTLE_BUSY: Duration = Duration::from_millis(1000);

/// How often a busy direct service is looked at past [`START_SETTLE_LAUNCHED`].
const START_SETTLE_STEP: Duration = Duration::from_millis(25);

/// The settle window of `spec` ([`START_SETTLE`] or [`START_SETTLE_LAUNCHED`]).
fn start_settle(spec: &Resolved) -> Duration {
    let direct = spec.container.is_none()
        && matches!(spec.placement, crate::addresses::Placement::Local)
        && spec.launch.user.is_none();
    if direct {
        START_SETTLE
    } else {
        START_SETTLE_LAUNCHED
    }
}

/// Whether the policy starts the service again after it exited with status 0.
fn restarts_on_success(policy: &harness_config::RestartPolicy) -> bool {
    matches!(
        policy,
        harness_config::RestartPolicy::Always | harness_config::RestartPolicy::UnlessStopped
    )
}

fn condition_name(c: Condition) -> &'static str {
    match c {
        Condition::Started => "started",
        Condition::Healthy => "healthy",
        Condition::CompletedSuccessfully => "completed successfully",
    }
}

async fn report(
    inner: &Inner,
    k: &ServiceKey,
    action: Action,
    began: Instant,
    error: Option<String>,
) -> ServiceReport {
    let elapsed = began.elapsed();
    let entry = inner.store.get(k).await.ok().flatten();
    let last_lines = if matches!(action, Action::Failed) {
        // Give the log pump a moment to catch up with a process that is still running.
        Timer::after(Duration::from_millis(50)).await;
        inner
            .hub(&k.project, &k.name)
            .last_lines(FAILURE_LINES)
            .await
    } else {
        Vec::new()
    };
    ServiceReport {
        name: k.name.clone(),
        action,
        state: entry
            .as_ref()
            .map(|e| e.state.clone())
            .unwrap_or(ServiceState::Pending),
        pid: entry.as_ref().and_then(|e| e.runtime.pid),
        elapsed,
        error,
        last_lines,
    }
}

// ---------------------------------------------------------------------------------------------
// stop

/// Stops one service; `None` when it was not up. An error when the stop could not be recorded:
/// then nothing was stopped (the process keeps running and status says so).
async fn stop_one(
    inner: Arc<Inner>,
    project: String,
    name: String,
    timeout: Option<Duration>,
) -> Result<Option<StoppedService>> {
    let began = Instant::now();
    let k = key(&project, &name);
    let Some(entry) = inner.store.get(&k).await? else {
        return Ok(None);
    };
    let (sender, stop) = with_slot(&inner, &project, &name, |s| {
        (s.handle.as_ref().map(|h| h.stops.clone()), s.stop)
    })
    .unwrap_or((None, None));
    let (signal, configured) = match stop {
        Some(stop) => stop,
        None => known_project(&inner, &project)
            .await
            .ok()
            .flatten()
            .and_then(|(p, base)| Resolved::new(&p, &name, base.as_deref()).ok())
            .map(|s| (s.stop.signal, s.stop.timeout))
            .unwrap_or((command_executor::Signal::Term, Duration::from_secs(10))),
    };
    let mut killed = false;
    let mut stopped = false;
    let mut pending = None;
    if let Some(tx) = sender {
        let (done, done_rx) = async_channel::bounded(1);
        let req = StopRequest {
            signal,
            timeout: timeout.unwrap_or(configured),
            done,
        };
        if tx.send(req).is_ok()
            && let Ok(outcome) = done_rx.recv().await
        {
            match outcome {
                StopOutcome::Stopped { killed: k } => killed = k,
                StopOutcome::Pending(why) => pending = Some(why),
                StopOutcome::Refused(message) => {
                    return Err(Error::Service {
                        service: name.clone(),
                        message,
                    });
                }
            }
            stopped = true;
        }
    }
    // A pending stop is finished by the supervisor, which stays.
    if pending.is_none() {
        let handle = with_slot(&inner, &project, &name, |s| s.handle.take()).flatten();
        drop(handle);
    }
    if !stopped {
        if matches!(entry.state, ServiceState::Stopped) {
            return Ok(None);
        }
        supervisor::record_state(&inner.store, &k, ServiceState::Stopped).await?;
        if !is_up(&entry.state) {
            return Ok(None);
        }
    }
    Ok(Some(StoppedService {
        name,
        was: entry.state,
        killed,
        elapsed: began.elapsed(),
        pending,
    }))
}

pub(crate) async fn stop(
    inner: &Arc<Inner>,
    project: &str,
    opts: &StopOptions,
) -> Result<StopReport> {
    let known = known_project(inner, project).await?;
    let entries = inner.store.list(Some(project)).await?;
    if known.is_none() && entries.is_empty() {
        return Err(Error::UnknownProject {
            project: project.to_owned(),
        });
    }
    let def = known.as_ref().map(|(p, _)| p);
    let mut all: BTreeSet<String> = entries.iter().map(|e| e.name.clone()).collect();
    if let Some(p) = def {
        all.extend(p.services.keys().cloned());
    }
    let up: BTreeSet<String> = entries
        .iter()
        .filter(|e| is_up(&e.state))
        .map(|e| e.name.clone())
        .collect();
    let mut targets: BTreeSet<String> = BTreeSet::new();
    if opts.services.is_empty() {
        targets = all.clone();
    } else {
        targets.extend(crate::names::expand(project, &all, &opts.services)?);
        // Running services that depend on a target, directly or not.
        loop {
            let mut added = false;
            for (name, svc) in def
                .map(|p| p.services.iter().collect::<Vec<_>>())
                .unwrap_or_default()
            {
                if targets.contains(name) || !up.contains(name) {
                    continue;
                }
                if let Some(dep) = svc.depends_on.keys().find(|d| targets.contains(*d)) {
                    if !opts.force {
                        let dependents: Vec<String> = def
                            .map(|p| {
                                p.services
                                    .iter()
                                    .filter(|(n, s)| {
                                        up.contains(*n)
                                            && !targets.contains(*n)
                                            && s.depends_on.contains_key(dep)
                                    })
                                    .map(|(n, _)| n.clone())
                                    .collect()
                            })
                            .unwrap_or_default();
                        return Err(Error::HasDependents {
                            service: dep.clone(),
                            dependents,
                        });
                    }
                    targets.insert(name.clone());
                    added = true;
                }
            }
            if !added {
                break;
            }
        }
    }
    // Dependents first; services the definition no longer knows go first of all.
    let mut waves: Vec<Vec<String>> = Vec::new();
    let in_def: BTreeSet<String> = def
        .map(|p| p.services.keys().cloned().collect())
        .unwrap_or_default();
    waves.push(
        targets
            .iter()
            .filter(|t| !in_def.contains(*t))
            .cloned()
            .collect(),
    );
    if let Some(p) = def {
        for wave in p.stop_waves()? {
            waves.push(wave.into_iter().filter(|n| targets.contains(n)).collect());
        }
    }
    let mut services = Vec::new();
    let mut refused = None;
    for wave in waves {
        let tasks: Vec<_> = wave
            .into_iter()
            .map(|n| {
                smol::spawn(stop_logged(
                    inner.clone(),
                    project.to_owned(),
                    n,
                    opts.timeout,
                    opts.operation.clone(),
                ))
            })
            .collect();
        for t in tasks {
            match t.await {
                Ok(s) => services.extend(s),
                Err(e) => refused = refused.or(Some(e)),
            }
        }
        // Dependencies are not stopped under a dependent that could not be.
        if let Some(e) = refused {
            return Err(e);
        }
    }
    meshes_down_if_idle(inner, project, def.map(|p| &**p)).await;
    if opts.remove {
        // A service whose stop is pending stays registered (and its project known) until the
        // stop is done: its supervisor finishes it when the host answers.
        let pending: BTreeSet<String> = services
            .iter()
            .filter(|s: &&StoppedService| s.pending.is_some())
            .map(|s| s.name.clone())
            .collect();
        let targets: BTreeSet<String> = targets.difference(&pending).cloned().collect();
        for name in &targets {
            let k = key(project, name);
            if inner.store.get(&k).await?.is_some() {
                inner.store.deregister(&k).await?;
            }
        }
        let forget = if let Ok(mut p) = inner.projects.lock() {
            if let Some(rt) = p.get_mut(project) {
                for t in &targets {
                    rt.services.remove(t);
                }
            }
            let all_gone = all.iter().all(|n| targets.contains(n));
            if all_gone {
                p.remove(project);
            }
            all_gone
        } else {
            false
        };
        if forget {
            let path = inner.project_dir(project).join("project.yaml");
            let _ = async_fs::remove_file(&path).await;
        }
    }
    Ok(StopReport {
        project: project.to_owned(),
        services,
    })
}

pub(crate) async fn restart(
    inner: &Arc<Inner>,
    project: &str,
    services: &[String],
    op: Option<OperationLog>,
) -> Result<ApplyReport> {
    let (def, base) =
        known_project(inner, project)
            .await?
            .ok_or_else(|| Error::UnknownProject {
                project: project.to_owned(),
            })?;
    let names: Vec<String> = if services.is_empty() {
        def.services.keys().cloned().collect()
    } else {
        crate::names::expand(project, def.services.keys(), services)?
    };
    // Record first, then act: the definition the restart starts again is written (and the
    // disk shown to take it) before anything is stopped.
    save_project(inner, &def, base.as_deref()).await?;
    // Dependents first, in parallel within a wave; nothing starts again if a stop was refused.
    for wave in def.stop_waves()? {
        let tasks: Vec<_> = wave
            .into_iter()
            .filter(|n| names.contains(n))
            .map(|n| {
                smol::spawn(stop_logged(
                    inner.clone(),
                    project.to_owned(),
                    n,
                    None,
                    op.clone(),
                ))
            })
            .collect();
        let mut refused = None;
        for t in tasks {
            if let Err(e) = t.await {
                refused = refused.or(Some(e));
            }
        }
        if let Some(e) = refused {
            return Err(e);
        }
    }
    let mut report = apply_selected(
        inner,
        def,
        &ApplyOptions {
            services: names.clone(),
            remove_orphans: false,
            base_dir: base,
            operation: op,
        },
        false,
    )
    .await?;
    for s in &mut report.services {
        if names.contains(&s.name) && s.action == Action::Started {
            s.action = Action::Restarted;
        }
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// views

fn pick(project: &str, all: &BTreeSet<String>, services: &[String]) -> Result<Vec<String>> {
    if services.is_empty() {
        return Ok(all.iter().cloned().collect());
    }
    crate::names::expand(project, all, services)
}

async fn service_names(inner: &Inner, project: &str) -> Result<BTreeSet<String>> {
    let mut all: BTreeSet<String> = inner
        .store
        .list(Some(project))
        .await?
        .into_iter()
        .map(|e| e.name)
        .collect();
    if let Some((p, _)) = known_project(inner, project).await? {
        all.extend(p.services.keys().cloned());
    }
    if all.is_empty() {
        return Err(Error::UnknownProject {
            project: project.to_owned(),
        });
    }
    Ok(all)
}

pub(crate) async fn health(
    inner: &Arc<Inner>,
    project: &str,
    services: &[String],
) -> Result<Vec<ServiceHealth>> {
    let all = service_names(inner, project).await?;
    let known = known_project(inner, project).await?;
    let mut out = Vec::new();
    for name in pick(project, &all, services)? {
        let entry = inner.store.get(&key(project, &name)).await?;
        let check = known
            .as_ref()
            .and_then(|(p, base)| Resolved::new(p, &name, base.as_deref()).ok())
            .and_then(|s| s.health_description());
        out.push(ServiceHealth {
            name,
            check,
            state: entry
                .as_ref()
                .map(|e| e.state.clone())
                .unwrap_or(ServiceState::Pending),
            health: entry.map(|e| e.health).unwrap_or_default(),
        });
    }
    Ok(out)
}

pub(crate) async fn logs(inner: &Arc<Inner>, q: &LogQuery) -> Result<Logs> {
    let all = service_names(inner, &q.project).await?;
    let hubs = pick(&q.project, &all, &q.services)?
        .iter()
        .map(|n| inner.hub(&q.project, n))
        .collect();
    Ok(crate::logs::serve(hubs, q).await)
}

pub(crate) async fn exec(
    inner: &Arc<Inner>,
    project: &str,
    service: &str,
    argv: &[String],
    opts: &crate::ExecOptions,
) -> Result<command_executor::Process> {
    let (def, base) =
        known_project(inner, project)
            .await?
            .ok_or_else(|| Error::UnknownProject {
                project: project.to_owned(),
            })?;
    // A replicated service's name means its first instance (as Compose's `exec --index 1`).
    let first;
    let service = if def.services.contains_key(service) {
        service
    } else {
        first = crate::names::instances(service, def.services.keys());
        first.first().map_or(service, String::as_str)
    };
    let spec = Resolved::new(&def, service, base.as_deref()).map_err(|message| {
        if def.services.contains_key(service) {
            Error::Service {
                service: service.to_owned(),
                message,
            }
        } else {
            Error::UnknownService {
                project: project.to_owned(),
                service: service.to_owned(),
            }
        }
    })?;
    let (program, args) = argv.split_first().ok_or_else(|| Error::Service {
        service: service.to_owned(),
        message: "exec needs a command".into(),
    })?;
    // A host known not to answer is not waited on until ssh gives up (ADR 0032).
    if let Some(entry) = inner.store.get(&key(project, service)).await?
        && let ServiceState::Unknown { host, since, .. } = &entry.state
    {
        let since = since.round(jiff::Unit::Second).unwrap_or(*since);
        return Err(Error::Service {
            service: service.to_owned(),
            message: format!(
                "not run: {host} has not answered since {since}; try again when it answers \
                 (`harness status` shows the service running again)"
            ),
        });
    }
    let mut cmd = Command::new(program).args(args);
    for (k, v) in &spec.launch.env {
        cmd = cmd.env(k, v);
    }
    if let Some(cwd) = &spec.launch.cwd {
        cmd = cmd.current_dir(cwd);
    }
    if opts.stdin {
        cmd = cmd.stdin(command_executor::StdinMode::Piped);
    }
    if opts.chunked {
        cmd = cmd.chunked_output();
    }
    if let Some(size) = opts.pty {
        cmd = cmd
            .pty(size)
            .env("TERM", opts.term.as_deref().unwrap_or("xterm"));
    }
    let target = spec.exec_target.clone();
    inner
        .executor
        .spawn(&target, &cmd)
        .await
        .map_err(|source| Error::Exec {
            service: service.to_owned(),
            source: Box::new(source),
        })
}
