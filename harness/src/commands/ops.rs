//! `harness ops`: what happened and what is stuck. Lists operations (start, stop, restart,
//! deploy, rollback), shows one as a timeline with a text Gantt of where the time went, cancels a
//! running start or restart, and waits for one to end (ADR 0035).

use std::time::Duration;

use clap::{Args, Subcommand};
use comfy_table::{Cell, Color};
use harness_protocol::method;
use harness_protocol::operation::{
    OpRef, Operation, OperationOutcome, OpsCancelParams, OpsListParams, OpsWaitParams, Step,
    StepKind, StepResult,
};
use jiff::Timestamp;

use super::{Status, connect, request_failed};
use crate::output::{Context, print_json, short_duration};

#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct OpsArgs {
    #[command(subcommand)]
    pub command: Option<OpsCommand>,
    /// Only operations still running.
    #[arg(long, conflicts_with = "failed")]
    pub running: bool,
    /// Only failed ones (an operation its daemon died in is failed: interrupted).
    #[arg(long)]
    pub failed: bool,
    /// Only those that involve this service.
    #[arg(long, value_name = "SERVICE")]
    pub service: Option<String>,
    /// At most this many, newest first.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: usize,
}

#[derive(Debug, Clone, Subcommand)]
pub enum OpsCommand {
    /// One operation: who asked, its parameters, every step (each health check) and a Gantt
    /// of where the time went.
    Show { id: u64 },
    /// End a running start or restart: it stops waiting for health checks and dependencies,
    /// what runs keeps running, and the command that started it exits with an error.
    Cancel {
        id: u64,
        /// Also stop what this operation launched.
        #[arg(long)]
        rollback: bool,
    },
    /// Wait until the operation ends; exit 0 if it succeeded, 1 otherwise.
    Wait {
        id: u64,
        /// Give up after this long (e.g. 30s, 5m); exit 1 if it still runs.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    harness_config::parse_duration(s)
}

pub fn run(ctx: &Context, args: OpsArgs) -> Status {
    smol::block_on(async {
        let client = match connect(ctx).await {
            Ok(c) => c,
            Err(s) => return s,
        };
        match args.command {
            None => {
                let params = OpsListParams {
                    running: args.running,
                    failed: args.failed,
                    service: args.service,
                    project: ctx.project.clone(),
                    limit: Some(args.limit),
                };
                match client.call::<method::OpsList>(&params).await {
                    Ok(r) if ctx.json() => {
                        print_json(&r);
                        Status::Ok
                    }
                    Ok(r) => {
                        list(ctx, &r.operations);
                        Status::Ok
                    }
                    Err(e) => request_failed("ops", e),
                }
            }
            Some(OpsCommand::Show { id }) => {
                match client.call::<method::OpsGet>(&OpRef { id }).await {
                    Ok(op) if ctx.json() => {
                        print_json(&op);
                        Status::Ok
                    }
                    Ok(op) => {
                        show(ctx, &op);
                        Status::Ok
                    }
                    Err(e) => request_failed("ops show", e),
                }
            }
            Some(OpsCommand::Cancel { id, rollback }) => {
                let params = OpsCancelParams { id, rollback };
                match client.call::<method::OpsCancel>(&params).await {
                    Ok(op) if ctx.json() => {
                        print_json(&op);
                        Status::Ok
                    }
                    Ok(op) => {
                        crate::outln!("operation {id} {}", outcome_text(&op.outcome));
                        Status::Ok
                    }
                    Err(e) => request_failed("ops cancel", e),
                }
            }
            Some(OpsCommand::Wait { id, timeout }) => {
                let params = OpsWaitParams {
                    id,
                    timeout_ms: timeout.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                };
                match client.call::<method::OpsWait>(&params).await {
                    Ok(op) => {
                        if ctx.json() {
                            print_json(&op);
                        } else {
                            crate::outln!("operation {id} {}", outcome_text(&op.outcome));
                        }
                        if op.outcome == OperationOutcome::Succeeded {
                            Status::Ok
                        } else {
                            Status::Failed
                        }
                    }
                    Err(e) => request_failed("ops wait", e),
                }
            }
        }
    })
}

fn outcome_text(o: &OperationOutcome) -> String {
    match o {
        OperationOutcome::Running => "is running".into(),
        OperationOutcome::Succeeded => "succeeded".into(),
        OperationOutcome::Failed { reason } => format!("failed: {reason}"),
        OperationOutcome::Cancelled { reason, .. } => format!("was {reason}"),
    }
}

fn outcome_cell(ctx: &Context, o: &OperationOutcome) -> Cell {
    let cell = Cell::new(o.label());
    if !ctx.color_out {
        return cell;
    }
    cell.fg(match o {
        OperationOutcome::Running => Color::Yellow,
        OperationOutcome::Succeeded => Color::Green,
        OperationOutcome::Failed { .. } => Color::Red,
        OperationOutcome::Cancelled { .. } => Color::DarkGrey,
    })
}

/// How long from `from` to `to` (or to now).
fn span(from: Timestamp, to: Option<Timestamp>) -> Duration {
    let to = to.unwrap_or_else(Timestamp::now);
    Duration::try_from(to.duration_since(from)).unwrap_or_default()
}

fn local_time(t: Timestamp) -> String {
    t.to_zoned(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn list(ctx: &Context, ops: &[Operation]) {
    if ops.is_empty() {
        crate::outln!("no operations");
        return;
    }
    let mut table = crate::output::table(ctx.color_out);
    table.set_header([
        "id", "kind", "project", "services", "started", "took", "outcome", "by", "reason",
    ]);
    for op in ops {
        let reason = match &op.outcome {
            OperationOutcome::Failed { reason } | OperationOutcome::Cancelled { reason, .. } => {
                reason.chars().take(60).collect()
            }
            _ => String::new(),
        };
        let by = match (&op.requester.token, &op.requester.peer) {
            (Some(t), Some(p)) => format!("{t} ({p})"),
            (Some(t), None) => t.clone(),
            (None, Some(p)) => p.clone(),
            (None, None) => "-".into(),
        };
        table.add_row(vec![
            Cell::new(op.id),
            Cell::new(op.kind.as_str()),
            Cell::new(op.project.as_deref().unwrap_or("-")),
            Cell::new(if op.services.is_empty() {
                "all".to_owned()
            } else {
                op.services.join(",")
            }),
            Cell::new(local_time(op.started_at)),
            Cell::new(short_duration(span(op.started_at, op.ended_at))),
            outcome_cell(ctx, &op.outcome),
            Cell::new(by),
            Cell::new(reason),
        ]);
    }
    crate::outln!("{table}");
}

fn result_cell(ctx: &Context, r: &StepResult) -> Cell {
    let (text, color) = match r {
        StepResult::Running => ("running".to_owned(), Color::Yellow),
        StepResult::Ok => ("ok".to_owned(), Color::Green),
        StepResult::Failed { reason } => {
            let short: String = reason
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(50)
                .collect();
            (format!("failed: {short}"), Color::Red)
        }
        StepResult::Cancelled => ("cancelled".to_owned(), Color::DarkGrey),
    };
    let cell = Cell::new(text);
    if ctx.color_out { cell.fg(color) } else { cell }
}

fn show(ctx: &Context, op: &Operation) {
    let took = short_duration(span(op.started_at, op.ended_at));
    crate::outln!(
        "operation {}: {} {}{}",
        op.id,
        op.kind.as_str(),
        op.project.as_deref().unwrap_or("-"),
        if op.services.is_empty() {
            String::new()
        } else {
            format!(" ({})", op.services.join(", "))
        }
    );
    crate::outln!("  outcome:   {} after {took}", outcome_text(&op.outcome));
    crate::outln!("  started:   {}", local_time(op.started_at));
    crate::outln!(
        "  requester: peer {}, client {}, token {}",
        op.requester.peer.as_deref().unwrap_or("-"),
        op.requester.client.as_deref().unwrap_or("-"),
        op.requester.token.as_deref().unwrap_or("-")
    );
    if !op.params.is_null() {
        crate::outln!("  params:    {}", op.params);
    }
    if op.steps.is_empty() {
        crate::outln!("no steps");
        return;
    }
    let mut table = crate::output::table(ctx.color_out);
    table.set_header([
        "at", "took", "service", "host", "step", "#", "result", "detail",
    ]);
    for s in &op.steps {
        let at = span(op.started_at, Some(s.started_at));
        let detail: String = s
            .detail
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(60)
            .collect();
        table.add_row(vec![
            Cell::new(format!("+{}", short_duration(at))),
            Cell::new(short_duration(span(s.started_at, s.ended_at))),
            Cell::new(s.service.as_deref().unwrap_or("-")),
            Cell::new(s.host.as_deref().unwrap_or("local")),
            Cell::new(s.kind.as_str()),
            Cell::new(s.attempt.map(|a| a.to_string()).unwrap_or_default()),
            result_cell(ctx, &s.result),
            Cell::new(detail),
        ]);
    }
    crate::outln!("{table}");
    if op.steps_dropped > 0 {
        crate::outln!(
            "({} more health checks not kept as steps)",
            op.steps_dropped
        );
    }
    crate::outln!("{}", gantt(op, 50));
}

/// Lanes of the Gantt: one per service (or host of a deployment), in the order they appear.
fn lanes(op: &Operation) -> Vec<(String, Vec<&Step>)> {
    let mut out: Vec<(String, Vec<&Step>)> = Vec::new();
    for s in &op.steps {
        let name = match (&s.service, &s.host) {
            (Some(svc), _) => svc.clone(),
            (None, Some(h)) => h.clone(),
            (None, None) => "-".into(),
        };
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, steps)) => steps.push(s),
            None => out.push((name, vec![s])),
        }
    }
    out
}

/// Where the time went: per service (or host) a bar over the operation's duration, `░` while it
/// waited for dependencies, `█` while it was launched, checked, stopped or deployed.
pub(crate) fn gantt(op: &Operation, width: usize) -> String {
    let total = span(op.started_at, op.ended_at).max(Duration::from_millis(1));
    let col = total.as_secs_f64() / width as f64;
    let lanes = lanes(op);
    let name_w = lanes
        .iter()
        .map(|(n, _)| n.chars().count())
        .max()
        .unwrap_or(1);
    let mut text = format!(
        "where the time went ({} in all, one column = {}):\n",
        short_duration(total),
        short_duration(Duration::from_secs_f64(col))
    );
    for (name, steps) in lanes {
        let mut bar = vec![' '; width];
        let mut waited = Duration::ZERO;
        let mut first: Option<Duration> = None;
        let mut last = Duration::ZERO;
        // Between its first and last health check a service waits for a check to pass.
        let checks: Vec<&&Step> = steps
            .iter()
            .filter(|s| s.kind == StepKind::HealthCheck)
            .collect();
        if let (Some(a), Some(b)) = (checks.first(), checks.last()) {
            let from = span(op.started_at, Some(a.started_at));
            let to = span(op.started_at, b.ended_at.or(op.ended_at));
            let (a, b) = (
                ((from.as_secs_f64() / col).floor() as usize).min(width),
                ((to.as_secs_f64() / col).ceil() as usize).min(width),
            );
            for c in bar.iter_mut().take(b).skip(a) {
                *c = '▒';
            }
        }
        for s in &steps {
            let from = span(op.started_at, Some(s.started_at));
            let to = span(op.started_at, s.ended_at.or(op.ended_at));
            first = Some(first.map_or(from, |f| f.min(from)));
            last = last.max(to);
            let (a, b) = (
                (from.as_secs_f64() / col).floor() as usize,
                ((to.as_secs_f64() / col).ceil() as usize)
                    .max((from.as_secs_f64() / col) as usize + 1),
            );
            let mark = if s.kind == StepKind::WaitingForDependencies {
                waited += to.saturating_sub(from);
                '░'
            } else {
                '█'
            };
            for c in bar.iter_mut().take(b.min(width)).skip(a.min(width)) {
                if *c == ' ' || mark == '█' {
                    *c = mark;
                }
            }
        }
        let busy = last.saturating_sub(first.unwrap_or_default());
        let waited = if waited > Duration::ZERO {
            format!(" (waited {})", short_duration(waited))
        } else {
            String::new()
        };
        text.push_str(&format!(
            "  {name:<name_w$} |{}| {}{waited}\n",
            bar.into_iter().collect::<String>(),
            short_duration(busy)
        ));
    }
    text.push_str("  █ launching, checking, stopping, deploying   ▒ waiting for a health check to pass   ░ waiting for dependencies");
    text
}
