//! `harness validate`: every problem in the services file, with where and how to fix it.

use harness_config::Diagnostic;

use super::Status;
use crate::output::{Context, plural, print_json};

pub fn run(ctx: &Context) -> Status {
    let loaded = super::load(ctx, &super::load_options(ctx));
    if ctx.json() {
        let all: Vec<&Diagnostic> = loaded.diagnostics().collect();
        print_json(&all);
    } else {
        eprint!("{}", ctx.render_diagnostics(&loaded));
        let file = ctx.file.display();
        match &loaded.project {
            Some(project) if loaded.is_valid() => println!(
                "{file}: valid: {}, {}",
                plural(project.services.len(), "service"),
                plural(loaded.warnings.len(), "warning")
            ),
            _ => eprintln!(
                "{file}: invalid: {}, {}",
                plural(loaded.errors.len(), "error"),
                plural(loaded.warnings.len(), "warning")
            ),
        }
    }
    if loaded.is_valid() {
        Status::Ok
    } else {
        Status::Invalid
    }
}
