//! Lifecycle markers: the registry's state and health events of services told as one line each,
//! the way `harness up` shows them between the log lines and `harness logs --events` lists them
//! (`api exited with code 1; restarting in 2s (attempt 3)`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use harness_protocol::method;
use harness_protocol::{Event, EventType, HealthStatus, ServiceState};

/// An exit is held back this long for the restart decision that usually follows it at once,
/// so that both are told in one line.
const HOLD_EXIT: Duration = Duration::from_millis(300);

/// One marker: which service, what happened, when.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Marker {
    pub service: String,
    pub time: jiff::Timestamp,
    pub text: String,
}

/// Turns events into markers, joining an exit with the restart that follows it.
#[derive(Default)]
pub struct Markers {
    /// Exits waiting for what follows, by service.
    held: HashMap<String, (Marker, Instant)>,
    /// Only these services (all when empty).
    services: Vec<String>,
}

impl Markers {
    /// Markers of `services` (all when empty).
    pub fn new(services: Vec<String>) -> Markers {
        Markers {
            held: HashMap::new(),
            services,
        }
    }

    /// The markers `e` completes (none, one, or a held exit and this one).
    pub fn feed(&mut self, e: &Event) -> Vec<Marker> {
        let Some(service) = e.service.clone() else {
            return Vec::new();
        };
        if !self.services.is_empty() && !self.services.contains(&service) {
            return Vec::new();
        }
        let mut out = Vec::new();
        let held = self.held.remove(&service).map(|(m, _)| m);
        let marker = |text: String| Marker {
            service: service.clone(),
            time: e.time,
            text,
        };
        match e.kind {
            EventType::ServiceState => {
                let state = |k: &str| {
                    e.data
                        .get(k)
                        .and_then(|v| serde_json::from_value::<ServiceState>(v.clone()).ok())
                };
                let Some(to) = state("to") else {
                    out.extend(held);
                    return out;
                };
                match to {
                    ServiceState::Exited { code, signal } => {
                        out.extend(held);
                        let how = match (code, signal) {
                            (Some(c), _) => format!("exited with code {c}"),
                            (None, Some(s)) => format!("was killed by signal {s}"),
                            (None, None) => "exited".to_owned(),
                        };
                        self.held.insert(
                            service.clone(),
                            (marker(format!("{service} {how}")), Instant::now()),
                        );
                    }
                    ServiceState::Restarting {
                        attempt,
                        next_start,
                    } => {
                        let delay = next_start
                            .and_then(|t| t.duration_since(e.time).try_into().ok())
                            .map(|d: Duration| {
                                // The event is recorded a moment after the delay was set.
                                let tenths = d.as_millis().div_ceil(100);
                                let d = Duration::from_millis(
                                    u64::try_from(tenths * 100).unwrap_or(u64::MAX),
                                );
                                format!(" in {}", crate::output::short_duration(d))
                            })
                            .unwrap_or_default();
                        let text = match held {
                            Some(h) => format!("{}; restarting{delay} (attempt {attempt})", h.text),
                            None => format!("{service} restarting{delay} (attempt {attempt})"),
                        };
                        out.push(marker(text));
                    }
                    other => {
                        out.extend(held);
                        let text = match other {
                            ServiceState::Starting => "starting".to_owned(),
                            ServiceState::Running => "started".to_owned(),
                            ServiceState::Stopping => "stopping".to_owned(),
                            ServiceState::Stopped => "stopped".to_owned(),
                            ServiceState::Failed { reason } => format!("failed: {reason}"),
                            _ => return out,
                        };
                        out.push(marker(format!("{service} {text}")));
                    }
                }
            }
            EventType::ServiceWatch => {
                out.extend(held);
                let paths: Vec<&str> = e
                    .data
                    .get("paths")
                    .and_then(|p| p.as_array())
                    .map(|a| a.iter().filter_map(|p| p.as_str()).collect())
                    .unwrap_or_default();
                let count = e.data.get("count").and_then(|c| c.as_u64()).unwrap_or(0);
                let more = count.saturating_sub(paths.len() as u64);
                let more = if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                };
                let then = match e.data.get("action").and_then(|a| a.as_str()) {
                    Some("restart") => "; restarting",
                    _ => "",
                };
                out.push(marker(format!(
                    "{service}: {}{more} changed{then}",
                    paths.join(", ")
                )));
            }
            EventType::ServiceHealth => {
                out.extend(held);
                let to = e
                    .data
                    .get("to")
                    .and_then(|v| serde_json::from_value::<HealthStatus>(v.clone()).ok());
                match to {
                    Some(HealthStatus::Healthy) => {
                        out.push(marker(format!("{service} is healthy")))
                    }
                    Some(HealthStatus::Unhealthy) => {
                        out.push(marker(format!("{service} is unhealthy")));
                    }
                    _ => {}
                }
            }
            _ => out.extend(held),
        }
        out
    }

    /// Held exits whose time is up (no restart followed).
    pub fn due(&mut self) -> Vec<Marker> {
        let now = Instant::now();
        let due: Vec<String> = self
            .held
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) >= HOLD_EXIT)
            .map(|(s, _)| s.clone())
            .collect();
        due.into_iter()
            .filter_map(|s| self.held.remove(&s).map(|(m, _)| m))
            .collect()
    }

    /// Everything still held (at the end of a stream).
    pub fn flush(&mut self) -> Vec<Marker> {
        self.held.drain().map(|(_, (m, _))| m).collect()
    }
}

/// `harness logs --events`: the retained markers of the project, then, with `-F`, new ones.
pub fn show(
    ctx: &crate::output::Context,
    project: &str,
    args: &crate::cli::LogsArgs,
    grep: Option<&regex::Regex>,
) -> super::Status {
    use std::io::Write as _;

    use futures_lite::FutureExt as _;
    use harness_protocol::wire::{EventsParams, EventsResult};
    use harness_protocol::{EventFilter, SubscriptionItem};

    use super::{Status, connect, request_failed};

    let since = args.since.and_then(|d| {
        jiff::SignedDuration::try_from(d)
            .ok()
            .and_then(|d| jiff::Timestamp::now().checked_sub(d).ok())
    });
    let print = |markers: Vec<Marker>| -> bool {
        let mut out = std::io::stdout().lock();
        for m in markers {
            if since.is_some_and(|s| m.time < s) || grep.is_some_and(|r| !r.is_match(&m.text)) {
                continue;
            }
            let written = if ctx.json() {
                crate::output::print_json_line(&mut out, &m)
            } else if args.timestamps {
                writeln!(out, "{} {}", m.time, m.text)
            } else {
                writeln!(out, "{}", m.text)
            };
            if written.is_err() {
                return false;
            }
        }
        out.flush().is_ok()
    };
    let mine = |e: &Event| e.project.as_deref() == Some(project);
    smol::block_on(async {
        let client = match connect(ctx).await {
            Ok(c) => c,
            Err(s) => return s,
        };
        let mut markers = Markers::new(args.services.clone());
        let mut seq = 0;
        loop {
            let page: EventsResult = match client
                .call::<method::EventsList>(&EventsParams {
                    since: seq,
                    limit: Some(1000),
                })
                .await
            {
                Ok(p) => p,
                Err(e) => return request_failed("events", e),
            };
            let Some(last) = page.events.last().map(|e| e.seq) else {
                break;
            };
            seq = last;
            let found: Vec<Marker> = page
                .events
                .iter()
                .filter(|e| mine(e))
                .flat_map(|e| markers.feed(e))
                .collect();
            if !print(found) {
                return Status::Ok;
            }
        }
        if !args.follow {
            print(markers.flush());
            return Status::Ok;
        }
        let filter = EventFilter {
            project: Some(project.to_owned()),
            ..EventFilter::default()
        };
        let mut sub = match client.subscribe(filter, Some(seq)).await {
            Ok(s) => s,
            Err(e) => return request_failed("subscribe", e),
        };
        loop {
            let next = async { Some(sub.next().await) }
                .or(async {
                    smol::Timer::after(std::time::Duration::from_millis(100)).await;
                    None
                })
                .await;
            let mut found = match next {
                Some(Ok(SubscriptionItem::Event(e))) => markers.feed(&e),
                Some(Ok(SubscriptionItem::Resync(_))) | None => Vec::new(),
                Some(Err(e)) => return request_failed("events", e),
            };
            found.extend(markers.due());
            if !print(found) {
                return Status::Ok;
            }
        }
    })
}
