//! Open files. Every service the daemon looks after holds a few file descriptors in the daemon
//! (its raw output files, its log, a pidfd or an ssh channel), so the soft `RLIMIT_NOFILE` a shell
//! hands down (often 1024) runs out long before the machine does: past it, launches failed with
//! "Too many open files" and the daemon could no longer accept connections. So the daemon raises
//! its soft limit to the hard limit at start, keeps a reserve for itself (API connections, the
//! registry, log readers), and refuses a start that would run more services than the rest allows,
//! saying so and how to raise the limit.

use std::collections::{BTreeSet, HashSet};

use harness_config::Project;

/// Descriptors each service is budgeted: two raw output files, the log file, a pidfd or ssh
/// channel, and one spare for its health checks and log readers.
pub const PER_SERVICE: u64 = 5;
/// Descriptors kept for the daemon itself: the registry, its listener, up to 256 API connections
/// (each a socket and a TLS session), log readers and spawns in flight.
pub const RESERVED: u64 = 400;
/// What we count as unlimited.
const UNLIMITED: u64 = 1 << 20;

/// The daemon's open-file limit and how many services it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The soft `RLIMIT_NOFILE` now in force.
    pub limit: u64,
    /// The hard limit (the most an unprivileged process can raise its soft limit to).
    pub hard: u64,
    pub max_services: usize,
}

impl Budget {
    fn of(limit: u64, hard: u64) -> Budget {
        let max = limit.saturating_sub(RESERVED) / PER_SERVICE;
        Budget {
            limit,
            hard,
            max_services: usize::try_from(max).unwrap_or(usize::MAX),
        }
    }

    /// The limit as it is now (for `daemon status`).
    pub fn current() -> Budget {
        let r = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        let soft = r.current.unwrap_or(UNLIMITED).min(UNLIMITED);
        let hard = r.maximum.unwrap_or(UNLIMITED).min(UNLIMITED);
        Budget::of(soft, hard)
    }

    /// The error for a start that would have `wanted` services active, if that is over budget.
    pub fn check(&self, wanted: usize, already: usize) -> Result<(), String> {
        if wanted <= self.max_services {
            return Ok(());
        }
        Err(format!(
            "this start would have {wanted} services running ({already} already are), {} more \
             than this machine allows: the daemon's open-file limit is {} (hard limit {}), which \
             gives {} services at {PER_SERVICE} descriptors each after {RESERVED} for the daemon; \
             raise the hard limit (`ulimit -Hn`, or LimitNOFILE= for a systemd unit) and restart \
             the daemon, or start fewer services",
            wanted - self.max_services,
            self.limit,
            self.hard,
            self.max_services
        ))
    }
}

/// Raises the soft open-file limit to the hard limit; the budget that results.
pub fn raise() -> Budget {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let r = getrlimit(Resource::Nofile);
    if r.current != r.maximum {
        let raised = Rlimit {
            current: r.maximum,
            maximum: r.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!("cannot raise the open-file limit to the hard limit: {e}");
        }
    }
    let budget = Budget::current();
    presize_table(budget.limit);
    budget
}

/// Descriptors the table holds from the start (about 600 services' worth).
const TABLE_AT_START: u64 = 2048;

/// Grows the kernel's descriptor table of this process once, while it has one thread. The table
/// starts at 64 slots and doubles when full; in a process with more than one thread each doubling
/// waits for an RCU grace period (`expand_files` → `synchronize_rcu`, 10-20 ms on a 2-core VM),
/// during which every thread that opens a descriptor waits too. A cold start of 100 services
/// grew it three times (to 512) in the middle of its launches. Taking a high slot and closing it
/// sizes the table for good (it never shrinks); it costs 16 KiB of kernel memory, none of the
/// daemon's own. Call before any thread is started.
fn presize_table(limit: u64) {
    let top = TABLE_AT_START.min(limit).saturating_sub(1);
    if top < 64 {
        return;
    }
    if let Ok(fd) = rustix::io::fcntl_dupfd_cloexec(rustix::stdio::stderr(), top as i32) {
        drop(fd);
    }
}

/// The services of `project` a start of `selected` (empty: all) runs: them and everything they
/// depend on.
pub fn started_by(project: &Project, selected: &[String]) -> BTreeSet<String> {
    if selected.is_empty() {
        return project.services.keys().cloned().collect();
    }
    let mut out = BTreeSet::new();
    let mut todo: Vec<&str> = selected.iter().map(String::as_str).collect();
    let mut seen = HashSet::new();
    while let Some(name) = todo.pop() {
        if !seen.insert(name) {
            continue;
        }
        if let Some(s) = project.services.get(name) {
            out.insert(name.to_owned());
            todo.extend(s.depends_on.keys().map(String::as_str));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_leaves_the_reserve_and_names_the_excess() {
        let b = Budget::of(1024, 4096);
        assert_eq!(b.max_services, (1024 - 400) / 5);
        assert!(b.check(b.max_services, 0).is_ok());
        let e = b.check(b.max_services + 7, 3).unwrap_err();
        assert!(
            e.contains("7 more") && e.contains("1024") && e.contains("ulimit -Hn"),
            "{e}"
        );
        assert_eq!(Budget::of(100, 100).max_services, 0);
    }
}
