//! `start`: apply a project the CLI validated. The YAML is loaded again here with the same loader,
//! so the daemon runs exactly what was validated and never trusts a half-parsed definition.

use std::path::PathBuf;
use std::sync::Arc;

use harness_protocol::operation::OperationKind;
use harness_protocol::wire::{
    ApplyResult, ScaleRequest, ServiceAction, ServiceOutcome, StartParams,
};
use harness_protocol::{ErrorCode, WireError};
use harness_server::RequestContext;
use orchestrator::{ApplyOptions, StopOptions};

use crate::daemon::{State, wire_error};

pub async fn handle(
    state: Arc<State>,
    mut p: StartParams,
    ctx: RequestContext,
) -> Result<ApplyResult, WireError> {
    // `harness scale` is a `scale` operation: the services it changes, from N to M instances.
    let (kind, subjects) = match &p.scale {
        Some(scale) => (
            OperationKind::Scale,
            scale.changes.iter().map(|c| c.service.clone()).collect(),
        ),
        None => (OperationKind::Start, p.services.clone()),
    };
    let mut params = serde_json::json!({
        "dir": p.dir,
        "services": p.services,
        "remove_orphans": p.remove_orphans,
    });
    if let Some(scale) = &p.scale {
        params["scale"] = serde_json::json!(scale);
    }
    // The definition is loaded while the operation is recorded (its commit's sync).
    let path = PathBuf::from(&p.dir).join("services.yaml");
    let yaml = std::mem::take(&mut p.yaml);
    // Everything is substituted already: the daemon's own environment must not leak in.
    let loading = blocking::unblock(move || {
        harness_config::load_str(&path, yaml, &|_: &str| -> Option<String> { None })
    });
    let op = crate::daemon::operations::begin(
        &state,
        &ctx,
        kind,
        Some(p.project.clone()),
        subjects,
        params,
    )
    .await;
    let result = start(&state, p, loading, &ctx, &op).await;
    if let Err(e) = &result {
        crate::daemon::operations::finish(&op, &Err::<(), _>(e.clone()));
    }
    result
}

async fn start(
    state: &Arc<State>,
    mut p: StartParams,
    loading: blocking::Task<harness_config::Loaded>,
    ctx: &RequestContext,
    op: &orchestrator::OperationLog,
) -> Result<ApplyResult, WireError> {
    let dir = PathBuf::from(&p.dir);
    let loaded = loading.await;
    tracing::debug!(project = %p.project, "start: definition loaded");
    let project = match loaded.project {
        Some(project) if loaded.errors.is_empty() => project,
        _ => {
            let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
            return Err(WireError::new(
                ErrorCode::InvalidParams,
                format!("the project definition is invalid: {}", errors.join("; ")),
            ));
        }
    };
    if project.name != p.project {
        return Err(WireError::new(
            ErrorCode::InvalidParams,
            format!(
                "params name project {:?} but the definition is project {:?}",
                p.project, project.name
            ),
        ));
    }
    // A scale stops the surplus instances first, one at a time, and forgets them. The services
    // that use them are stopped with them (a forced stop), and started again below with the new
    // list of instances: they are reported as restarted, never as removed.
    let mut removed = Vec::new();
    let mut dependents: Vec<Dependent> = Vec::new();
    let scale = p.scale.clone();
    if let Some(scale) = &scale {
        for name in &scale.stop {
            let opts = StopOptions {
                services: vec![name.clone()],
                force: true,
                timeout: None,
                remove: true,
                operation: Some(op.clone()),
            };
            let began = std::time::Instant::now();
            let report = state
                .orch
                .stop(&project.name, opts)
                .await
                .map_err(wire_error)?;
            for s in report.services {
                let surplus = scale.stop.contains(&s.name);
                if !surplus && s.pending.is_none() {
                    if !dependents.iter().any(|d| d.name == s.name) {
                        dependents.push(Dependent {
                            name: s.name,
                            uses: name.clone(),
                        });
                    }
                    continue;
                }
                removed.push(ServiceOutcome {
                    name: s.name,
                    action: ServiceAction::Removed,
                    // A stop that is pending (its host does not answer) leaves it as it was.
                    state: if s.pending.is_some() {
                        s.was
                    } else {
                        harness_protocol::ServiceState::Stopped
                    },
                    pid: None,
                    elapsed_ms: super::millis(began.elapsed()),
                    error: s.pending,
                    last_lines: Vec::new(),
                    note: None,
                });
            }
        }
        // The stopped users of the instances start again with the new definition (with an
        // empty `${web.endpoints}` when web went to 0, as Compose leaves them running).
        for d in &dependents {
            if project.services.contains_key(&d.name) && !p.services.contains(&d.name) {
                p.services.push(d.name.clone());
            }
        }
        if p.services.is_empty() {
            // Scaled down only: nothing to apply.
            op.finish(harness_protocol::operation::OperationOutcome::Succeeded);
            return Ok(ApplyResult {
                project: project.name,
                services: removed,
            });
        }
    }
    within_fd_budget(state, &project, &p.services).await?;
    // `type: package` services become the remote processes they are (deployed first if missing).
    let project =
        super::deploy::prepare_packages(ctx, state, &project, &dir, None, &Default::default())
            .await?;
    let opts = ApplyOptions {
        services: p.services,
        remove_orphans: p.remove_orphans,
        base_dir: Some(dir),
        operation: Some(op.clone()),
    };
    // The proxy first, so that requests during the start get `503 Retry-After`, not a refusal.
    state
        .proxy
        .ensure(&project)
        .await
        .map_err(|e| WireError::new(ErrorCode::Failed, e))?;
    // An `ops.cancel` of `op` ends the waits of this apply (the orchestrator watches `op`).
    let report = state.orch.apply(&project, opts).await;
    if let Some(req) = op.cancel_requested() {
        return Err(crate::daemon::operations::cancelled(state, op, &project.name, req).await);
    }
    crate::daemon::operations::finish_apply(op, &report);
    let report = report.map_err(wire_error)?;
    let mut result = super::apply_result(report);
    if let Some(scale) = &scale {
        dependents_restarted(&mut result, &dependents, scale);
    }
    result.services.splice(0..0, removed);
    // Services with `watch:` are watched from their start on.
    if project.services.values().any(|s| s.watch.is_some())
        && let Err(e) = state.watch(&project.name, &[]).await
    {
        tracing::warn!(project = %project.name, error = %e.message, "watch");
    }
    Ok(result)
}

/// A service a scale stopped because it uses a surplus instance (`uses`).
struct Dependent {
    name: String,
    uses: String,
}

/// The users of the surplus instances were stopped and started again: `restarted`, with a note
/// saying why; one that did not come back is `failed` (never `removed`: it is still defined).
fn dependents_restarted(result: &mut ApplyResult, dependents: &[Dependent], scale: &ScaleRequest) {
    for d in dependents {
        // The service the instance belongs to, and its new count.
        let change = scale.changes.iter().find(|c| {
            d.uses == c.service
                || d.uses
                    .strip_prefix(c.service.as_str())
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|i| i.parse::<u32>().is_ok())
        });
        let note = match change {
            Some(c) if c.to == 0 => format!(
                "uses {}, now 0 instances: started again with an empty `${{{}.endpoints}}`; \
                 `harness scale {}=N` gives it instances again",
                c.service, c.service, c.service
            ),
            Some(c) => format!(
                "uses {}, now {} instances: started again with the new list",
                c.service, c.to
            ),
            None => format!("uses {}: started again", d.uses),
        };
        match result.services.iter_mut().find(|s| s.name == d.name) {
            Some(s) => {
                if s.action == ServiceAction::Started {
                    s.action = ServiceAction::Restarted;
                }
                s.note = Some(note);
            }
            None => result.services.push(ServiceOutcome {
                name: d.name.clone(),
                action: ServiceAction::Failed,
                state: harness_protocol::ServiceState::Stopped,
                pid: None,
                elapsed_ms: 0,
                error: Some(format!(
                    "stopped by the scale ({note}) but not started again"
                )),
                last_lines: Vec::new(),
                note: None,
            }),
        }
    }
}

/// Refuses a start that would run more services than the daemon's open-file limit allows
/// (see `daemon::fds`), instead of failing launches and accepts with "Too many open files".
async fn within_fd_budget(
    state: &State,
    project: &harness_config::Project,
    selected: &[String],
) -> Result<(), WireError> {
    use harness_protocol::ServiceState as S;
    let starting = crate::daemon::fds::started_by(project, selected);
    let all = state.orch.status(None).await.map_err(wire_error)?;
    let active = |s: &harness_protocol::ServiceEntry| {
        matches!(s.state, S::Pending | S::Starting | S::Running | S::Stopping)
    };
    let already = all.iter().filter(|s| active(s)).count();
    let others = all
        .iter()
        .filter(|s| active(s) && !(s.project == project.name && starting.contains(&s.name)))
        .count();
    state
        .fds
        .check(others + starting.len(), already)
        .map_err(|m| WireError::new(ErrorCode::LimitExceeded, m))
}
