//! `harness`: the CLI. The daemon it starts is `harnessd` when that is installed beside it (see
//! `harness::daemon::executable`), else this same program in `daemon run` mode.

use std::process::ExitCode;

use clap::Parser;
use harness::{cli, commands};

fn main() -> ExitCode {
    // `COMPLETE=bash harness ...`: a completion request from the shell (see `completions`).
    clap_complete::CompleteEnv::with_factory(<cli::Cli as clap::CommandFactory>::command)
        .complete();
    let cli = match cli::Cli::try_parse() {
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
