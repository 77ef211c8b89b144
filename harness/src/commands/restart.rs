//! `harness restart`: stop and start services again with their last applied definition.

use harness_protocol::wire::{RestartParams, methods};

use super::{Status, connect, project_name};
use crate::output::Context;

pub fn run(ctx: &Context, services: Vec<String>) -> Status {
    let project = match project_name(ctx) {
        Ok(p) => p,
        Err(s) => return s,
    };
    let params = RestartParams {
        project: project.clone(),
        services,
    };
    let Ok(params) = serde_json::to_value(&params) else {
        return Status::Failed;
    };
    smol::block_on(async {
        let client = match connect(ctx).await {
            Ok(c) => c,
            Err(s) => return s,
        };
        super::start::apply(ctx, &client, methods::RESTART, params, &project).await
    })
}
