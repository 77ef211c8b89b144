//! `drift`: the registry against what runs everywhere (ADR 0036). Read-only.

use std::path::PathBuf;
use std::sync::Arc;

use harness_config::Project;
use harness_protocol::drift::{DriftDefinition, DriftParams, DriftResult};
use harness_protocol::{ErrorCode, WireError};
use harness_server::RequestContext;

use crate::daemon::{State, wire_error};

pub async fn handle(
    state: Arc<State>,
    p: DriftParams,
    _ctx: RequestContext,
) -> Result<DriftResult, WireError> {
    let given = definition(p.definition).await?;
    state.orch.drift(given).await.map_err(wire_error)
}

/// The services file the CLI sent, loaded again with the same loader as `start` does.
pub(crate) async fn definition(
    def: Option<DriftDefinition>,
) -> Result<Option<(Project, Option<PathBuf>)>, WireError> {
    let Some(def) = def else { return Ok(None) };
    let dir = PathBuf::from(&def.dir);
    let path = dir.join("services.yaml");
    let yaml = def.yaml;
    // Everything is substituted already: the daemon's own environment must not leak in.
    let loaded = blocking::unblock(move || {
        harness_config::load_str(&path, yaml, &|_: &str| -> Option<String> { None })
    })
    .await;
    match loaded.project {
        Some(project) if loaded.errors.is_empty() && project.name == def.project => {
            Ok(Some((project, Some(dir))))
        }
        Some(project) if loaded.errors.is_empty() => Err(WireError::new(
            ErrorCode::InvalidParams,
            format!(
                "params name project {:?} but the definition is project {:?}",
                def.project, project.name
            ),
        )),
        _ => {
            let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
            Err(WireError::new(
                ErrorCode::InvalidParams,
                format!("the project definition is invalid: {}", errors.join("; ")),
            ))
        }
    }
}
