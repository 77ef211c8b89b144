//! Storage and file-descriptor faults, end to end through the real binaries (issue 11): the state
//! directory and a service's log directory filled up (tmpfs, so these tests need root, as
//! tests/run.sh runs them), and the daemon started under a low `RLIMIT_NOFILE`. Each test prints
//! what it measured.

#[allow(dead_code)]
#[path = "daemon/common.rs"]
mod common;

#[path = "faults/storage.rs"]
mod storage;
