//! Fixtures shared by the harness integration tests in this folder.
pub mod testbed_env;
