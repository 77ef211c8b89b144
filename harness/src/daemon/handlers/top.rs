//! `top`: what each running service uses. The orchestrator reads every place once (this machine's
//! /proc, one command per SSH host, one `docker stats` per engine); CPU % is the process's CPU time
//! between this reading and the last one (at least 0.5 s apart: a first `top` reads twice, 1 s
//! apart). The last samples are kept for `status`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness_protocol::WireError;
use harness_protocol::admin::{ResourceSample, TopParams, TopResult};
use harness_server::RequestContext;
use orchestrator::usage::{Reading, UsageReading};

use crate::daemon::{State, wire_error};

/// A process's cumulative CPU at one reading.
#[derive(Debug, Clone, Copy)]
struct Prev {
    pid: u32,
    start_time: u64,
    cpu_ticks: u64,
    uptime: f64,
}

/// The readings `top` compares against, and the last samples.
#[derive(Default)]
pub struct Samples {
    prev: Mutex<HashMap<(String, String), Prev>>,
    last: Mutex<Vec<ResourceSample>>,
}

impl Samples {
    /// The last samples of `project` (or all).
    pub fn last(&self, project: Option<&str>) -> Vec<ResourceSample> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.iter()
            .filter(|s| project.is_none_or(|p| s.project == p))
            .cloned()
            .collect()
    }

    /// The previous reading of `r`'s process, if it is the same process and far enough back.
    fn usable(&self, r: &UsageReading) -> Option<Prev> {
        let Reading::Process { usage, uptime, .. } = &r.reading else {
            return None;
        };
        let prev = self.prev.lock().unwrap_or_else(|p| p.into_inner());
        let p = *prev.get(&(r.project.clone(), r.service.clone()))?;
        (p.pid == usage.pid && p.start_time == usage.start_time && uptime - p.uptime >= 0.5)
            .then_some(p)
    }

    fn remember(&self, readings: &[UsageReading]) {
        let mut prev = self.prev.lock().unwrap_or_else(|p| p.into_inner());
        for r in readings {
            if let Reading::Process { usage, uptime, .. } = &r.reading {
                prev.insert(
                    (r.project.clone(), r.service.clone()),
                    Prev {
                        pid: usage.pid,
                        start_time: usage.start_time,
                        cpu_ticks: usage.cpu_ticks,
                        uptime: *uptime,
                    },
                );
            }
        }
    }
}

pub async fn handle(
    state: Arc<State>,
    p: TopParams,
    _ctx: RequestContext,
) -> Result<TopResult, WireError> {
    let began = Instant::now();
    let project = p.project.as_deref();
    let mut readings = state.orch.read_usage(project).await.map_err(wire_error)?;
    let samples = &state.top;
    let first_time = readings
        .iter()
        .any(|r| matches!(r.reading, Reading::Process { .. }) && samples.usable(r).is_none());
    if first_time {
        samples.remember(&readings);
        smol::Timer::after(Duration::from_secs(1)).await;
        readings = state.orch.read_usage(project).await.map_err(wire_error)?;
    }
    let now = jiff::Timestamp::now();
    let services: Vec<ResourceSample> = readings
        .iter()
        .map(|r| sample(r, samples.usable(r), now))
        .collect();
    samples.remember(&readings);
    {
        let mut last = samples.last.lock().unwrap_or_else(|p| p.into_inner());
        last.retain(|s| {
            !services
                .iter()
                .any(|n| n.project == s.project && n.service == s.service)
                && project.is_some_and(|p| s.project != p)
        });
        last.extend(services.iter().cloned());
    }
    Ok(TopResult {
        services,
        elapsed_ms: u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

fn sample(r: &UsageReading, prev: Option<Prev>, now: jiff::Timestamp) -> ResourceSample {
    let mut s = ResourceSample {
        project: r.project.clone(),
        service: r.service.clone(),
        place: r.place.clone(),
        pid: r.pid,
        sampled_at: now,
        ..ResourceSample::default()
    };
    let since_state = now.duration_since(r.entry.state_since).as_secs();
    match &r.reading {
        Reading::Process {
            usage,
            uptime,
            ticks_per_sec,
            page_size,
        } => {
            let hz = (*ticks_per_sec).max(1) as f64;
            s.cpu_percent = prev.map(|p| {
                let cpu = usage.cpu_ticks.saturating_sub(p.cpu_ticks) as f64 / hz;
                let wall = (uptime - p.uptime).max(1e-3);
                (cpu / wall * 1000.0).round() / 10.0
            });
            s.rss_bytes = Some(usage.rss_pages.saturating_mul(*page_size));
            s.fds = usage.fds;
            s.threads = Some(usage.threads);
            s.uptime_secs = Some((uptime - usage.start_time as f64 / hz).max(0.0) as u64);
            if s.fds.is_none() {
                s.unknown = Some("fds: /proc/PID/fd is not readable by the daemon's user".into());
            }
        }
        Reading::Container(c) => {
            s.cpu_percent = Some((c.cpu_percent * 10.0).round() / 10.0);
            s.rss_bytes = Some(c.mem_bytes);
            s.threads = Some(c.pids);
            s.uptime_secs = u64::try_from(since_state).ok();
            s.unknown = Some("fds: not reported by docker stats".into());
        }
        Reading::Unknown(why) => s.unknown = Some(why.clone()),
    }
    s
}
