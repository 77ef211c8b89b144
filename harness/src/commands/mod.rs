//! One module per command. A command takes the [`Context`] and its own arguments and returns a
//! [`Status`]; it prints its own output.
//!
//! To add a command: a variant in `cli::Command`, a `commands/<name>.rs` with
//! `pub fn run(ctx: &Context, ...) -> Status`, and one arm in [`run`].

mod completions;
mod config_deps;
mod config_schema;
mod config_show;
mod validate;

use harness_config::Project;

use crate::cli::{Cli, Command, ConfigCommand};
use crate::output::{Context, print_json};

/// The process exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Ok = 0,
    /// The operation failed (a service did not start, the daemon refused...).
    Failed = 1,
    /// Bad usage or an invalid services file.
    Invalid = 2,
}

pub fn run(cli: Cli) -> Status {
    let ctx = Context::new(&cli);
    match cli.command {
        Command::Validate => validate::run(&ctx),
        Command::Config(ConfigCommand::Show { show_secrets }) => {
            config_show::run(&ctx, show_secrets)
        }
        Command::Config(ConfigCommand::Deps) => config_deps::run(&ctx),
        Command::Config(ConfigCommand::Schema) => config_schema::run(&ctx),
        Command::Completions { shell } => completions::run(shell),
    }
}

/// Loads the services file for a command that needs a valid one. On errors, prints them
/// (JSON on stdout with `-o json`, rendered on stderr otherwise) and gives the exit status.
pub fn load_project(ctx: &Context) -> Result<Project, Status> {
    let loaded = harness_config::load(&ctx.file);
    if loaded.is_valid()
        && let Some(project) = loaded.project
    {
        return Ok(project);
    }
    if ctx.json() {
        print_json(&loaded.errors);
    } else {
        eprint!("{}", ctx.render_diagnostics(&loaded));
        eprintln!(
            "error: {} is invalid; run `harness validate` for details",
            ctx.file.display()
        );
    }
    Err(Status::Invalid)
}
