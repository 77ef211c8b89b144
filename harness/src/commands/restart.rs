//! `harness restart`: stop and start services again with their last applied definition.

use harness_protocol::method;
use harness_protocol::wire::RestartParams;

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
    smol::block_on(async {
        let client = match connect(ctx).await {
            Ok(c) => c,
            Err(s) => return s,
        };
        super::start::apply::<method::Restart>(ctx, &client, &params, &project).await
    })
}
