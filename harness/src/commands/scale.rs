//! `harness scale web=3`: run N instances of a service (`web-1..web-3`). Scaling down stops the
//! highest-numbered instances first, one at a time, then applies the project with the new
//! count, which restarts the consumers whose `${web.endpoints}` changed.

use std::collections::BTreeMap;

use harness_protocol::method;
use harness_protocol::wire::{StatusParams, StatusResult, StopParams, StopResult};

use super::{Status, connect, load_options, load_project_with, request_failed};
use crate::output::Context;

pub fn run(ctx: &Context, targets: Vec<String>) -> Status {
    let mut counts = BTreeMap::new();
    for t in &targets {
        let parsed = t
            .split_once('=')
            .and_then(|(name, n)| Some((name.to_owned(), n.trim().parse::<u32>().ok()?)));
        match parsed {
            Some((name, n)) if n <= harness_config::MAX_REPLICAS => {
                counts.insert(name, n);
            }
            Some((name, n)) => {
                crate::errln!(
                    "error: {name}={n}: a service may have at most {} instances",
                    harness_config::MAX_REPLICAS
                );
                return Status::Invalid;
            }
            None => {
                crate::errln!("error: {t:?} is not SERVICE=N (e.g. web=3)");
                return Status::Invalid;
            }
        }
    }
    let mut options = load_options(ctx);
    options.replicas = counts.clone();
    let project = match load_project_with(ctx, &options) {
        Ok(p) => p,
        Err(s) => return s,
    };
    let running: Vec<String> = match smol::block_on(async {
        let client = connect(ctx).await?;
        let params = StatusParams {
            project: Some(project.name.clone()),
        };
        let status: StatusResult = client
            .call::<method::Status>(&params)
            .await
            .map_err(|e| request_failed("status", e))?;
        Ok::<_, Status>(status.services.into_iter().map(|s| s.name).collect())
    }) {
        Ok(names) => names,
        Err(s) => return s,
    };
    // Instances beyond the new count (and the unnumbered service), highest number first.
    let mut surplus: Vec<(u32, String)> = Vec::new();
    for (service, n) in &counts {
        for name in &running {
            let index = if name == service {
                Some(0)
            } else {
                name.strip_prefix(service.as_str())
                    .and_then(|rest| rest.strip_prefix('-'))
                    .and_then(|i| i.parse::<u32>().ok())
                    .filter(|i| i > n)
            };
            if let Some(i) = index {
                surplus.push((i, name.clone()));
            }
        }
    }
    surplus.sort_by(|a, b| b.cmp(a));
    if !surplus.is_empty() {
        let stopped = smol::block_on(async {
            let client = connect(ctx).await?;
            for (_, name) in &surplus {
                let params = StopParams {
                    project: project.name.clone(),
                    services: vec![name.clone()],
                    force: true,
                    timeout_ms: None,
                    // No longer in the project: forgotten, as `down` does.
                    remove: true,
                };
                let result: StopResult = client
                    .call::<method::Stop>(&params)
                    .await
                    .map_err(|e| request_failed("stop", e))?;
                for s in &result.services {
                    crate::errln!("✓ {} stopped", s.name);
                }
            }
            Ok::<_, Status>(())
        });
        if let Err(s) = stopped {
            return s;
        }
    }
    let instances: Vec<String> = project
        .services
        .keys()
        .filter(|name| {
            counts.keys().any(|service| {
                name.strip_prefix(service.as_str())
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|i| i.parse::<u32>().is_ok())
            })
        })
        .cloned()
        .collect();
    // The instances, and the services that use them: those pick up their new endpoints.
    let mut selected: Vec<String> = project
        .services
        .iter()
        .filter(|(name, s)| {
            instances.contains(name) || s.depends_on.keys().any(|d| instances.contains(d))
        })
        .map(|(name, _)| name.clone())
        .collect();
    selected.sort();
    if selected.is_empty() {
        // Scaled to 0: stopping was all there was to do.
        return Status::Ok;
    }
    super::start::start_project(ctx, &project, selected, false)
}
