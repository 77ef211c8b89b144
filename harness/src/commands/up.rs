//! `harness up`: `start`, then every service's output in the foreground with a colored prefix per
//! service and lifecycle markers between the lines (`api exited with code 1; restarting in 2s
//! (attempt 3)`), until Ctrl-C, which stops the project (a second Ctrl-C also asks for a stop with
//! no grace period, which the daemon runs as soon as the first one lets go of the project). `-d`
//! is `start`. And `harness down`: stop and forget.

use std::io::Write;
use std::time::Duration;

use futures_lite::{FutureExt as _, StreamExt as _};
use harness_protocol::method;
use harness_protocol::wire::{LogLine, LogsParams, LogsResult, StopParams, StopResult};
use harness_protocol::{Client, EventFilter, EventType, SubscriptionItem};

use super::markers::{Marker, Markers};
use super::{Status, connect, load_selected_project, project_name, request_failed};
use crate::output::{Context, service_color};

pub fn run(ctx: &Context, services: Vec<String>, detach: bool) -> Status {
    if detach {
        return super::start::run(ctx, services, false);
    }
    let since = jiff::Timestamp::now();
    let project = match load_selected_project(ctx) {
        Ok(p) => p,
        Err(s) => return s,
    };
    let started = super::start::run(ctx, services.clone(), false);
    if started == Status::Invalid {
        return started;
    }
    let width = if services.is_empty() {
        project.services.keys().map(String::len).max()
    } else {
        services.iter().map(String::len).max()
    }
    .unwrap_or(0);
    smol::block_on(async {
        let mut signals = match super::interrupt_signals() {
            Ok(s) => s,
            Err(s) => return s,
        };
        let client = match connect(ctx).await {
            Ok(c) => c,
            Err(s) => return s,
        };
        let printer = Printer {
            color: ctx.color_out,
            width,
        };
        let stream = follow(&client, &project.name, &services, since, &printer);
        let interrupted = async {
            signals.next().await;
            Status::Ok
        };
        let status = stream.or(interrupted).await;
        if status != Status::Ok {
            return status;
        }
        crate::errln!(
            "\nstopping {} (Ctrl-C again: kill what is left after this stop)",
            project.name
        );
        let graceful = StopParams {
            project: project.name.clone(),
            services: services.clone(),
            force: true,
            timeout_ms: None,
            remove: false,
        };
        // The markers of the stop keep coming while it runs.
        let stopping = async {
            let r: Result<StopResult, _> = client.call::<method::Stop>(&graceful).await;
            match r {
                Ok(_) => Status::Ok,
                Err(e) => request_failed("stop", e),
            }
        };
        let watch = async {
            let _ = follow(
                &client,
                &project.name,
                &services,
                jiff::Timestamp::now(),
                &printer,
            )
            .await;
            std::future::pending::<Status>().await
        };
        let again = async {
            signals.next().await;
            crate::errln!("killing what is left of {}", project.name);
            let now = StopParams {
                timeout_ms: Some(0),
                ..graceful.clone()
            };
            let r: Result<StopResult, _> = client.call::<method::Stop>(&now).await;
            match r {
                Ok(_) => Status::Ok,
                Err(e) => request_failed("stop", e),
            }
        };
        stopping.or(again).or(watch).await
    })
}

/// `harness down`: stop the project's services and forget the project (the daemon no longer lists
/// it, nor brings it back after a restart).
pub fn down(ctx: &Context, timeout: Option<Duration>) -> Status {
    let project = match project_name(ctx) {
        Ok(p) => p,
        Err(s) => return s,
    };
    let params = StopParams {
        project: project.clone(),
        services: Vec::new(),
        force: true,
        timeout_ms: timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        remove: true,
    };
    smol::block_on(async {
        let client = match connect(ctx).await {
            Ok(c) => c,
            Err(s) => return s,
        };
        let r: StopResult = match client.call::<method::Stop>(&params).await {
            Ok(r) => r,
            Err(e) => return request_failed("down", e),
        };
        let pending = r.services.iter().any(|s| s.pending.is_some());
        if ctx.json() {
            crate::output::print_json(&r);
        } else {
            for s in &r.services {
                match &s.pending {
                    Some(why) => crate::outln!("✗ {} not stopped yet: {why}", s.name),
                    None => crate::outln!("✓ {} stopped and removed", s.name),
                }
            }
            if pending {
                crate::errln!(
                    "project {project} stays until the pending stops are done (`harness status` \
                     shows them as unknown until their host answers)"
                );
            } else {
                crate::outln!("project {project} is gone");
            }
        }
        if pending { Status::Failed } else { Status::Ok }
    })
}

struct Printer {
    color: bool,
    width: usize,
}

impl Printer {
    fn line(&self, out: &mut impl Write, line: &LogLine) -> std::io::Result<()> {
        let (name, width) = (&line.service, self.width);
        if self.color {
            write!(out, "\x1b[{}m{name:width$} |\x1b[0m ", service_color(name))?;
        } else {
            write!(out, "{name:width$} | ")?;
        }
        out.write_all(line.text.as_bytes())?;
        out.write_all(b"\n")
    }

    fn marker(&self, out: &mut impl Write, m: &Marker) -> std::io::Result<()> {
        if self.color {
            writeln!(
                out,
                "\x1b[1;{}m{}\x1b[0m",
                service_color(&m.service),
                m.text
            )
        } else {
            writeln!(out, "{}", m.text)
        }
    }
}

/// Log lines and markers, as they come, until the connection ends.
async fn follow(
    client: &Client,
    project: &str,
    services: &[String],
    since: jiff::Timestamp,
    printer: &Printer,
) -> Status {
    let lines = async {
        let mut params = LogsParams {
            project: project.to_owned(),
            services: services.to_vec(),
            tail: None,
            since: Some(since),
            follow: true,
            session: None,
        };
        loop {
            let batch: LogsResult = match client.call::<method::Logs>(&params).await {
                Ok(b) => b,
                Err(e) => return request_failed("logs", e),
            };
            let mut out = std::io::stdout().lock();
            for l in &batch.lines {
                if printer.line(&mut out, l).is_err() {
                    return Status::Ok;
                }
            }
            if out.flush().is_err() || batch.end {
                return Status::Ok;
            }
            params.session = Some(batch.session);
        }
    };
    let markers = async {
        let filter = EventFilter {
            project: Some(project.to_owned()),
            types: vec![
                EventType::ServiceState,
                EventType::ServiceHealth,
                EventType::ServiceWatch,
            ],
            ..EventFilter::default()
        };
        let mut sub = match client.subscribe(filter, None).await {
            Ok(s) => s,
            Err(e) => return request_failed("subscribe", e),
        };
        let mut markers = Markers::new(services.to_vec());
        loop {
            let next = async { Some(sub.next().await) }
                .or(async {
                    smol::Timer::after(Duration::from_millis(100)).await;
                    None
                })
                .await;
            let mut out_markers = match next {
                Some(Ok(SubscriptionItem::Event(e))) => markers.feed(&e),
                Some(Ok(SubscriptionItem::Resync(_))) => Vec::new(),
                Some(Err(e)) => return request_failed("events", e),
                None => Vec::new(),
            };
            out_markers.extend(markers.due());
            let mut out = std::io::stdout().lock();
            for m in &out_markers {
                if printer.marker(&mut out, m).is_err() {
                    return Status::Ok;
                }
            }
            let _ = out.flush();
        }
    };
    lines.or(markers).await
}
