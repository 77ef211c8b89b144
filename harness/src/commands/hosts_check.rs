//! `harness hosts check`: for every host of the services file — reachable, authenticated,
//! `sudo -n` works, docker reachable (and as whom), latency — with a hint for each failure.
//!
//! The daemon runs the checks (`hosts.check`, `orchestrator::hosts`; the dashboard's hosts view
//! shows the same): the CLI sends the services file it read, as `drift -f` does, so the hosts
//! checked are the file's whether or not the project is applied. The daemon uses ssh connections
//! of its own for it (a private runtime dir, closed at the end, ADR 0004): its other connections,
//! and the `exec`s and log followers running on them, are left alone.

use harness_protocol::method;
use harness_protocol::places::{HostReport, HostsCheckParams};

use super::{Status, connect, load_project, request_failed};
use crate::output::{Context, print_json};

pub fn run(ctx: &Context) -> Status {
    let project = match load_project(ctx) {
        Ok(p) => p,
        Err(s) => return s,
    };
    if project.hosts.is_empty() {
        if ctx.json() {
            print_json(&Vec::<HostReport>::new());
        } else {
            crate::outln!("no hosts in {}", ctx.file.display());
        }
        return Status::Ok;
    }
    let definition = match super::drift::definition_of(ctx, &project) {
        Ok(d) => d,
        Err(s) => return s,
    };
    let reports = match smol::block_on(async {
        let client = connect(ctx).await?;
        client
            .call::<method::HostsCheck>(&HostsCheckParams {
                project: None,
                definition: Some(definition),
            })
            .await
            .map_err(|e| request_failed("hosts.check", e))
    }) {
        Ok(r) => r.hosts,
        Err(s) => return s,
    };
    let ok = reports.iter().all(|r| r.ok);
    if ctx.json() {
        print_json(&reports);
    } else {
        print_table(&reports);
    }
    if ok { Status::Ok } else { Status::Failed }
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    }
}

fn print_table(reports: &[HostReport]) {
    let mut table = crate::output::table(true);
    table.set_header([
        "host",
        "address",
        "reachable",
        "authenticated",
        "sudo -n",
        "docker",
        "latency",
    ]);
    for r in reports {
        let docker = match &r.docker {
            Some(d) if d.reachable => format!(
                "yes, as {} ({})",
                d.as_user.as_deref().unwrap_or("?"),
                d.server_version.as_deref().unwrap_or("?")
            ),
            Some(_) => "no".into(),
            None => "-".into(),
        };
        table.add_row([
            r.host.clone(),
            format!("{}:{}", r.address, r.port),
            yes_no(Some(r.reachable)).into(),
            yes_no(r.reachable.then_some(r.authenticated)).into(),
            yes_no(r.sudo).into(),
            docker,
            r.latency_ms.map_or("-".into(), |l| format!("{l} ms")),
        ]);
    }
    crate::outln!("{table}");
    for r in reports {
        for p in &r.problems {
            crate::outln!(
                "{}: {} failed: {}\n  hint: {}",
                r.host,
                p.check,
                p.error,
                p.hint
            );
        }
    }
}
