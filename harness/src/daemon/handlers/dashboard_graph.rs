//! `dashboard.graph`: an applied project's dependency graph, for the web dashboard (ADR 0039):
//! the start waves and, per service, what it waits for and on which condition.

use std::collections::BTreeMap;
use std::sync::Arc;

use harness_protocol::{ErrorCode, WireError};
use harness_server::RequestContext;
use serde::{Deserialize, Serialize};

use crate::daemon::State;

/// The method's name (answered by the daemon, not part of the typed protocol list).
pub const NAME: &str = "dashboard.graph";

#[derive(Debug, Deserialize)]
pub struct Params {
    pub project: String,
}

#[derive(Debug, Serialize)]
pub struct Graph {
    pub project: String,
    /// Start order: every dependency of a wave is in an earlier wave.
    pub waves: Vec<Vec<String>>,
    /// Service → dependency → `started`, `healthy` or `completed_successfully`.
    pub depends_on: BTreeMap<String, BTreeMap<String, harness_config::Condition>>,
}

pub async fn handle(
    state: Arc<State>,
    p: Params,
    _ctx: RequestContext,
) -> Result<Graph, WireError> {
    let project = state.orch.project(&p.project).ok_or_else(|| {
        WireError::new(
            ErrorCode::NotFound,
            format!("project {:?} is not applied in this daemon", p.project),
        )
    })?;
    let waves = project
        .start_waves()
        .map_err(|e| WireError::new(ErrorCode::Failed, e.to_string()))?;
    let depends_on = project
        .services
        .iter()
        .map(|(name, s)| (name.clone(), s.depends_on.clone()))
        .collect();
    Ok(Graph {
        project: p.project,
        waves,
        depends_on,
    })
}
