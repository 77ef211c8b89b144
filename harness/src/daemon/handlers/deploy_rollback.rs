//! `deploy.rollback`: switch hosts back to the previously active version of a package (or a named
//! retained one), all in parallel, with one `deployment.progress` event per host.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use harness_protocol::WireError;
use harness_protocol::wire::{DeployAction, DeployResult, HostDeployment, RollbackParams};
use harness_server::RequestContext;

use super::deploy::{failed_host, merge_restarts, project_from, restart_services, targets};
use crate::daemon::State;

pub async fn handle(
    state: Arc<State>,
    p: RollbackParams,
    ctx: RequestContext,
) -> Result<DeployResult, WireError> {
    use crate::daemon::operations as ops;
    let op = ops::begin(
        &state,
        &ctx,
        harness_protocol::operation::OperationKind::Rollback,
        Some(p.project.clone()),
        p.hosts.clone(),
        serde_json::json!({ "name": p.name, "hosts": p.hosts, "to": p.to, "root": p.root }),
    )
    .await;
    let result = rollback(&state, p, &ctx, &op).await;
    match &result {
        Ok(r) => ops::finish_hosts(&op, &r.hosts),
        Err(e) => ops::finish(&op, &Err::<(), _>(e.clone())),
    }
    result
}

async fn rollback(
    state: &Arc<State>,
    p: RollbackParams,
    ctx: &RequestContext,
    op: &orchestrator::OperationLog,
) -> Result<DeployResult, WireError> {
    use harness_protocol::operation::{StepKind, StepResult};
    let began = Instant::now();
    let project = project_from(&p.project, &p.yaml, &p.dir).await?;
    let targets = targets(&project, &p.name, &p.hosts)?;
    let root = p
        .root
        .clone()
        .unwrap_or_else(|| packages::DEFAULT_ROOT.to_owned());
    let steps: Vec<orchestrator::StepId> = targets
        .iter()
        .map(|t| {
            op.step(
                StepKind::RollingBack,
                None,
                Some(&t.host),
                Some(p.name.clone()),
            )
        })
        .collect();
    let results = orchestrator::deploy::rollback(
        &state.executor,
        &ctx.store,
        Some(&project.name),
        &targets,
        &root,
        &p.name,
        p.to.as_deref(),
    )
    .await;
    for (step, r) in steps.into_iter().zip(&results) {
        op.end(
            step,
            match r {
                Ok(_) => StepResult::Ok,
                Err(e) => StepResult::Failed {
                    reason: e.to_string(),
                },
            },
        );
    }
    let versions: HashMap<String, String> = targets
        .iter()
        .zip(&results)
        .filter_map(|(t, r)| r.as_ref().ok().map(|rb| (t.host.clone(), rb.to.clone())))
        .collect();
    let mut restarts = restart_services(
        ctx,
        state,
        &project,
        &PathBuf::from(&p.dir),
        p.root.as_deref(),
        &p.name,
        &versions,
    )
    .await;
    let mut hosts: Vec<HostDeployment> = targets
        .iter()
        .zip(results)
        .map(|(t, r)| match r {
            Ok(rb) => HostDeployment {
                host: t.host.clone(),
                package: format!("{}-{}", p.name, rb.to),
                action: DeployAction::RolledBack,
                path: Some(rb.path),
                previous: rb.from,
                bytes_sent: 0,
                error: None,
                restarted: Vec::new(),
            },
            Err(e) => failed_host(&t.host, p.name.clone(), &e),
        })
        .collect();
    merge_restarts(&mut hosts, &mut restarts);
    Ok(DeployResult {
        name: p.name,
        sha256: None,
        hosts,
        elapsed_ms: u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}
