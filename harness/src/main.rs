//! `harness`: the CLI (and, later, the daemon). Parsing lives in `cli`, each command in
//! `commands/<name>.rs`.

mod cli;
mod commands;
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
    let status = commands::run(cli);
    ExitCode::from(status as u8)
}
