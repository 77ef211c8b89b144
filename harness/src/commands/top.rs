//! `harness top`: CPU %, memory, fds, threads and uptime of each running service, read where it
//! runs (ADR 0037). `--watch` redraws every 2 s; `-o json` prints the samples (one JSON document per
//! reading with `--watch`).

use std::time::Duration;

use comfy_table::{Cell, Color, Table};
use harness_protocol::admin::{ResourceSample, TopParams};
use harness_protocol::method;

use super::{Status, connect, request_failed};
use crate::output::{Context, print_json, short_duration};

pub fn run(ctx: &Context, watch: bool, all: bool) -> Status {
    let project = if all {
        None
    } else {
        match (&ctx.project, ctx.file_given || ctx.file.is_file()) {
            (Some(p), _) => Some(p.clone()),
            (None, true) => harness_config::load_files(&ctx.files, &super::load_options(ctx))
                .project
                .map(|p| p.name),
            (None, false) => None,
        }
    };
    smol::block_on(async {
        let client = match connect(ctx).await {
            Ok(c) => c,
            Err(s) => return s,
        };
        loop {
            let params = TopParams {
                project: project.clone(),
            };
            let result = match client.call::<method::Top>(&params).await {
                Ok(r) => r,
                Err(e) => return request_failed("top", e),
            };
            if ctx.json() {
                print_json(&result);
            } else {
                if watch && ctx.color_out {
                    crate::out!("\x1b[2J\x1b[H");
                }
                if result.services.is_empty() {
                    crate::outln!("no running services");
                } else {
                    crate::outln!("{}", table(ctx, &result.services));
                }
            }
            if !watch {
                return Status::Ok;
            }
            smol::Timer::after(Duration::from_secs(2)).await;
        }
    })
}

/// `1.5 MiB` as a table shows it.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn table(ctx: &Context, samples: &[ResourceSample]) -> Table {
    let many = samples.iter().any(|s| s.project != samples[0].project);
    let mut table = crate::output::table(ctx.color_out);
    let mut header = vec![];
    if many {
        header.push("project");
    }
    header.extend([
        "service", "where", "pid", "cpu %", "memory", "fds", "threads", "uptime", "note",
    ]);
    table.set_header(header);
    let dash = || "-".to_owned();
    for s in samples {
        let mut row = vec![];
        if many {
            row.push(Cell::new(&s.project));
        }
        let mut cpu = Cell::new(s.cpu_percent.map_or_else(dash, |c| format!("{c:.1}")));
        if ctx.color_out {
            cpu = cpu.fg(match s.cpu_percent {
                None => Color::DarkGrey,
                Some(c) if c >= 80.0 => Color::Red,
                Some(c) if c >= 30.0 => Color::Yellow,
                Some(_) => Color::Green,
            });
        }
        row.extend([
            Cell::new(&s.service),
            Cell::new(&s.place),
            Cell::new(s.pid.map_or_else(dash, |p| p.to_string())),
            cpu,
            Cell::new(s.rss_bytes.map_or_else(dash, bytes)),
            Cell::new(s.fds.map_or_else(dash, |n| n.to_string())),
            Cell::new(s.threads.map_or_else(dash, |n| n.to_string())),
            Cell::new(
                s.uptime_secs
                    .map_or_else(dash, |u| short_duration(Duration::from_secs(u))),
            ),
            Cell::new(s.unknown.clone().unwrap_or_default()),
        ]);
        table.add_row(row);
    }
    table
}
