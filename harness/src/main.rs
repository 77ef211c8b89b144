//! `harness`: the CLI and the daemon. Parsing lives in `cli`, each command in `commands/<name>.rs`;
//! the CLI reaches the daemon through `client`, and the daemon (`daemon/`) serves one handler per
//! method in `daemon/handlers/<method>.rs`.

mod cli;
mod client;
mod commands;
mod daemon;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
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
