//! What dependents wait for: a small watch over one service's progress since its supervisor
//! began, with sticky flags (once healthy, a later restart does not un-satisfy a dependent that
//! already proceeded).

use std::sync::Mutex;

use event_listener::Event;
use harness_config::Condition;

#[derive(Debug, Clone, Default)]
pub(crate) struct Ready {
    pub started: bool,
    pub healthy: bool,
    pub completed_ok: bool,
    /// The last check's output once it counts as unhealthy.
    pub unhealthy: Option<String>,
    /// Ended and will not be restarted: why.
    pub ended: Option<String>,
    /// Could not be started, or gave up: why.
    pub failed: Option<String>,
    pub stopped: bool,
    /// How it last exited since this start (whether or not it is restarted).
    pub exited: Option<command_executor::service::ExitInfo>,
    /// When its process was spawned (the last launch): `start` watches a service without a
    /// health check from this instant on, not from when its pid was recorded.
    pub launched_at: Option<std::time::Instant>,
    /// The pid and start time of that process, when it runs on this machine.
    pub launched_pid: Option<(u32, u64)>,
}

#[derive(Default)]
pub(crate) struct Readiness {
    state: Mutex<Ready>,
    changed: Event,
    /// Where health checks are recorded while an operation waits for this service (ADR 0035).
    probes: Mutex<Option<ProbeSink>>,
}

/// An operation that records each health check of one service.
pub(crate) struct ProbeSink {
    pub log: crate::operations::OperationLog,
    pub service: String,
    pub host: Option<String>,
}

impl Readiness {
    pub fn update(&self, f: impl FnOnce(&mut Ready)) {
        if let Ok(mut st) = self.state.lock() {
            f(&mut st);
        }
        self.changed.notify(usize::MAX);
    }

    pub fn get(&self) -> Ready {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Records the health checks from now on in `sink` (none: stop recording).
    pub fn watch_probes(&self, sink: Option<ProbeSink>) {
        if let Ok(mut p) = self.probes.lock() {
            *p = sink;
        }
    }

    /// One health check ran (begun at `began`): recorded if an operation waits for it.
    pub fn probed(&self, ok: bool, output: &str, began: jiff::Timestamp) {
        if let Ok(p) = self.probes.lock()
            && let Some(sink) = p.as_ref()
        {
            sink.log
                .health_attempt(&sink.service, sink.host.as_deref(), ok, output, began);
        }
    }

    /// Waits until `f` gives an answer.
    pub async fn wait<T>(&self, f: impl Fn(&Ready) -> Option<T>) -> T {
        loop {
            let listener = self.changed.listen();
            if let Some(t) = f(&self.get()) {
                return t;
            }
            listener.await;
        }
    }
}

/// Whether `cond` holds (`Some(Ok)`), can no longer hold (`Some(Err(why))`), or may yet.
pub(crate) fn condition(r: &Ready, cond: Condition) -> Option<Result<(), String>> {
    if let Some(why) = &r.failed {
        return Some(Err(why.clone()));
    }
    match cond {
        Condition::Started if r.started => Some(Ok(())),
        Condition::Healthy if r.healthy => Some(Ok(())),
        Condition::CompletedSuccessfully if r.completed_ok => Some(Ok(())),
        _ if r.stopped => Some(Err("it was stopped".into())),
        Condition::Healthy if r.unhealthy.is_some() => Some(Err(format!(
            "its health check fails: {}",
            r.unhealthy.as_deref().unwrap_or("")
        ))),
        Condition::Healthy | Condition::CompletedSuccessfully if r.ended.is_some() => {
            Some(Err(r.ended.clone().unwrap_or_default()))
        }
        _ => None,
    }
}
