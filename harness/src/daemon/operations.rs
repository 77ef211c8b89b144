//! The daemon's side of operations (ADR 0035): who asked (from the request), how an apply's
//! report becomes an outcome, and how `ops.cancel` reaches a start or restart under way.

use harness_protocol::operation::{OperationKind, OperationOutcome, Requester};
use harness_protocol::{ErrorCode, WireError};
use harness_server::RequestContext;
use orchestrator::{ApplyReport, CancelRequest, OperationLog, StopOptions};
use serde_json::Value;

use super::State;

/// Begins an operation for the request `ctx`.
pub(crate) async fn begin(
    state: &State,
    ctx: &RequestContext,
    kind: OperationKind,
    project: Option<String>,
    services: Vec<String>,
    params: Value,
) -> OperationLog {
    let requester = Requester {
        peer: Some(ctx.peer.to_string()),
        client: ctx.client.as_deref().map(str::to_owned),
        // The token's name (`owner` for the daemon's own token): who acted (ADR 0037).
        token: Some(ctx.token.clone()),
    };
    state
        .ops
        .begin(kind, project, services, requester, params)
        .await
}

/// Ends `op` from what an apply (start, restart) answered.
pub(crate) fn finish_apply(op: &OperationLog, report: &Result<ApplyReport, orchestrator::Error>) {
    op.finish(match report {
        Ok(r) => {
            let failed: Vec<String> = r
                .failures()
                .map(|s| format!("{}: {}", s.name, s.error.as_deref().unwrap_or("failed")))
                .collect();
            if failed.is_empty() {
                OperationOutcome::Succeeded
            } else {
                OperationOutcome::Failed {
                    reason: failed.join("; "),
                }
            }
        }
        Err(e) => OperationOutcome::Failed {
            reason: e.to_string(),
        },
    });
}

/// Ends `op` from any other result.
pub(crate) fn finish<T>(op: &OperationLog, result: &Result<T, WireError>) {
    op.finish(match result {
        Ok(_) => OperationOutcome::Succeeded,
        Err(e) => OperationOutcome::Failed {
            reason: e.message.clone(),
        },
    });
}

/// After a start or restart of `project` was cancelled: with `rollback`, stops what `op`
/// launched; ends `op` as cancelled and gives the error its client gets.
pub(crate) async fn cancelled(
    state: &State,
    op: &OperationLog,
    project: &str,
    req: CancelRequest,
) -> WireError {
    let id = op.id();
    let mut reason = format!("cancelled by `harness ops cancel {id}`");
    if req.rollback {
        let started = op.spawned();
        if !started.is_empty() {
            let opts = StopOptions {
                services: started.clone(),
                force: true,
                operation: Some(op.clone()),
                ..StopOptions::default()
            };
            match state.orch.stop(project, opts).await {
                Ok(_) => reason.push_str(&format!("; stopped {}", started.join(", "))),
                Err(e) => reason.push_str(&format!("; stopping {}: {e}", started.join(", "))),
            }
        }
    } else {
        reason.push_str("; what runs keeps running");
    }
    op.finish(OperationOutcome::Cancelled {
        reason: reason.clone(),
        rollback: req.rollback,
    });
    WireError {
        code: ErrorCode::Cancelled,
        message: format!("operation {id} was {reason}"),
        data: Some(serde_json::json!({ "operation": id })),
    }
}

/// A deployment's phases per host as steps of its operation: each phase change ends the host's
/// step and begins the next.
pub(crate) struct DeploySteps {
    op: OperationLog,
    current:
        std::sync::Mutex<std::collections::HashMap<String, (&'static str, orchestrator::StepId)>>,
}

impl DeploySteps {
    pub(crate) fn new(op: &OperationLog) -> Self {
        DeploySteps {
            op: op.clone(),
            current: Default::default(),
        }
    }

    /// A progress report of host `host` in phase `phase` of `package`.
    pub(crate) fn progress(&self, host: &str, package: &str, phase: orchestrator::deploy::Phase) {
        use harness_protocol::operation::{StepKind, StepResult};
        use orchestrator::deploy::Phase;
        let kind = match phase {
            Phase::Checking => StepKind::Checking,
            Phase::Uploading => StepKind::Uploading,
            Phase::Verifying => StepKind::Verifying,
            Phase::Extracting | Phase::Setup | Phase::Ready => StepKind::Installing,
            Phase::Activating => StepKind::Activating,
            Phase::Done => {
                self.end(host, StepResult::Ok);
                return;
            }
        };
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.get(host).is_some_and(|(k, _)| *k == kind.as_str()) {
            return;
        }
        if let Some((_, step)) = current.remove(host) {
            self.op.end(step, StepResult::Ok);
        }
        let step = self
            .op
            .step(kind, None, Some(host), Some(package.to_owned()));
        current.insert(host.to_owned(), (kind.as_str(), step));
    }

    /// Ends the step under way on `host`.
    pub(crate) fn end(&self, host: &str, result: harness_protocol::operation::StepResult) {
        let step = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(host);
        if let Some((_, step)) = step {
            self.op.end(step, result);
        }
    }
}

/// Ends a deployment's (or rollback's) operation from its hosts: failed when any host failed.
pub(crate) fn finish_hosts(op: &OperationLog, hosts: &[harness_protocol::wire::HostDeployment]) {
    let failed: Vec<String> = hosts
        .iter()
        .filter_map(|h| h.error.as_ref().map(|e| format!("{}: {e}", h.host)))
        .collect();
    finish_unless(op, &failed);
}

/// Ends `op` as succeeded, or failed naming each of `failures` (parts that did not succeed).
pub(crate) fn finish_unless(op: &OperationLog, failures: &[String]) {
    op.finish(if failures.is_empty() {
        OperationOutcome::Succeeded
    } else {
        OperationOutcome::Failed {
            reason: failures.join("; "),
        }
    });
}
