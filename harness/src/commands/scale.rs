//! `harness scale web=3`: run N instances of a service (`web-1..web-3`). Scaling down stops the
//! highest-numbered instances first, one at a time, then applies the project with the new
//! count, which restarts the consumers whose `${web.endpoints}` changed. It is one `start` request
//! carrying the change, which the daemon records as a `scale` operation (ADR 0035).

use std::collections::BTreeMap;

use harness_protocol::method;
use harness_protocol::wire::{ScaleChange, ScaleRequest, StatusParams, StatusResult};

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
    // The instances registered now, per service (the unnumbered service counts as one), and
    // those beyond the new count (and the unnumbered service), highest number first.
    let mut changes = Vec::new();
    let mut surplus: Vec<(u32, String)> = Vec::new();
    for (service, n) in &counts {
        let mut from = 0;
        for name in &running {
            let index = if name == service {
                Some(0)
            } else {
                name.strip_prefix(service.as_str())
                    .and_then(|rest| rest.strip_prefix('-'))
                    .and_then(|i| i.parse::<u32>().ok())
            };
            let Some(i) = index else { continue };
            from += 1;
            if i == 0 || i > *n {
                surplus.push((i, name.clone()));
            }
        }
        changes.push(ScaleChange {
            service: service.clone(),
            from,
            to: *n,
        });
    }
    surplus.sort_by(|a, b| b.cmp(a));
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
    // One `start` the daemon records as a `scale` operation: it stops the surplus first, then
    // applies `selected` (nothing when everything was scaled to 0).
    let scale = ScaleRequest {
        changes,
        stop: surplus.into_iter().map(|(_, name)| name).collect(),
    };
    super::start::start_project_with(ctx, &project, selected, false, Some(scale))
}
