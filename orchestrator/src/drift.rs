//! Drift (ADR 0036): the registry — entries, the launch journal, the definitions applied —
//! against what exists everywhere harness runs things: this machine's processes carrying a launch
//! id of this daemon, run directories on every SSH host (and user) its projects use, containers
//! labelled `harness.project` on the local engine and every host engine. Probing is batched: one
//! `/proc` scan, one command per host and user, one `docker ps` per engine, all at once. The
//! host command also reads where `NAME-current` points for every applied `type: package` service
//! there (the installed packages against what runs) and its `hw*` interfaces (mesh interfaces
//! against the mesh records).
//!
//! `sync` acts on findings, each action under the project's operation lock (as start and stop),
//! and re-verifies the identity of whatever it touches at the instant it acts (command-executor's
//! `survey`): a process that exited between the probe and the action is never mistaken for
//! another that took its pid.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use command_executor::service::survey::{
    self, KillOutcome, LabelledContainer, PackageCheck, PackageSeen, RemoteRun,
};
use command_executor::service::{LAUNCH_ID_VAR, procfs};
use command_executor::{DockerCli, Target};
use harness_config::Project;
use harness_protocol::drift::{
    DriftCategory, DriftResult, DriftSubject, Finding, Probe, SyncAction, SyncActionKind, SyncMode,
    SyncResult,
};
use harness_protocol::{ServiceEntry, ServiceKey, ServiceState};
use sha2::Digest;

use crate::addresses::Placement;
use crate::apply::{is_up, known_project};
use crate::network::MeshState;
use crate::readiness::Readiness;
use crate::runtime::Launched;
use crate::spec::Resolved;
use crate::{Error, Inner, Result};

/// How long one host's or engine's probe may take before the place counts as unreachable (a
/// host whose link died mid-drift: its ssh connection notices only after 15 s).
const PROBE_LIMIT: std::time::Duration = std::time::Duration::from_secs(8);

/// A service the daemon found gone when it started, although recorded running.
#[derive(Debug, Clone)]
pub(crate) struct GoneAtStart {
    pub project: String,
    pub service: String,
    pub state: String,
    pub pid: Option<u32>,
    pub at: jiff::Timestamp,
}

/// Called by `apply::reattach` for an entry recorded running whose process it did not find.
pub(crate) fn note_gone_at_start(inner: &Inner, entry: &ServiceEntry) {
    if let Ok(mut notes) = inner.gone_at_start.lock() {
        notes.retain(|n| !(n.project == entry.project && n.service == entry.name));
        notes.push(GoneAtStart {
            project: entry.project.clone(),
            service: entry.name.clone(),
            state: entry.state.name().to_owned(),
            pid: entry.runtime.pid,
            at: jiff::Timestamp::now(),
        });
    }
}

/// A project definition to compare with: the one given (the services file) or the one applied.
pub(crate) type Definition = (Arc<Project>, Option<PathBuf>);

/// Where a remote run lives: the host's name and the user it runs as there (`None`: the login
/// user).
type RunPlace = (String, Option<String>);

/// An engine's name, how to reach it, and its labelled containers (or why not).
type EngineProbe = (
    String,
    Target,
    DockerCli,
    std::result::Result<Vec<LabelledContainer>, String>,
);

/// What one probe of everything saw.
struct Scan {
    entries: Vec<ServiceEntry>,
    known: BTreeMap<String, Definition>,
    specs: HashMap<(String, String), Resolved>,
    local: Vec<procfs::Tagged>,
    runs: Vec<(
        RunPlace,
        Target,
        std::result::Result<Vec<RemoteRun>, String>,
    )>,
    engines: Vec<EngineProbe>,
    /// The package of each applied `type: package` service, with what its host has of it (hosts
    /// that answered only).
    packages: Vec<(PackageRecord, PackageSeen)>,
    /// Every mesh the daemon has a record of: (project, its recorded state).
    meshes: Vec<(String, MeshState)>,
    /// The `hw*` interfaces of each host that answered (its login user's probe), and of this
    /// machine for the interfaces recorded here.
    interfaces: BTreeMap<String, BTreeSet<String>>,
    probes: Vec<Probe>,
}

/// Whether `name` is shaped like a harness mesh interface: `hw` + 8 hex digits + an index
/// (network/plan.rs).
fn mesh_interface_name(name: &str) -> bool {
    name.strip_prefix("hw").is_some_and(|rest| {
        rest.len() > 8
            && rest.is_char_boundary(8)
            && rest[..8]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            && rest[8..].bytes().all(|b| b.is_ascii_digit())
    })
}

/// Every mesh recorded under `$HARNESS_HOME/mesh/<project>/<network>.json`.
async fn recorded_meshes(state_dir: &std::path::Path) -> Vec<(String, MeshState)> {
    use futures_lite::StreamExt;
    let mut out = Vec::new();
    let Ok(mut projects) = async_fs::read_dir(state_dir.join("mesh")).await else {
        return out;
    };
    while let Some(Ok(e)) = projects.next().await {
        let project = e.file_name().to_string_lossy().into_owned();
        for network in crate::network::recorded(state_dir, &project).await {
            if let Some(state) = crate::network::read_state(state_dir, &project, &network).await {
                out.push((project.clone(), state));
            }
        }
    }
    out
}

/// A `type: package` service as applied: run from `ROOT/NAME-VERSION` on `host`.
#[derive(Debug, Clone)]
struct PackageRecord {
    project: String,
    service: String,
    host: String,
    check: PackageCheck,
    pinned: bool,
}

/// The package services of an applied project (rewritten as remote processes run from their
/// installed directory, deploy/services.rs): `ROOT` is their working directory without
/// `/NAME-VERSION`.
fn package_records(project: &Project) -> Vec<PackageRecord> {
    project
        .services
        .iter()
        .filter_map(|(name, s)| {
            let package = s.package.clone()?;
            let host = s.host.clone()?;
            let version = s.env.get("HARNESS_PACKAGE_VERSION")?.as_literal()?;
            let dir = s.working_dir.as_ref()?.as_literal()?;
            let root = dir
                .strip_suffix(&format!("/{package}-{version}"))?
                .to_owned();
            Some(PackageRecord {
                project: project.name.clone(),
                service: name.clone(),
                host,
                check: PackageCheck {
                    root,
                    name: package,
                    version,
                },
                pinned: s.version.is_some(),
            })
        })
        .collect()
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn finding_id(category: DriftCategory, key: &str) -> String {
    let d = sha2::Sha256::digest(format!("{}\n{key}", category.as_str()).as_bytes());
    format!("d{}", &hex::encode(d)[..10])
}

/// (project, service) of a launch id of daemon `instance`.
fn launch_service<'a>(id: &'a str, instance: &str) -> Option<(&'a str, &'a str)> {
    let mut parts = id.split('/');
    let (d, p, s) = (parts.next()?, parts.next()?, parts.next()?);
    (d == instance && parts.next().is_some()).then_some((p, s))
}

fn run_place_name((host, user): &RunPlace) -> String {
    match user {
        Some(u) => format!("host {host} (as {u})"),
        None => format!("host {host}"),
    }
}

async fn scan(inner: &Arc<Inner>, given: Option<Definition>) -> Result<Scan> {
    let entries = inner.store.list(None).await?;
    let mut names: BTreeSet<String> = entries.iter().map(|e| e.project.clone()).collect();
    if let Ok(p) = inner.projects.lock() {
        names.extend(p.keys().cloned());
    }
    let mut known: BTreeMap<String, Definition> = BTreeMap::new();
    for name in names {
        if let Ok(Some(def)) = known_project(inner, &name).await {
            known.insert(name, def);
        }
    }
    // The definitions to place services by: the given one replaces its applied project's for
    // comparison only (`compare` below); placement comes from what was applied when known.
    let mut specs = HashMap::new();
    for (name, (project, base)) in &known {
        for s in project.services.keys() {
            if let Ok(r) = Resolved::new(project, s, base.as_deref()) {
                specs.insert((name.clone(), s.clone()), r);
            }
        }
    }
    if let Some((project, base)) = &given
        && !known.contains_key(&project.name)
    {
        for s in project.services.keys() {
            if let Ok(r) = Resolved::new(project, s, base.as_deref()) {
                specs.insert((project.name.clone(), s.clone()), r);
            }
        }
    }
    // Places: every (host, user) and engine a service is placed on, and the local engine.
    let mut hosts: BTreeMap<RunPlace, Target> = BTreeMap::new();
    let mut engines: BTreeMap<String, (Target, DockerCli)> = BTreeMap::new();
    engines.insert("local".into(), (Target::local(), DockerCli::default()));
    for r in specs.values() {
        match (&r.placement, &r.container, &r.host) {
            (_, Some(c), _) => {
                let name = c
                    .host
                    .as_ref()
                    .map_or("local".to_owned(), |h| h.name.clone());
                engines
                    .entry(name)
                    .or_insert_with(|| (c.cli_target(), c.cli()));
            }
            (Placement::Host { user, .. }, None, Some(h)) => {
                let u = user.clone().filter(|u| Some(u) != h.user.as_ref());
                hosts
                    .entry((h.name.clone(), u.clone()))
                    .or_insert_with(|| h.target(u.as_deref()));
            }
            _ => {}
        }
    }
    // Packages are checked by the probe of their host's login user (who installed them).
    let mut package_checks: BTreeMap<String, Vec<PackageRecord>> = BTreeMap::new();
    for (project, _) in known.values() {
        for rec in package_records(project) {
            let Some(h) = specs
                .get(&(rec.project.clone(), rec.service.clone()))
                .and_then(|r| r.host.as_ref())
            else {
                continue;
            };
            hosts
                .entry((h.name.clone(), None))
                .or_insert_with(|| h.target(None));
            package_checks.entry(h.name.clone()).or_default().push(rec);
        }
    }
    // Meshes: every member host's probe also lists its `hw*` interfaces (a host with no service
    // is probed for them too); this machine's recorded interfaces are looked up in /sys.
    let meshes = recorded_meshes(&inner.state_dir).await;
    let mut interfaces: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (project, state) in &meshes {
        for m in &state.members {
            if m.name == harness_config::LOCAL_NODE {
                let present = async_fs::metadata(format!("/sys/class/net/{}", m.interface))
                    .await
                    .is_ok();
                let here = interfaces.entry(m.name.clone()).or_default();
                if present {
                    here.insert(m.interface.clone());
                }
                continue;
            }
            let Some((def, _)) = known.get(project) else {
                continue;
            };
            if hosts.contains_key(&(m.name.clone(), None)) {
                continue;
            }
            if let Ok(spec) = crate::runtime::host::host_spec(def, &m.name) {
                hosts.insert((m.name.clone(), None), Target::ssh(spec.ssh()));
            }
        }
    }
    // All at once: the /proc scan off the executor, one task per host and per engine.
    let started = Instant::now();
    let local_task = {
        let launches = inner.launches.clone();
        smol::spawn(async move { crate::runtime::local_processes(&launches).await })
    };
    let instance = inner.launches.instance.clone();
    let run_tasks: Vec<_> = hosts
        .into_iter()
        .map(|(place, target)| {
            let exec = inner.executor.clone();
            let instance = instance.clone();
            let recs = if place.1.is_none() {
                package_checks.remove(&place.0).unwrap_or_default()
            } else {
                Vec::new()
            };
            smol::spawn(async move {
                let t0 = Instant::now();
                let checks: Vec<PackageCheck> = recs.iter().map(|r| r.check.clone()).collect();
                let r = survey::survey_host(&exec, &target, &instance, &checks, PROBE_LIMIT)
                    .await
                    .map_err(|e| e.to_string());
                (place, target, recs, r, t0.elapsed())
            })
        })
        .collect();
    let engine_tasks: Vec<_> = engines
        .into_iter()
        .map(|(name, (target, cli))| {
            let exec = inner.executor.clone();
            smol::spawn(async move {
                let t0 = Instant::now();
                let r = survey::labelled_containers(&exec, &target, &cli, PROBE_LIMIT)
                    .await
                    .map_err(|e| e.to_string());
                (name, target, cli, r, t0.elapsed())
            })
        })
        .collect();
    let local = local_task.await;
    let mut probes = vec![Probe {
        place: "local".into(),
        seen: local.len(),
        elapsed_ms: millis(started.elapsed()),
        error: None,
    }];
    let mut runs = Vec::new();
    let mut packages = Vec::new();
    for t in run_tasks {
        let (place, target, recs, r, took) = t.await;
        probes.push(Probe {
            place: run_place_name(&place),
            seen: r.as_ref().map_or(0, |s| s.runs.len() + s.packages.len()),
            elapsed_ms: millis(took),
            error: r.as_ref().err().cloned(),
        });
        let r = r.map(|s| {
            packages.extend(recs.into_iter().zip(s.packages));
            if place.1.is_none() {
                interfaces
                    .entry(place.0.clone())
                    .or_default()
                    .extend(s.interfaces.into_iter().filter(|i| mesh_interface_name(i)));
            }
            s.runs
        });
        runs.push((place, target, r));
    }
    let mut engine_list = Vec::new();
    for t in engine_tasks {
        let (name, target, cli, r, took) = t.await;
        probes.push(Probe {
            place: format!("engine {name}"),
            seen: r.as_ref().map_or(0, Vec::len),
            elapsed_ms: millis(took),
            error: r.as_ref().err().cloned(),
        });
        engine_list.push((name, target, cli, r));
    }
    Ok(Scan {
        entries,
        known,
        specs,
        local,
        runs,
        engines: engine_list,
        packages,
        meshes,
        interfaces,
        probes,
    })
}

/// Whether a supervisor task is alive for the service (it records what happens to it itself).
fn supervised(inner: &Inner, project: &str, service: &str) -> bool {
    inner.projects.lock().is_ok_and(|p| {
        p.get(project)
            .and_then(|rt| rt.services.get(service))
            .and_then(|s| s.handle.as_ref())
            .is_some_and(|h| !h.task.is_finished())
    })
}

struct Ctx<'a> {
    inner: &'a Inner,
    scan: &'a Scan,
    entries: HashMap<(&'a str, &'a str), &'a ServiceEntry>,
    records: BTreeMap<(String, String), String>,
    out: Vec<Finding>,
}

impl Ctx<'_> {
    fn entry(&self, p: &str, s: &str) -> Option<&ServiceEntry> {
        self.entries.get(&(p, s)).copied()
    }

    fn record(&self, p: &str, s: &str) -> Option<&str> {
        self.records
            .get(&(p.to_owned(), s.to_owned()))
            .map(String::as_str)
    }

    fn in_definition(&self, p: &str, s: &str) -> bool {
        self.scan
            .known
            .get(p)
            .is_some_and(|(d, _)| d.services.contains_key(s))
    }

    /// An orphan of (p, s) may be adopted: its project is applied and defines s, s does not run
    /// and nothing supervises it.
    fn adoptable(&self, p: &str, s: &str) -> bool {
        self.in_definition(p, s)
            && self.entry(p, s).is_none_or(|e| !is_up(&e.state))
            && !supervised(self.inner, p, s)
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        category: DriftCategory,
        key: &str,
        place: String,
        ps: Option<(&str, &str)>,
        summary: String,
        evidence: Vec<String>,
        resolve: Vec<String>,
        auto: Option<SyncActionKind>,
        subject: DriftSubject,
    ) {
        self.out.push(Finding {
            id: finding_id(category, key),
            category,
            place,
            project: ps.map(|(p, _)| p.to_owned()),
            service: ps.map(|(_, s)| s.to_owned()),
            summary,
            evidence,
            resolve,
            auto,
            subject,
        });
    }

    fn recorded_evidence(&self, p: &str, s: &str) -> String {
        match self.entry(p, s) {
            Some(e) => format!(
                "registry: {p}/{s} is {}{}; launch record: {}",
                e.state,
                e.runtime
                    .pid
                    .map(|x| format!(" (pid {x})"))
                    .unwrap_or_default(),
                self.record(p, s).unwrap_or("none")
            ),
            None if self.scan.known.contains_key(p) => format!(
                "registry: no entry for {p}/{s}{}",
                if self.in_definition(p, s) {
                    " (the project defines it)".to_owned()
                } else {
                    format!(" and project {p} does not define it")
                }
            ),
            None => format!("registry: no project {p} (no entry, no definition)"),
        }
    }
}

fn sync_cmd(flag: &str, id: &str) -> String {
    format!("harness sync --{flag} {id}")
}

/// Something alive that no running record owns (a process, a remote run, a container): a state
/// mismatch when it is the recorded launch of a service the registry calls stopped (`reverse`),
/// else an orphan; with the commands that resolve it (adopt first, when it can be adopted).
fn alive_unowned(reverse: bool, key: &str, adopt: bool) -> (DriftCategory, Vec<String>) {
    let category = if reverse {
        DriftCategory::StateMismatch
    } else {
        DriftCategory::Orphaned
    };
    let id = finding_id(category, key);
    let mut resolve = Vec::new();
    if adopt {
        resolve.push(sync_cmd("adopt", &id));
    }
    resolve.push(sync_cmd("kill", &id));
    (category, resolve)
}

/// Compares everything the scan saw with the registry.
fn compare(inner: &Inner, scan: &Scan, given: Option<&Definition>) -> Vec<Finding> {
    let instance = inner.launches.instance.clone();
    let mut cx = Ctx {
        inner,
        scan,
        entries: scan
            .entries
            .iter()
            .map(|e| ((e.project.as_str(), e.name.as_str()), e))
            .collect(),
        records: inner.launches.all().into_iter().collect(),
        out: Vec::new(),
    };
    // (project, service) of which something exists somewhere (for `abandoned`).
    let mut exists: BTreeSet<(String, String)> = BTreeSet::new();
    // Places that could not be asked: their services are not judged.
    let mut blind: BTreeSet<(String, String)> = BTreeSet::new();

    // --- local processes -----------------------------------------------------------------------
    let pids: BTreeSet<(u32, &str)> = scan
        .local
        .iter()
        .map(|t| (t.row.pid, t.launch_id.as_str()))
        .collect();
    let mut live_local: BTreeSet<&str> = BTreeSet::new();
    // A host may be this machine (ssh to localhost, or the testbed's hosts, which share its
    // /proc): its runs are the remote probe's to judge.
    let remote_ids: BTreeSet<&str> = scan
        .runs
        .iter()
        .filter_map(|(_, _, r)| r.as_ref().ok())
        .flatten()
        .map(|r| r.launch_id.as_str())
        .collect();
    for t in &scan.local {
        if remote_ids.contains(t.launch_id.as_str()) {
            continue;
        }
        if let Some((p, s)) = launch_service(&t.launch_id, &instance)
            && scan
                .specs
                .get(&(p.to_owned(), s.to_owned()))
                .is_some_and(|r| r.placement != Placement::Local)
        {
            continue;
        }
        live_local.insert(t.launch_id.as_str());
        // Only the top of each tree of a launch: its parent does not carry the same id.
        if pids.contains(&(t.row.ppid, t.launch_id.as_str())) {
            continue;
        }
        let Some((p, s)) = launch_service(&t.launch_id, &instance) else {
            continue;
        };
        exists.insert((p.to_owned(), s.to_owned()));
        let rec = cx.record(p, s);
        let entry = cx.entry(p, s);
        // The registry's own pid and start time own it too (a daemon killed between an
        // adoption's registry write and its launch record adopted it by them).
        let by_pid = entry.is_some_and(|e| {
            is_up(&e.state)
                && e.runtime.pid == Some(t.row.pid)
                && e.runtime.process_start_time == Some(t.row.start_time)
        });
        let owned = by_pid
            || rec == Some(t.launch_id.as_str())
                && entry.is_some_and(|e| {
                    is_up(&e.state)
                        && e.runtime.pid.is_none_or(|pid| {
                            pid == t.row.pid || pid == t.row.session || pid == t.row.pgrp
                        })
                });
        if owned {
            continue;
        }
        let cmd = procfs::cmdline(t.row.pid, 200).unwrap_or_default();
        let subject = DriftSubject::LocalProcess {
            pid: t.row.pid,
            start_time: t.row.start_time,
            launch_id: t.launch_id.clone(),
        };
        let key = format!("local {} {}", t.row.pid, t.row.start_time);
        let mut evidence = vec![
            format!(
                "pid {} (start time {}) carries {LAUNCH_ID_VAR}={}: {cmd}",
                t.row.pid, t.row.start_time, t.launch_id
            ),
            cx.recorded_evidence(p, s),
        ];
        let adopt = cx.adoptable(p, s)
            && cx
                .scan
                .specs
                .get(&(p.to_owned(), s.to_owned()))
                .is_some_and(|r| r.placement == Placement::Local);
        let reverse = rec == Some(t.launch_id.as_str()) && entry.is_some_and(|e| !is_up(&e.state));
        let (category, resolve) = alive_unowned(reverse, &key, adopt);
        if !adopt && entry.is_some_and(|e| is_up(&e.state)) {
            evidence.push(format!(
                "{p}/{s} runs already (another incarnation): this one can only be killed"
            ));
        }
        let summary = if reverse {
            format!(
                "{p}/{s} is recorded {} but its launch runs (pid {})",
                entry.map_or("-".to_owned(), |e| e.state.to_string()),
                t.row.pid
            )
        } else {
            format!(
                "process {} carries a launch id of {p}/{s} that no record owns",
                t.row.pid
            )
        };
        cx.push(
            category,
            &key,
            "local".into(),
            Some((p, s)),
            summary,
            evidence,
            resolve,
            adopt.then_some(SyncActionKind::Adopt),
            subject,
        );
    }
    // Local entries recorded running whose process is gone.
    for e in &scan.entries {
        let local = matches!(e.location, harness_protocol::Location::Local);
        if !local || !e.state.is_active() || e.state == ServiceState::Stopping {
            continue;
        }
        let Some((pid, st)) = e.runtime.pid.zip(e.runtime.process_start_time) else {
            continue;
        };
        let alive = procfs::stat(pid).is_some_and(|r| !r.zombie && r.start_time == st);
        let tagged = cx
            .record(&e.project, &e.name)
            .is_some_and(|id| live_local.contains(id));
        if alive || tagged {
            exists.insert((e.project.clone(), e.name.clone()));
            continue;
        }
        gone_while_recorded(
            &mut cx,
            e,
            "local",
            format!("no process {pid} with start time {st} and none carrying its launch id"),
        );
    }

    // --- remote runs ----------------------------------------------------------------------------
    for (place, _target, runs) in &scan.runs {
        let place_name = run_place_name(place);
        // Entries placed here.
        let here: Vec<(String, String)> = scan
            .specs
            .iter()
            .filter(|(_, r)| match (&r.placement, &r.host) {
                (Placement::Host { user, .. }, Some(h)) if r.container.is_none() => {
                    h.name == place.0
                        && user.clone().filter(|u| Some(u) != h.user.as_ref()) == place.1
                }
                _ => false,
            })
            .map(|(k, _)| k.clone())
            .collect();
        let runs = match runs {
            Ok(r) => r,
            Err(why) => {
                place_unreachable(
                    &mut cx,
                    &mut blind,
                    &here,
                    &place_name,
                    "what runs there is not known",
                    why,
                );
                continue;
            }
        };
        let by_id: HashMap<&str, &RemoteRun> =
            runs.iter().map(|r| (r.launch_id.as_str(), r)).collect();
        for r in runs {
            let Some((p, s)) = launch_service(&r.launch_id, &instance) else {
                continue;
            };
            let rec = cx.record(p, s);
            let entry = cx.entry(p, s);
            if r.alive {
                exists.insert((p.to_owned(), s.to_owned()));
            }
            let mine = rec == Some(r.launch_id.as_str());
            let up = entry.is_some_and(|e| is_up(&e.state));
            if !r.alive || (mine && up) {
                continue;
            }
            // Alive and not owned: orphaned, or the recorded launch of a service called stopped.
            let key = format!("run {place_name} {}", r.launch_id);
            let reverse = mine;
            let adopt = cx.adoptable(p, s) && here.iter().any(|(hp, hs)| hp == p && hs == s);
            let (category, resolve) = alive_unowned(reverse, &key, adopt);
            cx.push(
                category,
                &key,
                place_name.clone(),
                Some((p, s)),
                format!(
                    "run {} of {p}/{s} is alive (pid {}) {}",
                    r.launch_id,
                    r.pid,
                    if reverse {
                        "though the registry says it is not running"
                    } else {
                        "and no record owns it"
                    }
                ),
                vec![
                    format!(
                        "~/.local/state/harness/{}: pid {} start time {} alive",
                        r.launch_id, r.pid, r.start_time
                    ),
                    cx.recorded_evidence(p, s),
                ],
                resolve,
                adopt.then_some(SyncActionKind::Adopt),
                DriftSubject::RemoteRun {
                    host: place.0.clone(),
                    user: place.1.clone(),
                    launch_id: r.launch_id.clone(),
                    pid: r.pid,
                    start_time: r.start_time,
                    alive: true,
                },
            );
        }
        // Entries here recorded running whose run is gone or ended.
        for (p, s) in &here {
            let Some(e) = cx.entry(p, s) else { continue };
            if !e.state.is_active() || e.state == ServiceState::Stopping {
                continue;
            }
            let rec = cx.record(p, s).map(str::to_owned);
            let run = rec.as_deref().and_then(|id| by_id.get(id));
            if run.is_some_and(|r| r.alive) {
                continue;
            }
            let what = match (rec.as_deref(), run) {
                (None, _) => "no launch record".to_owned(),
                (Some(id), None) => format!("no run directory for {id}"),
                (Some(id), Some(r)) => format!(
                    "run {id} ended ({})",
                    r.exit
                        .map_or("pid gone, no exit recorded".to_owned(), |x| format!(
                            "exit {x}"
                        ))
                ),
            };
            let e = e.clone();
            gone_while_recorded(&mut cx, &e, &place_name, what);
        }
    }

    // --- containers -----------------------------------------------------------------------------
    for (engine, _t, _cli, rows) in &scan.engines {
        let here: Vec<(String, String)> = scan
            .specs
            .iter()
            .filter(|(_, r)| {
                r.container
                    .as_ref()
                    .is_some_and(|c| c.host.as_ref().map_or("local", |h| h.name.as_str()) == engine)
            })
            .map(|(k, _)| k.clone())
            .collect();
        let place = format!("engine {engine}");
        let rows = match rows {
            Ok(r) => r,
            Err(why) => {
                // An engine nothing is placed on (no docker here) is not drift.
                if !here.is_empty() {
                    place_unreachable(
                        &mut cx,
                        &mut blind,
                        &here,
                        &place,
                        "its containers are not known",
                        why,
                    );
                }
                continue;
            }
        };
        for c in rows {
            // Another daemon's (another state directory on this machine or host): never ours
            // to judge, as its processes are not (ADR 0028).
            if c.launch_id
                .as_deref()
                .is_some_and(|l| l.split('/').next() != Some(instance.as_str()))
            {
                continue;
            }
            let (p, s) = (c.project.as_str(), c.service.as_str());
            let running = c.state == "running";
            if running {
                exists.insert((p.to_owned(), s.to_owned()));
            }
            let entry = cx.entry(p, s);
            let up = entry.is_some_and(|e| is_up(&e.state));
            let placed_here = here.iter().any(|(hp, hs)| hp == p && hs == s);
            if up && placed_here {
                continue; // a stopped container of a running entry: judged below
            }
            let key = format!("container {engine} {}", c.id);
            let reverse = running
                && entry.is_some()
                && !up
                && c.launch_id.is_some()
                && c.launch_id.as_deref() == cx.record(p, s);
            let adopt = running && placed_here && cx.adoptable(p, s);
            let (category, resolve) = alive_unowned(reverse, &key, adopt);
            cx.push(
                category,
                &key,
                place.clone(),
                Some((p, s)),
                format!(
                    "container {} ({}) of {p}/{s} {}",
                    c.name,
                    c.state,
                    if reverse {
                        "runs though the registry says the service does not"
                    } else {
                        "is not owned by any record"
                    }
                ),
                vec![
                    format!(
                        "container {} {} labelled harness.project={p} harness.service={s} harness.launch={}",
                        &c.id[..c.id.len().min(12)],
                        c.state,
                        c.launch_id.as_deref().unwrap_or("-")
                    ),
                    cx.recorded_evidence(p, s),
                ],
                resolve,
                adopt.then_some(SyncActionKind::Adopt),
                DriftSubject::Container {
                    engine: engine.clone(),
                    id: c.id.clone(),
                    name: c.name.clone(),
                    state: c.state.clone(),
                    launch_id: c.launch_id.clone(),
                },
            );
        }
        for (p, s) in &here {
            let Some(e) = cx.entry(p, s) else { continue };
            if !e.state.is_active() || e.state == ServiceState::Stopping {
                continue;
            }
            let row = rows.iter().find(|c| c.project == *p && c.service == *s);
            if row.is_some_and(|c| c.state == "running") {
                continue;
            }
            let what = match row {
                Some(c) => format!("container {} is {}", c.name, c.state),
                None => format!("no container labelled harness.project={p} harness.service={s}"),
            };
            let e = e.clone();
            gone_while_recorded(&mut cx, &e, &place, what);
        }
    }

    // --- installed packages ---------------------------------------------------------------------
    // A package service runs from ROOT/NAME-VERSION; an unpinned one follows NAME-current (deploy
    // and rollback switch both together): the link pointing elsewhere, or the directory gone, is
    // drift. Never resolved by sync: deploy and rollback change packages.
    for (rec, seen) in &scan.packages {
        let PackageCheck {
            root,
            name,
            version,
        } = &rec.check;
        let host = &rec.host;
        let place = format!("host {host}");
        let root_flag = if root == packages::DEFAULT_ROOT {
            String::new()
        } else {
            format!(" --root {root}")
        };
        let active = seen.active.as_deref();
        let link = format!(
            "{root}/{name}-current -> {}",
            active.map_or("(no link)".to_owned(), |a| format!("{name}-{a}"))
        );
        let recorded = format!(
            "recorded: {}/{} runs {name}-{version} from {root}/{name}-{version}{}",
            rec.project,
            rec.service,
            if rec.pinned { " (pinned)" } else { "" }
        );
        let deploy_cmd =
            format!("harness deploy {name}-{version}.tar.zst --host {host}{root_flag}");
        let (category, summary, evidence, resolve) = if !seen.installed {
            (
                DriftCategory::Abandoned,
                format!(
                    "{name}-{version}, which {} runs from, is not installed on {host}",
                    rec.service
                ),
                vec![
                    recorded,
                    format!("observed: {root}/{name}-{version} is missing; {link}"),
                ],
                vec![deploy_cmd],
            )
        } else if !rec.pinned && active != Some(version.as_str()) {
            (
                DriftCategory::StateMismatch,
                format!(
                    "{name} on {host}: {} is active, {} runs {version}",
                    active.map_or("no version".to_owned(), |a| a.to_owned()),
                    rec.service
                ),
                vec![recorded, format!("observed: {link}")],
                vec![
                    format!(
                        "harness deploy --rollback {name} --to {version} --host {host}{root_flag}"
                    ),
                    deploy_cmd,
                ],
            )
        } else {
            continue;
        };
        let key = format!(
            "package {host} {root} {name} {version} {}/{}",
            rec.project, rec.service
        );
        cx.push(
            category,
            &key,
            place,
            Some((&rec.project, &rec.service)),
            summary,
            evidence,
            resolve,
            None,
            DriftSubject::Package {
                host: host.clone(),
                root: root.clone(),
                name: name.clone(),
                recorded: version.clone(),
                active: seen.active.clone(),
                installed: seen.installed,
                pinned: rec.pinned,
            },
        );
    }

    // --- mesh interfaces ------------------------------------------------------------------------
    // A recorded member whose interface is missing (the daemon's mesh watch re-creates it within
    // seconds: a finding that outlives that says the watch cannot); an `hw*` interface on a
    // probed host that no mesh record names (this machine is not scanned for those: other
    // daemons' meshes share it, and the name does not say whose).
    let mut named: BTreeSet<&str> = BTreeSet::new();
    for (project, state) in &scan.meshes {
        for m in &state.members {
            named.insert(m.interface.as_str());
            let Some(seen) = scan.interfaces.get(&m.name) else {
                continue; // not asked (unknown project) or did not answer: not judged
            };
            if seen.contains(&m.interface) {
                continue;
            }
            let place = if m.name == harness_config::LOCAL_NODE {
                "local".to_owned()
            } else {
                format!("host {}", m.name)
            };
            cx.push(
                DriftCategory::StateMismatch,
                &format!(
                    "mesh {project} {} {} {}",
                    state.network, m.name, m.interface
                ),
                place,
                None,
                format!(
                    "mesh {} of {project}: interface {} is missing on {}",
                    state.network, m.interface, m.name
                ),
                vec![
                    format!(
                        "recorded: {} has {} ({}) in network {}",
                        m.name, m.interface, m.address, state.network
                    ),
                    format!("observed: no interface {} there", m.interface),
                ],
                vec![
                    "harness start (brings the mesh up again; the daemon's mesh watch also does)"
                        .into(),
                    format!("harness network show {}", state.network),
                ],
                None,
                DriftSubject::MeshInterface {
                    place: m.name.clone(),
                    interface: m.interface.clone(),
                    network: Some(state.network.clone()),
                    present: false,
                },
            );
        }
    }
    for (host, seen) in &scan.interfaces {
        if host == harness_config::LOCAL_NODE {
            continue;
        }
        for i in seen {
            if named.contains(i.as_str()) {
                continue;
            }
            cx.push(
                DriftCategory::Orphaned,
                &format!("interface {host} {i}"),
                format!("host {host}"),
                None,
                format!("WireGuard interface {i} on {host} belongs to no recorded mesh"),
                vec![
                    "recorded: no mesh of this daemon names it".to_owned(),
                    format!("observed: interface {i} exists on {host}"),
                ],
                vec![format!("ssh {host} sudo ip link del dev {i}")],
                None,
                DriftSubject::MeshInterface {
                    place: host.clone(),
                    interface: i.clone(),
                    network: None,
                    present: true,
                },
            );
        }
    }

    // --- what the daemon found gone when it started ----------------------------------------------
    let notes = inner
        .gone_at_start
        .lock()
        .map(|n| n.clone())
        .unwrap_or_default();
    for n in notes {
        let key = format!("gone at start {}/{} {}", n.project, n.service, n.at);
        let now = cx
            .entry(&n.project, &n.service)
            .map_or("no entry".to_owned(), |e| e.state.to_string());
        cx.push(
            DriftCategory::StateMismatch,
            &key,
            "daemon start".into(),
            Some((&n.project, &n.service)),
            format!(
                "{}/{} was recorded {} but was not running when the daemon started",
                n.project, n.service, n.state
            ),
            vec![
                format!(
                    "recorded {}{} when the previous daemon ended",
                    n.state,
                    n.pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
                ),
                format!(
                    "found gone at {}: recorded as exited (status unknown) and its restart policy applied; now {now}",
                    n.at.round(jiff::Unit::Second).unwrap_or(n.at)
                ),
            ],
            vec![
                "harness sync --auto".into(),
                format!("harness start -p {} {}", n.project, n.service),
            ],
            Some(SyncActionKind::Acknowledge),
            DriftSubject::Entry {
                project: n.project.clone(),
                service: n.service.clone(),
            },
        );
    }

    // --- abandoned records ------------------------------------------------------------------------
    for e in &scan.entries {
        let k = (e.project.clone(), e.name.clone());
        if cx.in_definition(&e.project, &e.name) || exists.contains(&k) || blind.contains(&k) {
            continue;
        }
        if matches!(e.state, ServiceState::Unknown { .. }) {
            continue; // judged as unreachable below
        }
        let why = if cx.scan.known.contains_key(&e.project) {
            format!("project {} no longer defines {}", e.project, e.name)
        } else {
            format!("no definition of project {} is kept", e.project)
        };
        let name = format!("{}/{}", e.project, e.name);
        cx.push(
            DriftCategory::Abandoned,
            &format!("entry {name}"),
            "registry".into(),
            Some((&e.project, &e.name)),
            format!("{name} is recorded {} but nothing of it exists", e.state),
            vec![cx.recorded_evidence(&e.project, &e.name), why],
            vec![format!("harness sync --forget {name}")],
            Some(SyncActionKind::Forget),
            DriftSubject::Entry {
                project: e.project.clone(),
                service: e.name.clone(),
            },
        );
    }
    let records: Vec<((String, String), String)> = cx
        .records
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for ((p, s), id) in records {
        let k = (p.clone(), s.clone());
        let has_entry = cx.entry(&p, &s).is_some();
        if has_entry || exists.contains(&k) || blind.contains(&k) {
            continue;
        }
        let name = format!("{p}/{s}");
        cx.push(
            DriftCategory::Abandoned,
            &format!("record {id}"),
            "launch journal".into(),
            Some((&p, &s)),
            format!("launch record {id} has no registry entry and nothing of it exists"),
            vec![format!("$HARNESS_HOME/launches: +{id}")],
            vec![format!("harness sync --forget {name}")],
            Some(SyncActionKind::Forget),
            DriftSubject::Entry {
                project: p.clone(),
                service: s.clone(),
            },
        );
    }

    // --- unknown state (ADR 0032) -----------------------------------------------------------------
    for e in &scan.entries {
        if let ServiceState::Unknown { host, reason, .. } = &e.state {
            let name = format!("{}/{}", e.project, e.name);
            cx.push(
                DriftCategory::Unreachable,
                &format!("unknown {name}"),
                format!("host {host}"),
                Some((&e.project, &e.name)),
                format!("{name} is unknown: its host {host} does not answer"),
                vec![format!("registry: {}", e.state), reason.clone()],
                vec![
                    "harness hosts check".into(),
                    format!("harness stop -p {} {}", e.project, e.name),
                ],
                None,
                DriftSubject::Entry {
                    project: e.project.clone(),
                    service: e.name.clone(),
                },
            );
        }
    }

    // --- definition drift ---------------------------------------------------------------------------
    for e in &scan.entries {
        if !e.state.is_active() || matches!(e.state, ServiceState::Unknown { .. }) {
            continue;
        }
        let def = match given {
            Some((p, base)) if p.name == e.project => Some((p.clone(), base.clone())),
            _ => cx.scan.known.get(&e.project).cloned(),
        };
        let Some((project, base)) = def else { continue };
        let name = format!("{}/{}", e.project, e.name);
        let Some(service) = project.services.get(&e.name) else {
            cx.push(
                DriftCategory::DefinitionDrift,
                &format!("def {name} removed"),
                "definition".into(),
                Some((&e.project, &e.name)),
                format!("{name} runs but the services file no longer defines it"),
                vec![format!("registry: {name} is {}", e.state)],
                vec![
                    format!("harness start -p {} --remove-orphans", e.project),
                    format!("harness stop -p {} {}", e.project, e.name),
                ],
                None,
                DriftSubject::Entry {
                    project: e.project.clone(),
                    service: e.name.clone(),
                },
            );
            continue;
        };
        // A package service runs as what `start` prepared it into: not comparable here.
        if service.kind == harness_config::ServiceKind::Package {
            continue;
        }
        let Ok(want) = Resolved::new(&project, &e.name, base.as_deref()).map(|r| r.hash()) else {
            continue;
        };
        let running = running_hash(inner, &e.project, &e.name);
        let Some(running) = running else { continue };
        if running == want {
            continue;
        }
        cx.push(
            DriftCategory::DefinitionDrift,
            &format!("def {name} {running} {want}"),
            "definition".into(),
            Some((&e.project, &e.name)),
            format!("{name} runs an older definition than the services file"),
            vec![
                format!(
                    "running instance started from definition {}",
                    &running[..running.len().min(12)]
                ),
                format!("services file defines {}", &want[..want.len().min(12)]),
            ],
            vec![
                format!("harness start -p {} {}", e.project, e.name),
                format!("harness restart -p {} {}", e.project, e.name),
            ],
            None,
            DriftSubject::Entry {
                project: e.project.clone(),
                service: e.name.clone(),
            },
        );
    }
    let mut out = cx.out;
    out.sort_by(|a, b| {
        (a.category, &a.project, &a.service, &a.id)
            .cmp(&(b.category, &b.project, &b.service, &b.id))
    });
    out
}

/// A service recorded running whose process, run or container is gone.
/// A place that did not answer: the services placed there are not judged (`blind`), and one
/// finding says which were recorded running there.
fn place_unreachable(
    cx: &mut Ctx<'_>,
    blind: &mut BTreeSet<(String, String)>,
    here: &[(String, String)],
    place: &str,
    unknown: &str,
    why: &str,
) {
    blind.extend(here.iter().cloned());
    let names: Vec<String> = here
        .iter()
        .filter(|(p, s)| cx.entry(p, s).is_some_and(|e| is_up(&e.state)))
        .map(|(p, s)| format!("{p}/{s}"))
        .collect();
    cx.push(
        DriftCategory::Unreachable,
        &format!("unreachable {place}"),
        place.to_owned(),
        None,
        format!("{place} did not answer: {unknown}"),
        vec![
            why.to_owned(),
            format!(
                "recorded running there: {}",
                if names.is_empty() {
                    "nothing".to_owned()
                } else {
                    names.join(", ")
                }
            ),
        ],
        vec!["harness hosts check".into(), "harness drift".into()],
        None,
        DriftSubject::Place {
            place: place.to_owned(),
        },
    );
}

fn gone_while_recorded(cx: &mut Ctx<'_>, e: &ServiceEntry, place: &str, what: String) {
    let name = format!("{}/{}", e.project, e.name);
    let watched = supervised(cx.inner, &e.project, &e.name);
    let mut evidence = vec![
        cx.recorded_evidence(&e.project, &e.name),
        format!("observed: {what}"),
    ];
    if watched {
        evidence.push("its supervisor is watching and will record the end itself".into());
    }
    cx.push(
        DriftCategory::StateMismatch,
        &format!("gone {name}"),
        place.to_owned(),
        Some((&e.project, &e.name)),
        format!("{name} is recorded {} but is not running", e.state),
        evidence,
        vec![
            "harness sync --auto".into(),
            format!("harness start -p {} {}", e.project, e.name),
        ],
        (!watched).then_some(SyncActionKind::RecordObserved),
        DriftSubject::Entry {
            project: e.project.clone(),
            service: e.name.clone(),
        },
    );
}

/// The definition hash the service's running instance was started from.
fn running_hash(inner: &Inner, project: &str, service: &str) -> Option<String> {
    let slot = inner.projects.lock().ok().and_then(|p| {
        p.get(project)
            .and_then(|rt| rt.services.get(service))
            .and_then(|s| s.hash.clone())
    });
    slot.or_else(|| {
        let dir = inner.project_dir(project);
        crate::apply::saved_hash(&crate::apply::read_hashes(&dir), &dir, service)
    })
    .map(|h| h.trim().to_owned())
    .filter(|h| !h.is_empty())
}

/// `harness drift`.
pub(crate) async fn drift(inner: &Arc<Inner>, given: Option<Definition>) -> Result<DriftResult> {
    let t0 = Instant::now();
    let scan = scan(inner, given.clone()).await?;
    let findings = compare(inner, &scan, given.as_ref());
    Ok(DriftResult {
        findings,
        probes: scan.probes.clone(),
        entries: scan.entries.len(),
        elapsed_ms: millis(t0.elapsed()),
    })
}

fn err(message: impl Into<String>) -> Error {
    Error::Drift {
        message: message.into(),
    }
}

/// `harness sync`.
pub(crate) async fn sync(
    inner: &Arc<Inner>,
    mode: SyncMode,
    project: Option<String>,
    given: Option<Definition>,
) -> Result<SyncResult> {
    let scan = scan(inner, given.clone()).await?;
    let findings = compare(inner, &scan, given.as_ref());
    let find = |id: &str| {
        findings
            .iter()
            .find(|f| f.id == id)
            .cloned()
            .ok_or_else(|| {
                err(format!(
                    "no finding {id} (run `harness drift`: it may be resolved already)"
                ))
            })
    };
    let mut actions = Vec::new();
    let mut left = Vec::new();
    match mode {
        SyncMode::DryRun | SyncMode::Auto => {
            let dry = matches!(mode, SyncMode::DryRun);
            for f in &findings {
                let Some(kind) = f.auto else {
                    left.push(f.clone());
                    continue;
                };
                if dry {
                    actions.push(SyncAction {
                        finding: f.id.clone(),
                        action: kind,
                        done: false,
                        detail: f.summary.clone(),
                    });
                    continue;
                }
                let r = act(inner, &scan, f, kind).await;
                let done = r.is_ok();
                if !done {
                    left.push(f.clone());
                }
                actions.push(SyncAction {
                    finding: f.id.clone(),
                    action: kind,
                    done,
                    detail: r.unwrap_or_else(|e| e.to_string()),
                });
            }
            return Ok(SyncResult {
                dry_run: dry,
                actions,
                left,
            });
        }
        SyncMode::Adopt { id } => {
            let f = find(&id)?;
            let detail = act(inner, &scan, &f, SyncActionKind::Adopt).await?;
            actions.push(SyncAction {
                finding: id,
                action: SyncActionKind::Adopt,
                done: true,
                detail,
            });
        }
        SyncMode::Kill { id } => {
            let f = find(&id)?;
            let detail = act(inner, &scan, &f, SyncActionKind::Kill).await?;
            actions.push(SyncAction {
                finding: id,
                action: SyncActionKind::Kill,
                done: true,
                detail,
            });
        }
        SyncMode::Forget { name } => {
            let (p, s) = match (name.split_once('/'), project) {
                (Some((p, s)), _) => (p.to_owned(), s.to_owned()),
                (None, Some(p)) => (p, name.clone()),
                (None, None) => {
                    return Err(err(format!(
                        "--forget {name}: say PROJECT/SERVICE (or give -p PROJECT)"
                    )));
                }
            };
            let f = findings
                .iter()
                .find(|f| {
                    f.category == DriftCategory::Abandoned
                        && f.project.as_deref() == Some(&p)
                        && f.service.as_deref() == Some(&s)
                })
                .cloned()
                .ok_or_else(|| {
                    err(format!(
                        "{p}/{s} is not abandoned (something of it exists, or its project defines it): \
                         only abandoned records are forgotten; stop it instead"
                    ))
                })?;
            let detail = act(inner, &scan, &f, SyncActionKind::Forget).await?;
            actions.push(SyncAction {
                finding: f.id,
                action: SyncActionKind::Forget,
                done: true,
                detail,
            });
        }
    }
    Ok(SyncResult {
        dry_run: false,
        actions,
        left,
    })
}

/// Carries out one action on a finding, under its project's operation lock.
async fn act(inner: &Arc<Inner>, scan: &Scan, f: &Finding, kind: SyncActionKind) -> Result<String> {
    let project = f.project.clone().unwrap_or_default();
    let service = f.service.clone().unwrap_or_default();
    let _op = if project.is_empty() {
        None
    } else {
        Some(inner.operation(&project).await)
    };
    match kind {
        SyncActionKind::Kill => kill(inner, scan, f).await,
        SyncActionKind::Adopt => adopt(inner, scan, f, &project, &service).await,
        SyncActionKind::Forget => {
            let key = ServiceKey {
                project: project.clone(),
                name: service.clone(),
            };
            if supervised(inner, &project, &service) {
                return Err(err(format!(
                    "{project}/{service} is supervised: stop it instead"
                )));
            }
            let had = match inner.store.deregister(&key).await {
                Ok(_) => true,
                Err(harness_store::StoreError::NotFound(_)) => false,
                Err(e) => return Err(e.into()),
            };
            inner.launches.forget(&project, &service).await;
            if let Ok(mut p) = inner.projects.lock()
                && let Some(rt) = p.get_mut(&project)
            {
                rt.services.remove(&service);
            }
            Ok(if had {
                format!("forgot {project}/{service} (registry entry and launch record)")
            } else {
                format!("forgot the launch record of {project}/{service}")
            })
        }
        SyncActionKind::RecordObserved => {
            if supervised(inner, &project, &service) {
                return Err(err(format!(
                    "{project}/{service} is supervised: its supervisor records its end"
                )));
            }
            let key = ServiceKey {
                project: project.clone(),
                name: service.clone(),
            };
            inner
                .store
                .modify(&key, |e| {
                    e.transition(ServiceState::Exited {
                        code: None,
                        signal: None,
                    })
                })
                .await?;
            inner.launches.forget(&project, &service).await;
            Ok(format!(
                "recorded {project}/{service} as exited (status unknown)"
            ))
        }
        SyncActionKind::Acknowledge => {
            if let Ok(mut n) = inner.gone_at_start.lock() {
                n.retain(|n| !(n.project == project && n.service == service));
            }
            Ok(format!(
                "took note that {project}/{service} was gone when the daemon started"
            ))
        }
    }
}

fn engine_of<'a>(scan: &'a Scan, engine: &str) -> Result<&'a EngineProbe> {
    scan.engines
        .iter()
        .find(|(n, ..)| n == engine)
        .ok_or_else(|| err(format!("engine {engine} is not known")))
}

async fn kill(inner: &Arc<Inner>, scan: &Scan, f: &Finding) -> Result<String> {
    if !matches!(
        f.category,
        DriftCategory::Orphaned | DriftCategory::StateMismatch
    ) {
        return Err(err(format!(
            "{}: only an orphan is killed ({})",
            f.id,
            f.category.as_str()
        )));
    }
    let outcome = match &f.subject {
        DriftSubject::LocalProcess {
            pid,
            start_time,
            launch_id,
        } => {
            let (pid, st, id) = (*pid, *start_time, launch_id.clone());
            blocking::unblock(move || survey::kill_local_verified(pid, st, LAUNCH_ID_VAR, &id))
                .await
        }
        DriftSubject::RemoteRun {
            host,
            user,
            launch_id,
            pid,
            start_time,
            ..
        } => {
            let target = scan
                .runs
                .iter()
                .find(|((h, u), ..)| h == host && u == user)
                .map(|(_, t, _)| t.clone())
                .ok_or_else(|| err(format!("host {host} is not known")))?;
            survey::kill_remote_run(&inner.executor, &target, launch_id, *pid, *start_time)
                .await
                .map_err(|e| err(e.to_string()))?
        }
        DriftSubject::Container {
            engine,
            id,
            launch_id,
            ..
        } => {
            let (_, target, cli, _) = engine_of(scan, engine)?;
            survey::remove_container_verified(
                &inner.executor,
                target,
                cli,
                id,
                launch_id.as_deref(),
            )
            .await
            .map_err(|e| err(e.to_string()))?
        }
        _ => return Err(err(format!("{}: nothing to kill", f.id))),
    };
    match outcome {
        KillOutcome::Killed => Ok(format!("killed: {}", f.summary)),
        KillOutcome::Gone => Ok(format!("already gone: {}", f.summary)),
        KillOutcome::Changed => Err(err(format!(
            "{}: not killed: it is no longer what was probed (another process or container now)",
            f.id
        ))),
    }
}

async fn adopt(
    inner: &Arc<Inner>,
    scan: &Scan,
    f: &Finding,
    project: &str,
    service: &str,
) -> Result<String> {
    let Some((def, base)) = known_project(inner, project).await? else {
        return Err(err(format!(
            "{}: project {project} is not applied: nothing to adopt it as",
            f.id
        )));
    };
    let spec = Resolved::new(&def, service, base.as_deref())
        .map_err(|m| err(format!("{project}/{service}: {m}")))?;
    let key = ServiceKey {
        project: project.to_owned(),
        name: service.to_owned(),
    };
    if let Some(e) = inner.store.get(&key).await?
        && is_up(&e.state)
    {
        return Err(err(format!(
            "{project}/{service} is {} already: a second incarnation is never adopted (kill it: harness sync --kill {})",
            e.state, f.id
        )));
    }
    if supervised(inner, project, service) {
        return Err(err(format!(
            "{project}/{service} is supervised: stop it first"
        )));
    }
    let dir = inner.service_dir(project, service);
    let (launched, launch_id): (Launched, Option<String>) = match &f.subject {
        DriftSubject::LocalProcess {
            pid,
            start_time,
            launch_id,
        } => {
            if spec.placement != Placement::Local {
                return Err(err(format!("{project}/{service} is not a local service")));
            }
            let (pid, st, id) = (*pid, *start_time, launch_id.clone());
            let user = spec.launch.user.clone();
            let cgroup = inner.launches.existing_cgroup(project, service);
            let found = blocking::unblock(move || {
                survey::verify_local(pid, st, LAUNCH_ID_VAR, &id)
                    .then(|| command_executor::service::local::attach(pid, st, user, cgroup))
                    .flatten()
            })
            .await;
            let p = found.ok_or_else(|| {
                err(format!(
                    "{}: pid {pid} is no longer the process probed",
                    f.id
                ))
            })?;
            (Box::new(p) as Launched, Some(launch_id.clone()))
        }
        DriftSubject::RemoteRun {
            host,
            user,
            launch_id,
            ..
        } => {
            let target = scan
                .runs
                .iter()
                .find(|((h, u), ..)| h == host && u == user)
                .map(|(_, t, _)| t.clone())
                .ok_or_else(|| err(format!("host {host} is not known")))?;
            let r = command_executor::service::remote::adopt(
                &inner.executor,
                &target,
                &dir,
                launch_id,
                true,
                None,
            )
            .await
            .map_err(|e| err(e.to_string()))?
            .ok_or_else(|| err(format!("{}: run {launch_id} is gone", f.id)))?;
            (Box::new(r) as Launched, Some(launch_id.clone()))
        }
        DriftSubject::Container { launch_id, .. } => {
            let c = spec
                .container
                .as_deref()
                .ok_or_else(|| err(format!("{project}/{service} is not a container service")))?;
            let found = crate::runtime::container::attach(&inner.executor, c, &dir)
                .await
                .ok_or_else(|| err(format!("{}: the container is gone", f.id)))?;
            (Box::new(found) as Launched, launch_id.clone())
        }
        _ => return Err(err(format!("{}: nothing to adopt", f.id))),
    };
    // The registry first, then the launch record: a daemon killed between the two adopts it
    // again by its recorded pid (local) or labels (container); a remote run is found as an
    // orphan again. Never the other order: a record without a running entry is killed on start.
    crate::apply::ensure_entry(inner, &def, service).await?;
    let (pid, st) = (launched.pid(), launched.start_time());
    let container = launched.container_id().map(str::to_owned);
    let health = spec.health.is_some();
    inner
        .store
        .modify(&key, move |e| {
            if e.state != ServiceState::Starting {
                e.transition(ServiceState::Starting)?;
            }
            if !health {
                e.transition(ServiceState::Running)?;
            }
            e.runtime.pid = Some(pid);
            e.runtime.process_start_time = Some(st);
            if container.is_some() {
                e.runtime.container_id = container;
            }
            Ok(())
        })
        .await?;
    if let Some(id) = &launch_id
        && let Err(e) = inner.launches.record(project, service, id).await
    {
        tracing::warn!("adopted {project}/{service} but cannot record launch {id}: {e}");
    }
    let ready = Arc::new(Readiness::default());
    ready.update(|r| r.started = true);
    let hash = running_hash(inner, project, service).or_else(|| Some(spec.hash()));
    let check = spec.health_description();
    let stop = (spec.stop.signal, spec.stop.timeout);
    let handle = crate::apply::spawn_supervisor(
        inner,
        project,
        spec,
        ready.clone(),
        crate::supervisor::Begin::Attach(launched),
    );
    crate::apply::with_slot(inner, project, service, |slot| {
        slot.hash = hash;
        slot.health_check = check;
        slot.stop = Some(stop);
        slot.ready = ready;
        slot.handle = Some(handle);
    });
    Ok(format!("adopted pid {pid} as {project}/{service}"))
}
