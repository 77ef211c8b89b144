//! `harness`: the CLI. The daemon it starts is `harnessd` when that is installed beside it (see
//! `harness::daemon::executable`), else this same program in `daemon run` mode.

use std::process::ExitCode;

use harness::{cli, commands};

fn main() -> ExitCode {
    // `COMPLETE=bash harness ...`: a completion request from the shell (see `completions`).
    clap_complete::CompleteEnv::with_factory(<cli::Cli as clap::CommandFactory>::command)
        .complete();
    let mut command = <cli::Cli as clap::CommandFactory>::command();
    let parsed = command
        .try_get_matches_from_mut(std::env::args_os())
        .and_then(|mut matches| {
            <cli::Cli as clap::FromArgMatches>::from_arg_matches_mut(&mut matches)
                .map_err(|e| e.format(&mut command.clone()))
        });
    // clap's command tree is freed only by a process that lives on (`harness daemon run`): for a
    // command that exits soon, freeing its thousands of allocations costs more instructions than
    // parsing (`harness status`, bench/results-status2-2026-12-06.md).
    if matches!(
        parsed,
        Ok(cli::Cli {
            command: cli::Command::Daemon(cli::DaemonCommand::Run(_)),
            ..
        })
    ) {
        drop(command);
    } else {
        std::mem::forget(command);
    }
    let cli = match parsed {
        Ok(cli) => cli,
        // --help and --version exit here, before any config or logging is touched.
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(commands::Status::Invalid as u8)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    ExitCode::from(commands::run(cli))
}
