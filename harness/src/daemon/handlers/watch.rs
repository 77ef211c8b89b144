//! `watch`: watch services' files; a change restarts the service (orchestrator::watch).

use std::sync::Arc;

use harness_protocol::WireError;
use harness_protocol::wire::{WatchParams, WatchResult, WatchedService};
use harness_server::RequestContext;

use crate::daemon::{State, wire_error};

pub async fn handle(
    state: Arc<State>,
    p: WatchParams,
    _ctx: RequestContext,
) -> Result<WatchResult, WireError> {
    state.watch(&p.project, &p.services).await
}

impl State {
    /// Watches `services` of `project` (those with `watch:` when empty), replacing the project's
    /// earlier watch.
    pub async fn watch(
        &self,
        project: &str,
        services: &[String],
    ) -> Result<WatchResult, WireError> {
        let watching = self
            .orch
            .watch(project, services)
            .await
            .map_err(wire_error)?;
        let result = WatchResult {
            project: project.to_owned(),
            services: watching
                .services
                .iter()
                .map(|s| WatchedService {
                    name: s.name.clone(),
                    paths: s.paths.iter().map(|p| p.display().to_string()).collect(),
                    action: match s.action {
                        harness_config::WatchAction::Restart => "restart".into(),
                        harness_config::WatchAction::None => "none".into(),
                    },
                })
                .collect(),
        };
        if let Ok(mut w) = self.watches.lock() {
            w.insert(project.to_owned(), watching);
        }
        Ok(result)
    }

    /// Stops watching `project`.
    pub fn unwatch(&self, project: &str) {
        let gone = self.watches.lock().ok().and_then(|mut w| w.remove(project));
        drop(gone);
    }
}
