//! `harness deploy PKG [--host h1,h2]` and `harness deploy --rollback NAME [--host h1]`: the daemon
//! ships the package to every host in parallel; here, one bar per host (bytes and phase) on a
//! terminal, one line per phase otherwise, and one result line per host.
//!
//! PKG is a built `NAME-VERSION.tar.zst` (its `.sha256` beside it; the daemon verifies both) or a
//! package directory, which is built first into `$HARNESS_HOME/packages/` (builds are reproducible, so the same directory gives the
//! same checksum and redeploying it does nothing).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use harness_config::Project;
use harness_protocol::method::{self, Method};
use harness_protocol::wire::{
    DeployAction, DeployParams, DeployProgress, DeployResult, HostDeployment, RollbackParams,
};
use harness_protocol::{CallItem, ClientError};
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value;

use super::{Status, connect, load_selected_project, request_failed};
use crate::output::{Context, print_json, short_duration};

#[derive(Debug, Clone, Args)]
pub struct DeployArgs {
    /// A built NAME-VERSION.tar.zst, or a package directory (with manifest.yaml) to build first.
    #[arg(
        value_name = "PKG",
        required_unless_present = "rollback",
        conflicts_with = "rollback"
    )]
    pub package: Option<PathBuf>,
    /// Hosts entries to deploy to (comma separated or repeated); default: every host that has a
    /// `type: package` service of this package.
    #[arg(long = "host", value_name = "HOST", value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Switch back to the previously active version of package NAME instead of deploying.
    #[arg(long, value_name = "NAME")]
    pub rollback: Option<String>,
    /// With --rollback: the retained version to switch to.
    #[arg(long, value_name = "VERSION", requires = "rollback")]
    pub to: Option<String>,
    /// Install root on the hosts [default: /opt].
    #[arg(long, value_name = "DIR")]
    pub root: Option<String>,
    /// Earlier versions to keep on each host besides the active one [default: 2].
    #[arg(long, value_name = "N", conflicts_with = "rollback")]
    pub keep: Option<usize>,
    /// Reinstall a version that is on a host with different contents instead of refusing.
    #[arg(long, conflicts_with = "rollback")]
    pub replace: bool,
}

pub fn run(ctx: &Context, args: DeployArgs) -> Status {
    let project = match load_selected_project(ctx) {
        Ok(p) => p,
        Err(status) => return status,
    };
    for h in &args.hosts {
        if !project.hosts.contains_key(h) {
            let known: Vec<&str> = project.hosts.keys().map(String::as_str).collect();
            crate::errln!(
                "error: {}: there is no host {h:?} in the hosts section (hosts: {})",
                ctx.file.display(),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            );
            return Status::Invalid;
        }
    }
    let (yaml, dir) = match encode(ctx, &project) {
        Ok(v) => v,
        Err(s) => return s,
    };
    let (method, params) = match &args.rollback {
        Some(name) => encode_params::<method::DeployRollback>(&RollbackParams {
            project: project.name.clone(),
            yaml,
            dir,
            name: name.clone(),
            hosts: args.hosts.clone(),
            to: args.to.clone(),
            root: args.root.clone(),
        }),
        None => {
            let Some(source) = &args.package else {
                crate::errln!("error: name a package (archive or directory) or --rollback NAME");
                return Status::Invalid;
            };
            let archive = match package(ctx, source) {
                Ok(p) => p,
                Err(s) => return s,
            };
            encode_params::<method::Deploy>(&DeployParams {
                project: project.name.clone(),
                yaml,
                dir,
                archive: archive.display().to_string(),
                hosts: args.hosts.clone(),
                root: args.root.clone(),
                keep: args.keep,
                replace: args.replace,
            })
        }
    };
    let params = match params {
        Ok(v) => v,
        Err(e) => {
            crate::errln!("error: {e}");
            return Status::Failed;
        }
    };
    smol::block_on(async {
        let client = match connect(ctx).await {
            Ok(c) => c,
            Err(s) => return s,
        };
        let mut ui = Bars::new(ctx);
        let mut call = match client.request_streaming(method, params).await {
            Ok(c) => c,
            Err(e) => return request_failed(method, e),
        };
        let reply = loop {
            match call.next().await {
                Some(Ok(CallItem::Progress(v))) => {
                    if let Ok(p) = serde_json::from_value::<DeployProgress>(v) {
                        ui.progress(&p);
                    }
                }
                Some(Ok(CallItem::Done(v))) => break Ok(v),
                Some(Err(e)) => break Err(e),
                None => {
                    break Err(ClientError::Decode(
                        "the request ended without a result".into(),
                    ));
                }
            }
        };
        let result: DeployResult = match reply.and_then(|v: Value| {
            serde_json::from_value(v).map_err(|e| ClientError::Decode(e.to_string()))
        }) {
            Ok(r) => r,
            Err(e) => {
                ui.clear();
                return request_failed(method, e);
            }
        };
        ui.finish(&result);
        if ctx.json() {
            print_json(&result);
        } else if !ui.enabled {
            for h in &result.hosts {
                crate::outln!("{} {}  {}", mark(h), h.host, describe(h));
            }
        }
        report_failures(&result)
    })
}

/// `M`'s name and params: the compiler checks that the params are `M`'s and that `M` answers a
/// [`DeployResult`] (both `deploy` and `deploy.rollback` do).
fn encode_params<M: Method<Result = DeployResult>>(
    params: &M::Params,
) -> (&'static str, serde_json::Result<Value>) {
    (M::NAME, serde_json::to_value(params))
}

/// The project as the daemon gets it (every `${VAR}` substituted) and the services file's folder.
fn encode(ctx: &Context, project: &Project) -> Result<(String, String), Status> {
    let yaml = serde_saphyr::to_string(project).map_err(|e| {
        crate::errln!("error: cannot encode the project: {e}");
        Status::Failed
    })?;
    // The YAML travels as one JSON string: that is most of the request.
    let encoded = serde_json::to_string(&yaml).map_or(yaml.len(), |s| s.len());
    if let Some(d) = super::request_size::check(&ctx.file, project, encoded) {
        super::request_size::print(&d);
        return Err(Status::Invalid);
    }
    let dir = std::path::absolute(&ctx.file)
        .ok()
        .and_then(|f| f.parent().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."));
    Ok((yaml, dir.display().to_string()))
}

/// The archive to send: PKG itself (the daemon opens and verifies it, so it is not read twice), or a
/// package directory built into `$HARNESS_HOME/packages`.
fn package(ctx: &Context, source: &Path) -> Result<PathBuf, Status> {
    if !source.is_dir() {
        return match std::path::absolute(source) {
            Ok(p) if p.is_file() => Ok(p),
            Ok(p) => {
                crate::errln!(
                    "error: {}: no such package archive or directory",
                    p.display()
                );
                Err(Status::Invalid)
            }
            Err(e) => {
                crate::errln!("error: {}: {e}", source.display());
                Err(Status::Invalid)
            }
        };
    }
    let result = {
        let out = match harness_protocol::HarnessHome::from_env() {
            Ok(home) => home.path("packages"),
            Err(e) => {
                crate::errln!("error: {e}");
                return Err(Status::Failed);
            }
        };
        if let Err(e) = std::fs::create_dir_all(&out) {
            crate::errln!("error: {}: {e}", out.display());
            return Err(Status::Failed);
        }
        packages::build(source, &out)
    };
    let result = result.and_then(|p| {
        // The daemon opens it by this path, whatever its working directory.
        let path = std::path::absolute(&p.path).map_err(|e| packages::Error::Io {
            path: p.path.clone(),
            action: "resolving".into(),
            source: e,
        })?;
        Ok(packages::Package { path, ..p })
    });
    match result {
        Ok(p) => {
            if !ctx.json() {
                crate::errln!("built {} ({})", p.path.display(), HumanBytes(p.size));
            }
            Ok(p.path)
        }
        Err(packages::Error::Manifest(m)) => {
            let theme = if ctx.color {
                miette::GraphicalTheme::unicode()
            } else {
                miette::GraphicalTheme::unicode_nocolor()
            };
            let mut out = String::new();
            if miette::GraphicalReportHandler::new_themed(theme)
                .render_report(&mut out, &*m)
                .is_err()
            {
                out = m.to_string();
            }
            crate::errout!("{out}");
            Err(Status::Invalid)
        }
        Err(e @ packages::Error::Io { .. }) => {
            crate::errln!("error: {e}");
            Err(Status::Failed)
        }
        Err(e) => {
            crate::errln!("error: {e}");
            Err(Status::Invalid)
        }
    }
}

fn mark(h: &HostDeployment) -> &'static str {
    match h.action {
        _ if h.error.is_some() => "✗",
        DeployAction::Failed => "✗",
        DeployAction::Unchanged => "=",
        _ => "✓",
    }
}

fn describe(h: &HostDeployment) -> String {
    let mut text = match h.action {
        DeployAction::Installed => format!(
            "{} installed in {} ({} sent)",
            h.package,
            h.path.as_deref().unwrap_or("?"),
            HumanBytes(h.bytes_sent)
        ),
        DeployAction::Activated => format!(
            "{} was installed already; activated {}",
            h.package,
            h.path.as_deref().unwrap_or("?")
        ),
        DeployAction::Unchanged => format!(
            "{} unchanged: the same checksum is active already, nothing done",
            h.package
        ),
        DeployAction::RolledBack => format!(
            "rolled back to {} ({})",
            h.package,
            h.path.as_deref().unwrap_or("?")
        ),
        DeployAction::Failed => format!("{} failed", h.package),
    };
    if let Some(prev) = &h.previous
        && h.action != DeployAction::Unchanged
    {
        text.push_str(&format!("; was {prev}"));
    }
    if !h.restarted.is_empty() {
        text.push_str(&format!("; restarted {}", h.restarted.join(", ")));
    }
    text
}

fn report_failures(result: &DeployResult) -> Status {
    let mut status = Status::Ok;
    for h in result.failures() {
        let why = h.error.as_deref().unwrap_or("no reason given");
        // Errors from the host name it first already; others get the host here.
        let why = if why.starts_with(&format!("{}: ", h.host)) {
            why.to_owned()
        } else {
            format!("{}: {why}", h.host)
        };
        crate::errln!("error: {}: {why}", h.package);
        status = Status::Failed;
    }
    status
}

/// A bar per host on a terminal; a line per phase change otherwise (none with `-o json`).
struct Bars {
    enabled: bool,
    lines: bool,
    multi: MultiProgress,
    bars: BTreeMap<String, ProgressBar>,
    phases: BTreeMap<String, String>,
}

impl Bars {
    fn new(ctx: &Context) -> Self {
        let enabled = !ctx.json() && std::io::stderr().is_terminal();
        Bars {
            enabled,
            lines: !ctx.json() && !enabled,
            multi: MultiProgress::new(),
            bars: BTreeMap::new(),
            phases: BTreeMap::new(),
        }
    }

    fn progress(&mut self, p: &DeployProgress) {
        let changed = self.phases.get(&p.host) != Some(&p.phase);
        if changed {
            self.phases.insert(p.host.clone(), p.phase.clone());
        }
        if self.lines && changed {
            if p.phase == "uploading" {
                crate::errln!(
                    "{}: {} uploading {}",
                    p.host,
                    p.package,
                    HumanBytes(p.total)
                );
            } else {
                crate::errln!("{}: {} {}", p.host, p.package, p.phase);
            }
        }
        if !self.enabled {
            return;
        }
        let multi = &self.multi;
        // A spinner until the size to send is known (probing), then a bar of the bytes sent.
        let bar = self.bars.entry(p.host.clone()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new(0));
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:.bold} {msg} {elapsed:.dim}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(p.host.clone());
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        if p.total > 0 {
            if bar.length() != Some(p.total) {
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} {prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {msg} \
                         {elapsed:.dim}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_length(p.total);
            }
            bar.set_position(p.bytes);
        }
        bar.set_message(format!("{} {}", p.package, p.phase));
    }

    fn finish(&mut self, result: &DeployResult) {
        if !self.enabled {
            return;
        }
        let done = ProgressStyle::with_template("{prefix} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        for h in &result.hosts {
            let bar = match self.bars.get(&h.host) {
                Some(b) => b.clone(),
                None => self.multi.add(ProgressBar::new(0)),
            };
            bar.set_style(done.clone());
            bar.set_prefix(format!("{} {}", mark(h), h.host));
            bar.finish_with_message(format!(
                "{} in {}",
                describe(h),
                short_duration(Duration::from_millis(result.elapsed_ms))
            ));
        }
    }

    fn clear(&mut self) {
        for bar in self.bars.values() {
            bar.finish_and_clear();
        }
    }
}
