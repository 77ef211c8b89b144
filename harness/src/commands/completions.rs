//! `harness completions SHELL`.

use clap::CommandFactory;

use super::Status;
use crate::cli::Cli;

pub fn run(shell: clap_complete::Shell) -> Status {
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "harness",
        &mut std::io::stdout(),
    );
    Status::Ok
}
