//! `harness logs`: service output with a colored prefix per service; `-F` follows across restarts;
//! `--grep` filters; `--events` shows lifecycle markers instead; `-o json` prints one object per
//! line. `-f` stays the global `--file` (ADR 0025): a `-f` that names no file gets a hint.

use std::io::{BufWriter, Write};

use harness_protocol::method;
use harness_protocol::wire::{LogLine, LogsParams, LogsResult};

use super::{Status, connect, project_name, request_failed};
use crate::cli::LogsArgs;
use crate::output::{Context, print_json_line, service_color};

pub fn run(ctx: &Context, args: LogsArgs) -> Status {
    if ctx.file_given && !ctx.file.exists() {
        crate::errln!(
            "error: {}: no such services file (-f is --file; to follow the logs use -F or --follow)",
            ctx.file.display()
        );
        return Status::Invalid;
    }
    let grep = match args.grep.as_deref().map(regex::Regex::new) {
        None => None,
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            crate::errln!("error: --grep: {e}");
            return Status::Invalid;
        }
    };
    let project = match project_name(ctx) {
        Ok(p) => p,
        Err(s) => return s,
    };
    let since = match args.since {
        None => None,
        Some(d) => match jiff::SignedDuration::try_from(d)
            .ok()
            .and_then(|d| jiff::Timestamp::now().checked_sub(d).ok())
        {
            Some(t) => Some(t),
            None => {
                crate::errln!("error: --since is too far back");
                return Status::Invalid;
            }
        },
    };
    if args.clear {
        return clear(ctx, project, args.services);
    }
    if args.events {
        return super::markers::show(ctx, &project, &args, grep.as_ref());
    }
    let mut params = LogsParams {
        project,
        services: args.services.clone(),
        tail: args.tail,
        since,
        follow: args.follow,
        session: None,
    };
    smol::block_on(async {
        let client = match connect(ctx).await {
            Ok(c) => c,
            Err(s) => return s,
        };
        let stdout = std::io::stdout();
        let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
        let mut width = args.services.iter().map(String::len).max().unwrap_or(0);
        loop {
            let batch: LogsResult = match client.call::<method::Logs>(&params).await {
                Ok(b) => b,
                Err(e) => {
                    let _ = out.flush();
                    return request_failed("logs", e);
                }
            };
            // Align the prefixes of everything in the batch, not just what came before.
            width = batch
                .lines
                .iter()
                .map(|l| l.service.len())
                .fold(width, usize::max);
            for line in &batch.lines {
                if grep.as_ref().is_some_and(|r| !r.is_match(&line.text)) {
                    continue;
                }
                let written = if ctx.json() {
                    print_json_line(&mut out, line)
                } else {
                    write_line(&mut out, ctx, &args, line, width)
                };
                if written.is_err() {
                    // The reader went away (`| head`): that is not an error.
                    return Status::Ok;
                }
            }
            if out.flush().is_err() {
                return Status::Ok;
            }
            if batch.end {
                return Status::Ok;
            }
            params.session = Some(batch.session);
        }
    })
}

fn write_line(
    out: &mut impl Write,
    ctx: &Context,
    args: &LogsArgs,
    line: &LogLine,
    width: usize,
) -> std::io::Result<()> {
    let name = &line.service;
    if ctx.color_out {
        write!(out, "\x1b[{}m{name:width$} |\x1b[0m ", service_color(name))?;
    } else {
        write!(out, "{name:width$} | ")?;
    }
    if args.timestamps {
        write!(out, "{} ", line.time)?;
    }
    out.write_all(line.text.as_bytes())?;
    out.write_all(b"\n")
}

fn clear(ctx: &Context, project: String, services: Vec<String>) -> Status {
    use harness_protocol::wire::{LogsClearParams, LogsClearResult};
    let params = LogsClearParams { project, services };
    smol::block_on(async {
        let client = match connect(ctx).await {
            Ok(c) => c,
            Err(s) => return s,
        };
        let r: LogsClearResult = match client.call::<method::LogsClear>(&params).await {
            Ok(r) => r,
            Err(e) => return request_failed("logs --clear", e),
        };
        if ctx.json() {
            crate::output::print_json(&r);
        } else {
            crate::outln!("cleared the logs of {}", r.services.join(", "));
        }
        Status::Ok
    })
}
