//! `harness drift` and `harness sync` (ADR 0036): the registry against what runs everywhere, and
//! the repairs. `drift` is read-only; `sync` without a flag is `--dry-run`; nothing is killed
//! without `--kill ID`.

use comfy_table::{Cell, Color};
use harness_protocol::drift::{
    DriftCategory, DriftDefinition, DriftParams, DriftResult, Finding, SyncMode, SyncParams,
    SyncResult,
};
use harness_protocol::method;

use super::{Status, connect, load_project, request_failed};
use crate::cli::SyncArgs;
use crate::output::{Context, print_json};

/// The services file to compare running instances with: the one given with `-f`, or
/// `services.yaml` here when it exists; none otherwise (the applied definitions are used).
fn definition(ctx: &Context) -> Result<Option<DriftDefinition>, Status> {
    if !ctx.file_given && !ctx.file.exists() {
        return Ok(None);
    }
    let project = load_project(ctx)?;
    definition_of(ctx, &project).map(Some)
}

/// A loaded project as the daemon's methods take a services file (`drift`, `sync`,
/// `hosts.check`): resolved, serialized, with the directory of the file.
pub(crate) fn definition_of(
    ctx: &Context,
    project: &harness_config::Project,
) -> Result<DriftDefinition, Status> {
    let yaml = serde_saphyr::to_string(project).map_err(|e| {
        crate::errln!("error: cannot encode the project: {e}");
        Status::Failed
    })?;
    let dir = std::path::absolute(&ctx.file)
        .ok()
        .and_then(|f| f.parent().map(std::path::PathBuf::from))
        .unwrap_or_else(|| std::path::PathBuf::from("."));
    let definition = DriftDefinition {
        project: project.name.clone(),
        yaml,
        dir: dir.display().to_string(),
    };
    // Over the daemon's message limit it would only close the connection: refuse it here.
    let size = serde_json::to_string(&definition).map_or(usize::MAX, |v| v.len());
    if let Some(d) = super::request_size::check(&ctx.file, project, size) {
        super::request_size::print(&d);
        return Err(Status::Invalid);
    }
    Ok(definition)
}

pub fn run(ctx: &Context) -> Status {
    let definition = match definition(ctx) {
        Ok(d) => d,
        Err(s) => return s,
    };
    smol::block_on(async {
        let client = match connect(ctx).await {
            Ok(c) => c,
            Err(s) => return s,
        };
        let result: DriftResult = match client
            .call::<method::Drift>(&DriftParams { definition })
            .await
        {
            Ok(r) => r,
            Err(e) => return request_failed("drift", e),
        };
        if ctx.json() {
            print_json(&result);
        } else {
            print_findings(ctx, &result.findings);
            let failed: Vec<String> = result
                .probes
                .iter()
                .filter_map(|p| p.error.as_ref().map(|e| format!("{}: {e}", p.place)))
                .collect();
            crate::outln!(
                "{} finding(s); {} entries compared; {} place(s) probed in {} ms{}",
                result.findings.len(),
                result.entries,
                result.probes.len(),
                result.elapsed_ms,
                if failed.is_empty() {
                    String::new()
                } else {
                    format!(" (not answering: {})", failed.join("; "))
                }
            );
        }
        // Scripts: drift found is a failing exit, as `diff` does.
        if result.findings.is_empty() {
            Status::Ok
        } else {
            Status::Failed
        }
    })
}

fn print_findings(ctx: &Context, findings: &[Finding]) {
    if findings.is_empty() {
        crate::outln!("no drift");
        return;
    }
    let mut table = crate::output::table(ctx.color_out);
    table.set_header(["id", "category", "where", "what", "evidence", "resolve"]);
    for f in findings {
        let mut cat = Cell::new(f.category.as_str());
        if ctx.color_out {
            cat = cat.fg(match f.category {
                DriftCategory::Orphaned | DriftCategory::StateMismatch => Color::Red,
                DriftCategory::Unreachable => Color::Yellow,
                _ => Color::Magenta,
            });
        }
        table.add_row(vec![
            Cell::new(&f.id),
            cat,
            Cell::new(&f.place),
            Cell::new(&f.summary),
            Cell::new(f.evidence.join("\n")),
            Cell::new(f.resolve.join("\n")),
        ]);
    }
    crate::outln!("{table}");
}

pub fn sync(ctx: &Context, args: SyncArgs) -> Status {
    let mode = if let Some(id) = args.adopt {
        SyncMode::Adopt { id }
    } else if let Some(id) = args.kill {
        SyncMode::Kill { id }
    } else if let Some(name) = args.forget {
        SyncMode::Forget { name }
    } else if args.auto {
        SyncMode::Auto
    } else {
        SyncMode::DryRun
    };
    let definition = match definition(ctx) {
        Ok(d) => d,
        Err(s) => return s,
    };
    let params = SyncParams {
        mode,
        project: ctx.project.clone(),
        definition,
    };
    smol::block_on(async {
        let client = match connect(ctx).await {
            Ok(c) => c,
            Err(s) => return s,
        };
        let result: SyncResult = match client.call::<method::DriftSync>(&params).await {
            Ok(r) => r,
            Err(e) => return request_failed("sync", e),
        };
        if ctx.json() {
            print_json(&result);
        } else {
            for a in &result.actions {
                let verb = serde_json::to_value(a.action)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let mark = match (result.dry_run, a.done) {
                    (true, _) => "would",
                    (false, true) => "done",
                    (false, false) => "FAILED",
                };
                crate::outln!("{mark} {verb} {}: {}", a.finding, a.detail);
            }
            if result.actions.is_empty() {
                crate::outln!("nothing to do");
            }
            if !result.left.is_empty() {
                crate::outln!("left for a human:");
                print_findings(ctx, &result.left);
            }
        }
        if result.actions.iter().any(|a| !a.done && !result.dry_run) {
            Status::Failed
        } else {
            Status::Ok
        }
    })
}
