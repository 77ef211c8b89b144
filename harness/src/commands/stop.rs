//! `harness stop`: stop services (all by default), dependents first; nothing is left running.

use std::time::Duration;

use harness_protocol::method;
use harness_protocol::wire::{StopParams, StopResult};

use super::{Status, connect, project_name, request_failed};
use crate::output::{Context, print_json, short_duration};

pub fn run(ctx: &Context, services: Vec<String>, force: bool, timeout: Option<Duration>) -> Status {
    let project = match project_name(ctx) {
        Ok(p) => p,
        Err(s) => return s,
    };
    let params = StopParams {
        project,
        services,
        force,
        timeout_ms: timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        remove: false,
    };
    smol::block_on(async {
        let client = match connect(ctx).await {
            Ok(c) => c,
            Err(s) => return s,
        };
        let result: StopResult = match client.call::<method::Stop>(&params).await {
            Ok(r) => r,
            Err(e) => return request_failed("stop", e),
        };
        if ctx.json() {
            print_json(&result);
            return if result.services.iter().any(|s| s.pending.is_some()) {
                Status::Failed
            } else {
                Status::Ok
            };
        }
        if result.services.is_empty() {
            crate::outln!("nothing to stop in project {}", result.project);
        }
        let width = result
            .services
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(0);
        let mut status = Status::Ok;
        for s in &result.services {
            if let Some(why) = &s.pending {
                crate::outln!("✗ {:width$}  not stopped yet: {why}", s.name);
                status = Status::Failed;
                continue;
            }
            let how = if s.killed {
                " (killed after the stop timeout)"
            } else {
                ""
            };
            crate::outln!(
                "✓ {:width$}  stopped in {}{how}",
                s.name,
                short_duration(Duration::from_millis(s.elapsed_ms))
            );
        }
        if status != Status::Ok {
            crate::errln!(
                "some services could not be stopped yet: `harness status` shows them as unknown \
                 until their host answers and the daemon finishes the stop"
            );
        }
        status
    })
}
