//! Deployment driver: ships a [`Package`] to the hosts of a project (or to named hosts) with the
//! `packages` crate, and records progress as `deployment.progress` events in the registry, where the CLI's
//! bars and API subscribers see it.
//!
//! Events are throttled: one per phase change, and during the upload at most one per tenth of the bytes,
//! so a 20 MB upload to three hosts makes a few dozen events, not hundreds. The last event of each host
//! carries the outcome or the error.

mod services;
mod target;

use std::collections::HashMap;
use std::sync::Mutex;

use command_executor::{Executor, Target};
use harness_config::{Project, ServiceKind};
use harness_protocol::EventType;
use harness_store::{NewEvent, Store};

pub use packages::{DeployOptions, Deployed, Outcome, Package, Phase, Progress, RolledBack};
pub use services::{PreparedService, archive_dirs, prepare};
pub use target::{TargetError, host_target};

/// One host to deploy to: its name in messages and events, and how to run commands there (with sudo to
/// root when the hosts entry allows sudo, as installing under /opt needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployTarget {
    pub host: String,
    pub target: Target,
}

/// data of a `deployment.progress` event; the wire type lives in registry.
pub use harness_protocol::event::DeploymentProgress;

/// The hosts that run `type: package` services of package `name`, as deploy targets.
pub fn package_targets(project: &Project, name: &str) -> Result<Vec<DeployTarget>, TargetError> {
    let mut hosts: Vec<&String> = project
        .services
        .values()
        .filter(|s| s.kind == ServiceKind::Package && s.package.as_deref() == Some(name))
        .filter_map(|s| s.host.as_ref())
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
        .into_iter()
        .map(|h| named_target(project, h))
        .collect()
}

/// Deploy targets for hosts named on the command line (`--host h1,h2`).
pub fn named_targets(
    project: &Project,
    hosts: &[String],
) -> Result<Vec<DeployTarget>, TargetError> {
    hosts.iter().map(|h| named_target(project, h)).collect()
}

fn named_target(project: &Project, host: &str) -> Result<DeployTarget, TargetError> {
    Ok(DeployTarget {
        host: host.to_owned(),
        target: host_target(project, host)?,
    })
}

/// Deploys to every target in parallel. `on_progress` sees every report (for a local bar); the registry
/// gets the throttled events. One result per target, in order.
pub async fn deploy(
    exec: &Executor,
    store: &Store,
    project: Option<&str>,
    pkg: &Package,
    targets: &[DeployTarget],
    options: &DeployOptions,
    on_progress: &(dyn Fn(&Progress) + Sync),
) -> Vec<Result<Deployed, packages::Error>> {
    let (tx, rx) = async_channel::unbounded::<DeploymentProgress>();
    let throttle = Mutex::new(HashMap::<String, (Phase, u64)>::new());
    let forward = |p: Progress| {
        on_progress(&p);
        let mut last = throttle.lock().unwrap_or_else(|e| e.into_inner());
        let step = (p.total / 10).max(1);
        let send = match last.get(&p.host) {
            Some((phase, bytes)) => {
                *phase != p.phase || p.bytes >= bytes + step || p.bytes == p.total
            }
            None => true,
        };
        if send && p.phase != Phase::Done {
            last.insert(p.host.clone(), (p.phase, p.bytes));
            let _ = tx.try_send(DeploymentProgress {
                host: p.host,
                package: p.package,
                phase: p.phase.as_str().to_owned(),
                bytes: p.bytes,
                total: p.total,
                outcome: None,
                error: None,
            });
        }
    };
    let work = async {
        let plain: Vec<Target> = targets.iter().map(|t| t.target.clone()).collect();
        let results = packages::deploy_all(exec, &plain, pkg, options, &forward).await;
        for (t, r) in targets.iter().zip(&results) {
            let (phase, outcome, error) = match r {
                Ok(d) => ("done", Some(outcome_name(d.outcome).to_owned()), None),
                Err(e) => ("failed", None, Some(e.to_string())),
            };
            let _ = tx.try_send(DeploymentProgress {
                host: t.host.clone(),
                package: pkg.id(),
                phase: phase.to_owned(),
                bytes: r.as_ref().map(|d| d.bytes_sent).unwrap_or(0),
                total: 0,
                outcome,
                error,
            });
        }
        tx.close();
        results
    };
    let (results, ()) = futures_lite::future::zip(work, emit_all(store, project, rx)).await;
    results
}

/// Rolls back `name` on every target in parallel (see [`packages::rollback`]) and records one event per
/// host. Restarting the services is the caller's next step.
pub async fn rollback(
    exec: &Executor,
    store: &Store,
    project: Option<&str>,
    targets: &[DeployTarget],
    root: &str,
    name: &str,
    to: Option<&str>,
) -> Vec<Result<RolledBack, packages::Error>> {
    let tasks: Vec<smol::Task<Result<RolledBack, packages::Error>>> = targets
        .iter()
        .map(|t| {
            let (exec, target) = (exec.clone(), t.target.clone());
            let (root, name, to) = (root.to_owned(), name.to_owned(), to.map(str::to_owned));
            smol::spawn(async move {
                packages::rollback(&exec, &target, &root, &name, to.as_deref()).await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        results.push(t.await);
    }
    let events = targets
        .iter()
        .zip(&results)
        .map(|(t, r)| {
            let data = DeploymentProgress {
                host: t.host.clone(),
                package: match r {
                    Ok(rb) => format!("{name}-{}", rb.to),
                    Err(_) => name.to_owned(),
                },
                phase: if r.is_ok() { "rolled_back" } else { "failed" }.to_owned(),
                bytes: 0,
                total: 0,
                outcome: None,
                error: r.as_ref().err().map(ToString::to_string),
            };
            event(project, &data)
        })
        .collect();
    if let Err(e) = store.emit(events).await {
        tracing::warn!("recording rollback events: {e}");
    }
    results
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Installed => "installed",
        Outcome::Activated => "activated",
        Outcome::Unchanged => "unchanged",
    }
}

fn event(project: Option<&str>, data: &DeploymentProgress) -> NewEvent {
    NewEvent {
        kind: EventType::DeploymentProgress,
        project: project.map(str::to_owned),
        service: None,
        data: serde_json::to_value(data).unwrap_or_default(),
    }
}

/// Writes events as they come, batching whatever queued up meanwhile into one store write.
async fn emit_all(
    store: &Store,
    project: Option<&str>,
    rx: async_channel::Receiver<DeploymentProgress>,
) {
    while let Ok(first) = rx.recv().await {
        let mut batch = vec![event(project, &first)];
        while let Ok(more) = rx.try_recv() {
            batch.push(event(project, &more));
        }
        if let Err(e) = store.emit(batch).await {
            tracing::warn!("recording deployment progress: {e}");
        }
    }
}

#[cfg(test)]
mod tests;
