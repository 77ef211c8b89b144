//! The fault suite (issue 11): real faults on the testbed's hosts and engines, and on the daemon
//! itself, each test asserting the guarantee — nothing lost, nothing orphaned, no duplicate,
//! status never claims what it has not verified — and printing what it measured.
//!
//! Quick by default (CI); `HARNESS_FAULT_ROUNDS=N` runs N rounds of the randomised tests.
//! Tests that break a host hold [`common::faults::host_lock`], so they never break each other's
//! host; every host is repaired (link up, sshd running) when such a test ends, also on panic.

mod common;

#[path = "faults/daemon.rs"]
mod daemon;
#[path = "faults/deploy.rs"]
mod deploy;
#[path = "faults/docker.rs"]
mod docker;
#[path = "faults/hosts.rs"]
mod hosts;
