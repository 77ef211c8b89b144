//! One module per command. A command takes the [`Context`] and its own arguments and returns a
//! [`Status`]; it prints its own output.
//!
//! To add a command: a variant in `cli::Command`, a `commands/<name>.rs` with
//! `pub fn run(ctx: &Context, ...) -> Status`, and one arm in [`run`].

pub mod completions;
mod config_deps;
mod config_schema;
mod config_show;
mod daemon;
mod daemon_info;
mod dashboard;
pub mod deploy;
mod drift;
mod events;
mod exec;
mod health;
mod heap;
mod hosts_check;
mod logs;
mod markers;
pub mod network;
pub mod ops;
pub mod package;
mod request_size;
mod restart;
mod scale;
mod start;
mod status;
mod stop;
mod token;
pub(crate) mod top;
mod up;
mod validate;
mod watch;
mod yaml_bound;

use harness_config::Project;
use harness_protocol::Client;

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

/// Runs the command; the process exit code (`exec` passes its command's through).
pub fn run(cli: Cli) -> u8 {
    let ctx = Context::new(&cli);
    let status = match cli.command {
        Command::Exec {
            service,
            command,
            no_tty,
            tty,
        } => {
            let tty = match (tty, no_tty) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            return exec::run(&ctx, &service, command, tty);
        }
        Command::Validate => validate::run(&ctx),
        Command::Start {
            services,
            remove_orphans,
        } => start::run(&ctx, services, remove_orphans),
        Command::Stop {
            services,
            force,
            timeout,
        } => stop::run(&ctx, services, force, timeout),
        Command::Restart { services } => restart::run(&ctx, services),
        Command::Up { services, detach } => up::run(&ctx, services, detach),
        Command::Down { timeout } => up::down(&ctx, timeout),
        Command::Watch { services } => watch::run(&ctx, services),
        Command::Status { watch, all } => status::run(&ctx, watch, all),
        Command::Scale { targets } => scale::run(&ctx, targets),
        Command::Logs(args) => logs::run(&ctx, args),
        Command::Health { service } => health::run(&ctx, service),
        Command::Events { since, no_follow } => events::run(&ctx, since, no_follow),
        Command::Ops(args) => ops::run(&ctx, args),
        Command::Daemon(cmd) => daemon::run(&ctx, cmd),
        Command::Config(ConfigCommand::Show {
            resolved: true,
            show_secrets: _,
            origins: _,
        }) => config_show::resolved(&ctx),
        Command::Config(ConfigCommand::Show {
            show_secrets,
            origins,
            resolved: false,
        }) => config_show::run(&ctx, show_secrets, origins),
        Command::Config(ConfigCommand::Deps) => config_deps::run(&ctx),
        Command::Config(ConfigCommand::Schema) => config_schema::run(&ctx),
        Command::Package(cmd) => package::run(&ctx, cmd),
        Command::Deploy(args) => deploy::run(&ctx, args),
        Command::Hosts(crate::cli::HostsCommand::Check) => hosts_check::run(&ctx),
        Command::Drift => drift::run(&ctx),
        Command::Sync(args) => drift::sync(&ctx, args),
        Command::Token(cmd) => token::run(&ctx, cmd),
        Command::Top { watch, all } => top::run(&ctx, watch, all),
        Command::Network(cmd) => network::run(&ctx, cmd),
        Command::Completions { shell } => completions::run(shell),
        Command::Manpage => completions::manpage(),
        Command::Dashboard { no_open } => dashboard::run(&ctx, no_open),
    };
    status as u8
}

/// The project a daemon command acts on: `-p NAME`, else the name in the services file (which
/// must then be valid).
pub fn project_name(ctx: &Context) -> Result<String, Status> {
    match &ctx.project {
        Some(name) => Ok(name.clone()),
        None => load_project(ctx).map(|p| p.name),
    }
}

/// Connects to the daemon (auto-starting a local one when allowed); prints why not on failure.
pub async fn connect(ctx: &Context) -> Result<Client, Status> {
    crate::client::connect(&ctx.daemon).await.map_err(|e| {
        crate::errln!("error: {e:#}");
        Status::Failed
    })
}

/// Prints a failed request's error and gives the status for it.
pub fn request_failed(what: &str, e: harness_protocol::ClientError) -> Status {
    match &e {
        harness_protocol::ClientError::Remote(w) => crate::errln!("error: {what}: {}", w.message),
        _ => crate::errln!("error: {what}: {e}"),
    }
    match e {
        harness_protocol::ClientError::Remote(w)
            if w.code == harness_protocol::ErrorCode::InvalidParams =>
        {
            Status::Invalid
        }
        _ => Status::Failed,
    }
}

/// [`load_project`] for the commands that start services (`-p NAME` names the project).
pub fn load_selected_project(ctx: &Context) -> Result<Project, Status> {
    load_project(ctx)
}

/// What the command line adds to the files: profiles, `-p`, replica counts.
pub fn load_options(ctx: &Context) -> harness_config::LoadOptions {
    harness_config::LoadOptions {
        profiles: ctx.profiles.clone(),
        project_name: ctx.project.clone(),
        replicas: Default::default(),
    }
}

/// The services file and its override files, with the command line's options.
pub fn load(ctx: &Context, options: &harness_config::LoadOptions) -> harness_config::Loaded {
    harness_config::load_files(&ctx.files, options)
}

/// Loads the services file for a command that needs a valid one. On errors, prints them
/// (JSON on stdout with `-o json`, rendered on stderr otherwise) and gives the exit status.
pub fn load_project(ctx: &Context) -> Result<Project, Status> {
    load_project_with(ctx, &load_options(ctx))
}

pub fn load_project_with(
    ctx: &Context,
    options: &harness_config::LoadOptions,
) -> Result<Project, Status> {
    let loaded = load(ctx, options);
    if loaded.is_valid()
        && let Some(project) = loaded.project
    {
        return Ok(project);
    }
    if ctx.json() {
        print_json(&loaded.errors);
    } else {
        crate::errout!("{}", ctx.render_diagnostics(&loaded));
        crate::errln!(
            "error: {} is invalid; run `harness validate` for details",
            ctx.file.display()
        );
    }
    Err(Status::Invalid)
}

/// Ctrl-C and TERM as a stream, for commands that run until interrupted (`events`, `up`).
pub(crate) fn interrupt_signals() -> Result<async_signal::Signals, Status> {
    async_signal::Signals::new([async_signal::Signal::Int, async_signal::Signal::Term]).map_err(
        |e| {
            crate::errln!("error: cannot handle signals: {e}");
            Status::Failed
        },
    )
}
