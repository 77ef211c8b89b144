//! `harness watch [svc…]`: the daemon watches the services' files from now on (until the project
//! is stopped); a change restarts the service, and is a `service.watch` event.

use harness_protocol::method;
use harness_protocol::wire::{WatchParams, WatchResult};

use super::{Status, connect, project_name, request_failed};
use crate::output::{Context, print_json};

pub fn run(ctx: &Context, services: Vec<String>) -> Status {
    let project = match project_name(ctx) {
        Ok(p) => p,
        Err(s) => return s,
    };
    let params = WatchParams { project, services };
    smol::block_on(async {
        let client = match connect(ctx).await {
            Ok(c) => c,
            Err(s) => return s,
        };
        let r: WatchResult = match client.call::<method::Watch>(&params).await {
            Ok(r) => r,
            Err(e) => return request_failed("watch", e),
        };
        if ctx.json() {
            print_json(&r);
            return Status::Ok;
        }
        for s in &r.services {
            let on_change = if s.action == "restart" {
                "restart on change"
            } else {
                "record changes"
            };
            crate::outln!("watching {}: {} ({on_change})", s.name, s.paths.join(", "));
        }
        Status::Ok
    })
}
