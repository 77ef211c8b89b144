//! `harness validate`: every problem in the services file, with where and how to fix it.

use harness_config::Diagnostic;

use super::Status;
use crate::output::{Context, plural, print_json};

pub fn run(ctx: &Context) -> Status {
    let mut loaded = super::load(ctx, &super::load_options(ctx));
    if let Some(project) = &loaded.project
        && let Some(d) = too_large(ctx, project)
    {
        loaded.errors.push(d);
    }
    if ctx.json() {
        let all: Vec<&Diagnostic> = loaded.diagnostics().collect();
        print_json(&all);
    } else {
        crate::errout!("{}", ctx.render_diagnostics(&loaded));
        let file = ctx.file.display();
        match &loaded.project {
            Some(project) if loaded.is_valid() => crate::outln!(
                "{file}: valid: {}, {}",
                plural(project.services.len(), "service"),
                plural(loaded.warnings.len(), "warning")
            ),
            _ => crate::errln!(
                "{file}: invalid: {}, {}",
                plural(loaded.errors.len(), "error"),
                plural(loaded.warnings.len(), "warning")
            ),
        }
    }
    let status = if loaded.is_valid() {
        Status::Ok
    } else {
        Status::Invalid
    };
    // The process exits next: freeing a large model node by node would only delay the exit.
    std::mem::forget(loaded);
    status
}

/// The error `start` would give for a project over the daemon's request limit.
fn too_large(ctx: &Context, project: &harness_config::Project) -> Option<Diagnostic> {
    let params = harness_protocol::wire::StartParams {
        project: project.name.clone(),
        yaml: serde_saphyr::to_string(project).ok()?,
        dir: std::path::absolute(&ctx.file).ok()?.display().to_string(),
        services: Vec::new(),
        remove_orphans: false,
        scale: None,
    };
    let len = serde_json::to_string(&params).ok()?.len();
    super::request_size::check(&ctx.file, project, len)
}
