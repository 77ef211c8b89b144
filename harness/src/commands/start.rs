//! `harness start`: validate the file here, send the resolved project to the daemon, and watch the
//! services come up — a spinner per service driven by registry events, subscribed to *before* the
//! request so no transition is missed.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use harness_protocol::method::{self, Method};
use harness_protocol::wire::{ApplyResult, ServiceAction, StartParams};
use harness_protocol::{
    Client, EventFilter, EventType, HealthStatus, ServiceState, SubscriptionItem,
};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::{Status, connect, load_selected_project, request_failed};
use crate::output::{Context, print_json, short_duration};

pub fn run(ctx: &Context, services: Vec<String>, remove_orphans: bool) -> Status {
    crate::client::check_daemon_build_early(&ctx.daemon);
    let project = match load_selected_project(ctx) {
        Ok(p) => p,
        Err(status) => return status,
    };
    start_project(ctx, &project, services, remove_orphans)
}

/// Sends a loaded project to the daemon and shows the services come up (also `scale`).
pub fn start_project(
    ctx: &Context,
    project: &harness_config::Project,
    services: Vec<String>,
    remove_orphans: bool,
) -> Status {
    start_project_with(ctx, project, services, remove_orphans, None)
}

/// [`start_project`], with what `harness scale` changes (the daemon records a `scale` operation).
pub fn start_project_with(
    ctx: &Context,
    project: &harness_config::Project,
    services: Vec<String>,
    remove_orphans: bool,
    scale: Option<harness_protocol::wire::ScaleRequest>,
) -> Status {
    for s in &services {
        // A replicated service's name means its instances (the daemon expands it).
        let instance = format!("{s}-1");
        if !project.services.contains_key(s) && !project.services.contains_key(&instance) {
            let known: Vec<&str> = project.services.keys().map(String::as_str).collect();
            crate::errln!(
                "error: {}: there is no service {s:?} (services: {})",
                ctx.file.display(),
                known.join(", ")
            );
            return Status::Invalid;
        }
    }
    let yaml = match serde_saphyr::to_string(project) {
        Ok(y) => y,
        Err(e) => {
            crate::errln!("error: cannot encode the project: {e}");
            return Status::Failed;
        }
    };
    let dir = std::path::absolute(&ctx.file)
        .ok()
        .and_then(|f| f.parent().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."));
    let params = StartParams {
        project: project.name.clone(),
        yaml,
        dir: dir.display().to_string(),
        services,
        remove_orphans,
        scale,
    };
    let size = match serde_json::to_string(&params) {
        Ok(v) => v.len(),
        Err(e) => {
            crate::errln!("error: {e}");
            return Status::Failed;
        }
    };
    if let Some(d) = super::request_size::check(&ctx.file, project, size) {
        super::request_size::print(&d);
        return Status::Invalid;
    }
    smol::block_on(async {
        let client = match connect(ctx).await {
            Ok(c) => c,
            Err(s) => return s,
        };
        apply::<method::Start>(ctx, &client, &params, &project.name).await
    })
}

/// Sends `start` or `restart` (any method answering an [`ApplyResult`]) and shows progress until
/// the report arrives.
pub async fn apply<M: Method<Result = ApplyResult>>(
    ctx: &Context,
    client: &Client,
    params: &M::Params,
    project: &str,
) -> Status {
    let method = M::NAME;
    let interactive = !ctx.json() && std::io::stderr().is_terminal();
    let sub = if interactive {
        let filter = EventFilter {
            types: vec![EventType::ServiceState, EventType::ServiceHealth],
            services: Vec::new(),
            project: Some(project.to_owned()),
        };
        client.subscribe(filter, None).await.ok()
    } else {
        None
    };
    let mut ui = Spinners::new(interactive);
    let call = client.call::<M>(params);
    let reply = match sub {
        None => call.await,
        Some(mut sub) => {
            let mut call = std::pin::pin!(call);
            loop {
                let step =
                    futures_lite::future::or(async { Step::Done((&mut call).await) }, async {
                        match sub.next().await {
                            Ok(item) => Step::Event(item),
                            // The event stream is only decoration: keep waiting for the answer.
                            Err(_) => std::future::pending().await,
                        }
                    })
                    .await;
                match step {
                    Step::Done(reply) => break reply,
                    Step::Event(SubscriptionItem::Event(e)) => ui.event(&e),
                    Step::Event(SubscriptionItem::Resync(_)) => {}
                }
            }
        }
    };
    let result: ApplyResult = match reply {
        Ok(r) => r,
        Err(e) => {
            ui.clear();
            return request_failed(method, e);
        }
    };
    ui.finish(&result);
    if ctx.json() {
        print_json(&result);
    } else if !interactive {
        print_summary(&result);
    }
    report_failures(&result)
}

enum Step {
    Done(Result<ApplyResult, harness_protocol::ClientError>),
    Event(SubscriptionItem),
}

fn mark(action: ServiceAction) -> &'static str {
    match action {
        ServiceAction::Failed | ServiceAction::Skipped => "✗",
        ServiceAction::Orphaned => "!",
        _ => "✓",
    }
}

fn describe(s: &harness_protocol::wire::ServiceOutcome) -> String {
    let verb = match s.action {
        ServiceAction::Started => "started",
        ServiceAction::Restarted => "restarted",
        ServiceAction::Unchanged => "running (unchanged)",
        ServiceAction::Failed => "failed",
        ServiceAction::Completed => "completed (exit code 0)",
        ServiceAction::Skipped => "skipped",
        ServiceAction::Orphaned => "orphaned (no longer in the file; --remove-orphans stops it)",
        ServiceAction::Removed => "removed",
    };
    let mut text = verb.to_owned();
    if matches!(
        s.action,
        ServiceAction::Started
            | ServiceAction::Restarted
            | ServiceAction::Failed
            | ServiceAction::Completed
    ) {
        text.push_str(&format!(
            " in {}",
            short_duration(Duration::from_millis(s.elapsed_ms))
        ));
    }
    if let Some(pid) = s.pid
        && !matches!(
            s.action,
            ServiceAction::Failed | ServiceAction::Skipped | ServiceAction::Completed
        )
    {
        text.push_str(&format!(" (pid {pid})"));
    }
    if let Some(note) = &s.note {
        text.push_str(&format!(" ({note})"));
    }
    text
}

fn print_summary(result: &ApplyResult) {
    let width = result
        .services
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0);
    for s in &result.services {
        crate::outln!("{} {:width$}  {}", mark(s.action), s.name, describe(s));
    }
}

fn report_failures(result: &ApplyResult) -> Status {
    let mut failed = false;
    for s in &result.services {
        if !matches!(s.action, ServiceAction::Failed | ServiceAction::Skipped) {
            continue;
        }
        failed = true;
        let why = s.error.as_deref().unwrap_or("no reason given");
        let what = if s.action == ServiceAction::Skipped {
            "was not started"
        } else {
            "failed"
        };
        crate::errln!("error: service {} {what}: {why}", s.name);
        if !s.last_lines.is_empty() {
            crate::errln!("  last output of {}:", s.name);
            for line in &s.last_lines {
                crate::errln!("    {line}");
            }
        }
    }
    if failed { Status::Failed } else { Status::Ok }
}

/// A spinner per service while the request runs; hidden when stderr is not a terminal.
struct Spinners {
    enabled: bool,
    multi: MultiProgress,
    bars: BTreeMap<String, ProgressBar>,
}

impl Spinners {
    fn new(enabled: bool) -> Self {
        Spinners {
            enabled,
            multi: MultiProgress::new(),
            bars: BTreeMap::new(),
        }
    }

    fn bar(&mut self, name: &str) -> &ProgressBar {
        let multi = &self.multi;
        self.bars.entry(name.to_owned()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:.bold} {msg} {elapsed:.dim}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(name.to_owned());
            bar.enable_steady_tick(Duration::from_millis(80));
            bar
        })
    }

    fn event(&mut self, e: &harness_protocol::Event) {
        if !self.enabled {
            return;
        }
        let Some(service) = e.service.clone() else {
            return;
        };
        let entry = e.data.get("entry");
        let state: Option<ServiceState> = entry
            .and_then(|v| v.get("state"))
            .and_then(|v| serde_json::from_value(v.clone()).ok());
        let health: Option<HealthStatus> = entry
            .and_then(|v| v.get("health"))
            .and_then(|v| v.get("status"))
            .and_then(|v| serde_json::from_value(v.clone()).ok());
        let msg = match (state, health) {
            (Some(ServiceState::Running), Some(HealthStatus::Unhealthy)) => {
                "running, unhealthy".to_owned()
            }
            (Some(ServiceState::Starting), _) => "starting".to_owned(),
            (Some(s), _) => s.to_string(),
            (None, _) => return,
        };
        self.bar(&service).set_message(msg);
    }

    fn finish(&mut self, result: &ApplyResult) {
        if !self.enabled {
            return;
        }
        let done = ProgressStyle::with_template("{prefix} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let width = result
            .services
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(0);
        for s in &result.services {
            let bar = self.bar(&s.name).clone();
            bar.set_style(done.clone());
            bar.set_prefix(format!("{} {:width$}", mark(s.action), s.name));
            bar.finish_with_message(describe(s));
        }
    }

    fn clear(&mut self) {
        for bar in self.bars.values() {
            bar.finish_and_clear();
        }
    }
}
