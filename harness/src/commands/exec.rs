//! `harness exec SERVICE -- CMD...`: run a command in a service's context; its exit code is ours.

use std::io::Write;

use harness_protocol::method;
use harness_protocol::wire::{ExecParams, ExecResult};

use super::{Status, connect, project_name, request_failed};
use crate::output::{Context, print_json};

pub fn run(ctx: &Context, service: &str, command: Vec<String>) -> u8 {
    let project = match project_name(ctx) {
        Ok(p) => p,
        Err(s) => return s as u8,
    };
    let params = ExecParams {
        project,
        service: service.to_owned(),
        command,
    };
    smol::block_on(async {
        let client = match connect(ctx).await {
            Ok(c) => c,
            Err(s) => return s as u8,
        };
        let result: ExecResult = match client.call::<method::Exec>(&params).await {
            Ok(r) => r,
            Err(e) => return request_failed("exec", e) as u8,
        };
        if ctx.json() {
            print_json(&result);
        } else {
            let _ = std::io::stdout().write_all(result.stdout.as_bytes());
            let _ = std::io::stderr().write_all(result.stderr.as_bytes());
        }
        match (result.code, result.signal) {
            (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
            (None, Some(sig)) => u8::try_from((128 + sig) & 0xff).unwrap_or(1),
            (None, None) => Status::Failed as u8,
        }
    })
}
