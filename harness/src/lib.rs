//! The harness CLI and daemon, as a library for its two executables: `harness` (the CLI, which can
//! also run the daemon in-process) and `harnessd` (the daemon alone, without the CLI's code).
//! Parsing lives in `cli`, each command in `commands/<name>.rs`; the CLI reaches the daemon through
//! `client`, and the daemon (`daemon/`) serves one handler per method in `daemon/handlers/<method>.rs`.

pub mod cli;
pub mod client;
pub mod commands;
pub mod daemon;
pub mod dashboard;
pub mod output;
