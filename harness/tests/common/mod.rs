//! Fixtures shared by the harness integration tests in this folder.
pub mod faults;
pub mod pty;
pub mod testbed_env;
