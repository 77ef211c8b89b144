//! `harness completions SHELL`.

use std::io::Write;

use clap::CommandFactory;

use super::Status;
use crate::cli::Cli;

pub fn run(shell: clap_complete::Shell) -> Status {
    // Rendered first, then written: `generate` panics when its writer fails (`| head`).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "harness", &mut script);
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(&script).and_then(|()| out.flush()) {
        crate::output::exit_on_write_error(&e);
    }
    Status::Ok
}
