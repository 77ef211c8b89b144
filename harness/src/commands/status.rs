//! `harness status` (`ps`): what runs. The project of `-p`, `-f` or ./services.yaml; every
//! project with `--all` or when there is no services file.

use std::time::Duration;

use comfy_table::{Cell, Color, Table};
use harness_protocol::method;
use harness_protocol::wire::{StatusParams, StatusResult};
use harness_protocol::{Client, HealthStatus, Location, ServiceEntry, ServiceState};

use super::{Status, connect_prepared, load_project, prepare, request_failed};
use crate::output::{Context, print_json, short_duration};

pub fn run(ctx: &Context, watch: bool, all: bool) -> Status {
    let project = match (&ctx.project, ctx.file_given) {
        _ if all => None,
        (Some(p), _) => Some(p.clone()),
        (None, true) => match load_project(ctx) {
            Ok(p) => Some(p.name),
            Err(s) => return s,
        },
        // ./services.yaml names the project; a broken one does not hide the others.
        (None, false) if ctx.file.is_file() => match harness_config::load(&ctx.file).project {
            Some(p) => Some(p.name),
            None => {
                crate::errln!(
                    "warning: {} is not valid; showing every project",
                    ctx.file.display()
                );
                None
            }
        },
        (None, false) => None,
    };
    // One thread: the files are read before connecting, and a local daemon that answers at once
    // is asked on a blocking connection (no executor, no reactor thread; ADR 0045). Otherwise
    // (a remote daemon, none running, `--watch`) the connection is read on this thread
    // (harness_protocol::client::block_on), so no reply crosses threads.
    let prepared = match prepare(ctx) {
        Ok(p) => p,
        Err(s) => return s,
    };
    if !watch && let Some(mut conn) = prepared.connect_oneshot() {
        match conn.call::<method::Status>(&params(&project)) {
            Ok(result) => return render(ctx, result, &project, false),
            Err(e) if conn.upgraded() => return request_failed("status", e),
            // Refused at the upgrade (sent with the request): the path below reports it.
            Err(_) => {}
        }
    }
    harness_protocol::client::block_on(async {
        let client = match connect_prepared(prepared).await {
            Ok(c) => c,
            Err(s) => return s,
        };
        if !watch {
            return show(ctx, &client, &project, false).await;
        }
        loop {
            let status = show(ctx, &client, &project, true).await;
            if status != Status::Ok {
                return status;
            }
            smol::Timer::after(Duration::from_secs(1)).await;
        }
    })
}

fn params(project: &Option<String>) -> StatusParams {
    StatusParams {
        project: project.clone(),
    }
}

async fn show(ctx: &Context, client: &Client, project: &Option<String>, watch: bool) -> Status {
    match client.call::<method::Status>(&params(project)).await {
        Ok(result) => render(ctx, result, project, watch),
        Err(e) => request_failed("status", e),
    }
}

/// Prints one answer; `watch` clears the screen first, and means this process goes on.
fn render(ctx: &Context, result: StatusResult, project: &Option<String>, watch: bool) -> Status {
    if ctx.json() {
        if result.resources.is_empty() {
            print_json(&result.services);
        } else {
            print_json(&with_resources(&result));
        }
        return Status::Ok;
    }
    if watch && ctx.color_out {
        crate::out!("\x1b[2J\x1b[H");
    }
    if result.services.is_empty() {
        match project {
            Some(p) => {
                crate::outln!("no services of project {p} (start them with `harness start`)")
            }
            None => crate::outln!("no services (start some with `harness start`)"),
        }
        return Status::Ok;
    }
    let table = table(ctx, &result.services);
    crate::outln!("{table}");
    // A process that exits next does not free the table's cells one by one (0.5 M instructions
    // for 100 services, as for clap's command tree in main.rs).
    if !watch {
        std::mem::forget(table);
    }
    Status::Ok
}

fn table(ctx: &Context, services: &[ServiceEntry]) -> Table {
    let many = services.iter().any(|s| s.project != services[0].project);
    let mut table = crate::output::table(ctx.color_out);
    let mut header = vec![];
    if many {
        header.push("project");
    }
    header.extend([
        "service",
        "state",
        "pid",
        "host",
        "endpoints",
        "health",
        "restarts",
        "uptime",
    ]);
    table.set_header(header);
    let now = jiff::Timestamp::now();
    for s in services {
        let mut row = vec![];
        if many {
            row.push(Cell::new(&s.project));
        }
        let mut state = Cell::new(s.state.to_string());
        if ctx.color_out {
            state = state.fg(match s.state {
                ServiceState::Running => Color::Green,
                ServiceState::Failed { .. } | ServiceState::Exited { .. } => Color::Red,
                ServiceState::Stopped => Color::DarkGrey,
                _ => Color::Yellow,
            });
        }
        let active = s.state.is_active();
        let pid = match (active, s.runtime.pid) {
            (true, Some(pid)) => pid.to_string(),
            _ => "-".into(),
        };
        let host = match &s.location {
            Location::Local => "local".to_owned(),
            Location::Host { name, .. } => name.clone(),
            Location::Container { name, engine, .. } => format!("{name} ({engine})"),
        };
        let endpoints: Vec<String> = s
            .endpoints
            .iter()
            .map(|e| format!("{}={}:{}", e.name, e.ip, e.port))
            .collect();
        let health = match (active, s.health.status) {
            (false, _) | (_, HealthStatus::Unknown) => "-".to_owned(),
            (true, HealthStatus::Healthy) => "healthy".to_owned(),
            (true, HealthStatus::Unhealthy) => {
                format!("unhealthy ({})", s.health.consecutive_failures)
            }
        };
        let mut health = Cell::new(health);
        if ctx.color_out && active {
            match s.health.status {
                HealthStatus::Healthy => health = health.fg(Color::Green),
                HealthStatus::Unhealthy => health = health.fg(Color::Red),
                HealthStatus::Unknown => {}
            }
        }
        let uptime = if s.state == ServiceState::Running {
            let secs = now.duration_since(s.state_since).as_secs_f64().max(0.0);
            short_duration(Duration::from_secs_f64(secs))
        } else {
            "-".into()
        };
        row.extend([
            Cell::new(&s.name),
            state,
            Cell::new(pid),
            Cell::new(host),
            Cell::new(endpoints.join(" ")),
            health,
            Cell::new(s.restart_count),
            Cell::new(uptime),
        ]);
        table.add_row(row);
    }
    table
}

/// Each entry with its last `top` sample as `resources`.
fn with_resources(result: &StatusResult) -> Vec<serde_json::Value> {
    let samples: std::collections::HashMap<(&str, &str), _> = result
        .resources
        .iter()
        .map(|r| ((r.project.as_str(), r.service.as_str()), r))
        .collect();
    result
        .services
        .iter()
        .map(|e| {
            let mut v = serde_json::to_value(e).unwrap_or_default();
            if let (Some(obj), Some(r)) = (
                v.as_object_mut(),
                samples.get(&(e.project.as_str(), e.name.as_str())),
            ) {
                obj.insert(
                    "resources".into(),
                    serde_json::to_value(r).unwrap_or_default(),
                );
            }
            v
        })
        .collect()
}
