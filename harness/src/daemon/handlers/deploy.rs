//! `deploy`: install a built package on hosts of a project, all in parallel, streaming each host's
//! phase and bytes to the caller and recording them as `deployment.progress` events
//! (see `orchestrator::deploy`). A failure on one host is that host's entry in the result, never the
//! request's error: the other hosts' outcomes matter as much.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use harness_config::Project;
use harness_protocol::wire::{
    DeployAction, DeployParams, DeployProgress, DeployResult, HostDeployment,
};
use harness_protocol::{ErrorCode, WireError};
use harness_server::RequestContext;
use orchestrator::deploy::{DeployOptions, DeployTarget, Outcome, Package, Phase, Progress};

use futures_lite::FutureExt;

use crate::daemon::State;

/// Progress messages per host during an upload, at most (plus one per phase).
const UPLOAD_STEPS: u64 = 50;

pub async fn handle(
    state: Arc<State>,
    p: DeployParams,
    ctx: RequestContext,
) -> Result<DeployResult, WireError> {
    use crate::daemon::operations as ops;
    let op = ops::begin(
        &state,
        &ctx,
        harness_protocol::operation::OperationKind::Deploy,
        Some(p.project.clone()),
        p.hosts.clone(),
        serde_json::json!({
            "archive": p.archive,
            "hosts": p.hosts,
            "root": p.root,
            "keep": p.keep,
            "replace": p.replace,
        }),
    )
    .await;
    let result = deploy(&state, p, &ctx, &op).await;
    match &result {
        Ok(r) => ops::finish_hosts(&op, &r.hosts),
        Err(e) => ops::finish(&op, &Err::<(), _>(e.clone())),
    }
    result
}

async fn deploy(
    state: &Arc<State>,
    p: DeployParams,
    ctx: &RequestContext,
    op: &orchestrator::OperationLog,
) -> Result<DeployResult, WireError> {
    let began = Instant::now();
    let project = project_from(&p.project, &p.yaml, &p.dir).await?;
    let archive = PathBuf::from(&p.archive);
    if !archive.is_absolute() {
        return Err(invalid(format!(
            "archive {:?} must be an absolute path on the daemon's machine",
            p.archive
        )));
    }
    let pkg = blocking::unblock(move || Package::open(&archive))
        .await
        .map_err(|e| invalid(e.to_string()))?;
    let name = pkg.manifest.name.clone();
    let targets = targets(&project, &name, &p.hosts)?;
    let mut options = DeployOptions::default().with_test_hooks_from_env();
    if let Some(root) = &p.root {
        options.root.clone_from(root);
    }
    if let Some(keep) = p.keep {
        options.keep = keep;
    }
    options.replace = p.replace;
    // `ops.cancel` sets the flag the deployment checks before each chunk and before activating.
    let cancel = Arc::new(AtomicBool::new(false));
    options.cancel = Some(cancel.clone());

    let (tx, rx) = async_channel::unbounded::<DeployProgress>();
    let last = Mutex::new(HashMap::<String, (Phase, u64)>::new());
    let steps = crate::daemon::operations::DeploySteps::new(op);
    let on_progress = |pr: &Progress| {
        steps.progress(&pr.host, &pr.package, pr.phase);
        if should_send(&last, pr) {
            let _ = tx.try_send(DeployProgress {
                host: pr.host.clone(),
                package: pr.package.clone(),
                phase: pr.phase.as_str().to_owned(),
                bytes: pr.bytes,
                total: pr.total,
            });
        }
    };
    let work = async {
        let results = orchestrator::deploy::deploy(
            &state.executor,
            &ctx.store,
            Some(&project.name),
            &pkg,
            &targets,
            &options,
            &on_progress,
        )
        .await;
        tx.close();
        for (t, r) in targets.iter().zip(&results) {
            steps.end(
                &t.host,
                match r {
                    Ok(_) => harness_protocol::operation::StepResult::Ok,
                    Err(packages::Error::Cancelled { .. }) => {
                        harness_protocol::operation::StepResult::Cancelled
                    }
                    Err(e) => harness_protocol::operation::StepResult::Failed {
                        reason: e.to_string(),
                    },
                },
            );
        }
        results
    };
    let forward = async {
        while let Ok(msg) = rx.recv().await {
            // The caller may have gone; the deployment still finishes and is recorded.
            let _ = ctx.progress(&msg).await;
        }
    };
    let watch = async {
        op.cancelled().await;
        cancel.store(true, Ordering::SeqCst);
        std::future::pending::<()>().await;
    };
    let (results, ()) = futures_lite::future::zip(
        work.or(async {
            watch.await;
            Vec::new()
        }),
        forward,
    )
    .await;
    if let Some(req) = op.cancel_requested() {
        return Err(cancelled(
            state,
            ctx,
            op,
            req,
            &project.name,
            &name,
            &options.root,
            &targets,
            results,
        )
        .await);
    }

    // Running services of this package move to what is now active on their host.
    let versions: HashMap<String, String> = targets
        .iter()
        .zip(&results)
        .filter_map(|(t, r)| match r {
            Ok(d) if d.outcome != Outcome::Unchanged => {
                Some((t.host.clone(), pkg.manifest.version.to_string()))
            }
            _ => None,
        })
        .collect();
    let dir = PathBuf::from(&p.dir);
    let mut restarts = restart_services(
        ctx,
        state,
        &project,
        &dir,
        p.root.as_deref(),
        &name,
        &versions,
    )
    .await;
    let mut hosts: Vec<HostDeployment> = targets
        .iter()
        .zip(results)
        .map(|(t, r)| match r {
            Ok(d) => HostDeployment {
                host: t.host.clone(),
                package: d.package,
                action: match d.outcome {
                    Outcome::Installed => DeployAction::Installed,
                    Outcome::Activated => DeployAction::Activated,
                    Outcome::Unchanged => DeployAction::Unchanged,
                },
                path: Some(d.path),
                previous: d.previous,
                bytes_sent: d.bytes_sent,
                error: None,
                restarted: Vec::new(),
            },
            Err(e) => failed_host(&t.host, pkg.id(), &e),
        })
        .collect();
    merge_restarts(&mut hosts, &mut restarts);
    Ok(DeployResult {
        name,
        sha256: Some(pkg.sha256.clone()),
        hosts,
        elapsed_ms: u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// After `ops.cancel`: every host that activated the new version before the cancel reached it is
/// switched back to the version it had (the new one stays installed as a rollback target); the
/// others stopped before activating. Ends `op` as cancelled and gives the error the client gets.
#[allow(clippy::too_many_arguments)]
async fn cancelled(
    state: &State,
    ctx: &RequestContext,
    op: &orchestrator::OperationLog,
    req: orchestrator::CancelRequest,
    project: &str,
    name: &str,
    root: &str,
    targets: &[DeployTarget],
    results: Vec<Result<orchestrator::deploy::Deployed, packages::Error>>,
) -> WireError {
    use harness_protocol::operation::{OperationOutcome, StepKind, StepResult};
    let id = op.id();
    let mut notes = Vec::new();
    let mut rolled_back = false;
    for (t, r) in targets.iter().zip(&results) {
        match r {
            Ok(d) if d.outcome == Outcome::Unchanged => {}
            Ok(d) => match &d.previous {
                Some(prev) => {
                    let step = op.step(
                        StepKind::RollingBack,
                        None,
                        Some(&t.host),
                        Some(format!("{name}-{prev}")),
                    );
                    let back = orchestrator::deploy::rollback(
                        &state.executor,
                        &ctx.store,
                        Some(project),
                        std::slice::from_ref(t),
                        root,
                        name,
                        Some(prev),
                    )
                    .await;
                    match back.into_iter().next() {
                        Some(Ok(_)) => {
                            rolled_back = true;
                            op.end(step, StepResult::Ok);
                            notes.push(format!(
                                "{}: had activated, switched back to {prev}",
                                t.host
                            ));
                        }
                        Some(Err(e)) => {
                            op.end(
                                step,
                                StepResult::Failed {
                                    reason: e.to_string(),
                                },
                            );
                            notes.push(format!(
                                "{}: had activated, switching back failed: {e}",
                                t.host
                            ));
                        }
                        None => op.end(step, StepResult::Cancelled),
                    }
                }
                None => notes.push(format!(
                    "{}: had activated its first version of {name} (nothing to switch back to)",
                    t.host
                )),
            },
            Err(packages::Error::Cancelled { detail, .. }) => {
                notes.push(format!("{}: stopped {detail}", t.host));
            }
            Err(e) => notes.push(format!("{}: {e}", t.host)),
        }
    }
    if results.is_empty() {
        notes.push("every host stopped before activating".to_owned());
    }
    let reason = format!(
        "cancelled by `harness ops cancel {id}`: {}",
        notes.join("; ")
    );
    op.finish(OperationOutcome::Cancelled {
        reason: reason.clone(),
        rollback: req.rollback || rolled_back,
    });
    WireError {
        code: ErrorCode::Cancelled,
        message: format!("operation {id} was {reason}"),
        data: Some(serde_json::json!({ "operation": id })),
    }
}

/// Phase changes always; bytes at most [`UPLOAD_STEPS`] times per host, and the last byte.
fn should_send(last: &Mutex<HashMap<String, (Phase, u64)>>, p: &Progress) -> bool {
    let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
    let step = (p.total / UPLOAD_STEPS).max(1);
    let send = match last.get(&p.host) {
        Some((phase, bytes)) => *phase != p.phase || p.bytes >= bytes + step || p.bytes == p.total,
        None => true,
    };
    if send {
        last.insert(p.host.clone(), (p.phase, p.bytes));
    }
    send
}

/// The hosts named, or every host with a `type: package` service of `name`.
pub(crate) fn targets(
    project: &Project,
    name: &str,
    hosts: &[String],
) -> Result<Vec<DeployTarget>, WireError> {
    let targets = if hosts.is_empty() {
        orchestrator::deploy::package_targets(project, name)
    } else {
        orchestrator::deploy::named_targets(project, hosts)
    }
    .map_err(|e| invalid(e.to_string()))?;
    if targets.is_empty() {
        return Err(invalid(format!(
            "no host to deploy {name} to: no `type: package` service of package {name:?} names a \
             host in project {:?}; name hosts with --host",
            project.name
        )));
    }
    Ok(targets)
}

/// Loads the project the CLI validated, as `start` does: again with the same loader and no
/// environment, so the daemon acts on exactly what was validated.
pub(crate) async fn project_from(name: &str, yaml: &str, dir: &str) -> Result<Project, WireError> {
    let path = Path::new(dir).join("services.yaml");
    let yaml = yaml.to_owned();
    let loaded = blocking::unblock(move || {
        harness_config::load_str(&path, yaml, &|_: &str| -> Option<String> { None })
    })
    .await;
    let project = match loaded.project {
        Some(project) if loaded.errors.is_empty() => project,
        _ => {
            let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
            return Err(invalid(format!(
                "the project definition is invalid: {}",
                errors.join("; ")
            )));
        }
    };
    if project.name != name {
        return Err(invalid(format!(
            "params name project {name:?} but the definition is project {:?}",
            project.name
        )));
    }
    Ok(project)
}

pub(crate) fn invalid(message: String) -> WireError {
    WireError::new(ErrorCode::InvalidParams, message)
}

/// `type: package` services made runnable (see `orchestrator::deploy::prepare`): deployed first
/// where their version is missing, then rewritten as the remote processes they are.
pub(crate) async fn prepare_packages(
    ctx: &RequestContext,
    state: &State,
    project: &Project,
    dir: &Path,
    root: Option<&str>,
    versions: &HashMap<String, String>,
) -> Result<Project, WireError> {
    if !project
        .services
        .values()
        .any(|s| s.kind == harness_config::ServiceKind::Package)
    {
        return Ok(project.clone());
    }
    let mut options = DeployOptions::default().with_test_hooks_from_env();
    if let Some(r) = root {
        options.root = r.to_owned();
    }
    let dirs = orchestrator::deploy::archive_dirs(Some(dir), state.home.root());
    orchestrator::deploy::prepare(
        &state.executor,
        &ctx.store,
        project,
        &dirs,
        &options,
        versions,
    )
    .await
    .map(|(p, _)| p)
    .map_err(|e| WireError::new(ErrorCode::Failed, e))
}

/// Restarts the running `type: package` services of package `name` on the hosts of `versions`
/// (host → the version now active there) on that version. Per host: the services restarted, or
/// why they could not be.
/// The entry of a host whose deployment or rollback failed.
pub(crate) fn failed_host(
    host: &str,
    package: String,
    error: &dyn std::fmt::Display,
) -> HostDeployment {
    HostDeployment {
        host: host.to_owned(),
        package,
        action: DeployAction::Failed,
        path: None,
        previous: None,
        bytes_sent: 0,
        error: Some(error.to_string()),
        restarted: Vec::new(),
    }
}

/// Puts each host's restarted services (from [`restart_services`]) into its entry; a failed restart
/// becomes the host's error.
pub(crate) fn merge_restarts(
    hosts: &mut [HostDeployment],
    restarts: &mut HashMap<String, Result<Vec<String>, String>>,
) {
    for h in hosts {
        match restarts.remove(&h.host) {
            Some(Ok(list)) => h.restarted = list,
            Some(Err(e)) => h.error = Some(format!("{}: {e}", h.host)),
            None => {}
        }
    }
}

pub(crate) async fn restart_services(
    ctx: &RequestContext,
    state: &State,
    project: &Project,
    dir: &Path,
    root: Option<&str>,
    name: &str,
    versions: &HashMap<String, String>,
) -> HashMap<String, Result<Vec<String>, String>> {
    let mut out: HashMap<String, Result<Vec<String>, String>> = HashMap::new();
    let running: Vec<String> = match state.orch.status(Some(&project.name)).await {
        Ok(entries) => entries
            .into_iter()
            .filter(|e| {
                matches!(
                    e.state,
                    harness_protocol::ServiceState::Running
                        | harness_protocol::ServiceState::Starting
                )
            })
            .map(|e| e.name)
            .collect(),
        // Nothing of this project was ever started here.
        Err(_) => return out,
    };
    let mut pick: HashMap<String, String> = HashMap::new();
    let mut hosts_of: HashMap<String, String> = HashMap::new();
    for (svc, s) in &project.services {
        let (Some(host), Some(pkg)) = (&s.host, &s.package) else {
            continue;
        };
        let Some(version) = versions.get(host) else {
            continue;
        };
        // A service pinned to another version keeps it.
        if s.kind != harness_config::ServiceKind::Package
            || pkg != name
            || !running.contains(svc)
            || s.version.as_ref().is_some_and(|v| v != version)
        {
            continue;
        }
        pick.insert(svc.clone(), version.clone());
        hosts_of.insert(svc.clone(), host.clone());
    }
    if pick.is_empty() {
        return out;
    }
    let fail = |out: &mut HashMap<String, Result<Vec<String>, String>>, why: String| {
        for host in hosts_of.values() {
            out.insert(host.clone(), Err(why.clone()));
        }
    };
    let prepared = match prepare_packages(ctx, state, project, dir, root, &pick).await {
        Ok(p) => p,
        Err(e) => {
            fail(&mut out, format!("restarting: {}", e.message));
            return out;
        }
    };
    let opts = orchestrator::ApplyOptions {
        services: pick.keys().cloned().collect(),
        remove_orphans: false,
        base_dir: Some(dir.to_owned()),
        operation: None,
    };
    let report = match state.orch.apply(&prepared, opts).await {
        Ok(r) => r,
        Err(e) => {
            fail(&mut out, format!("restarting: {e}"));
            return out;
        }
    };
    for s in report.services {
        let Some(host) = hosts_of.get(&s.name) else {
            continue;
        };
        let entry = out.entry(host.clone()).or_insert_with(|| Ok(Vec::new()));
        match (s.action, entry) {
            (orchestrator::Action::Failed | orchestrator::Action::Skipped, e) => {
                *e = Err(format!(
                    "restarting {}: {}",
                    s.name,
                    s.error.as_deref().unwrap_or("failed")
                ));
            }
            (_, Ok(list)) => list.push(s.name),
            (_, Err(_)) => {}
        }
    }
    out
}
