//! The daemon and the CLI end to end, through the real binary with real processes. Each test has
//! its own `$HARNESS_HOME`, so its own daemon on its own port, and they run in parallel.

mod acceptance;
mod admin;
mod commands;
mod common;
mod compose;
mod exec;
mod flood;
mod hygiene;
mod lean;
mod no_pidfd;
mod ops;
mod proxy;
mod tokens;
mod truth_at_start;
mod up;
mod watch;
