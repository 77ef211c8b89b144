//! The one reader of this machine's `/proc`: process start times (which tell a live process from a
//! reused pid), the process table (group, session, parent) and the launch id a service carries in
//! its environment.

use std::collections::BTreeSet;

/// The fields of /proc/PID/stat after the command name (field 3, the state, first). The name may
/// hold spaces and parentheses, so it is cut at the last `)`.
pub(crate) fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

/// One row of /proc: pid, parent, group, session, start time, zombie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcRow {
    pub pid: u32,
    pub ppid: u32,
    pub pgrp: u32,
    pub session: u32,
    /// Field 22 of /proc/PID/stat: clock ticks since boot at fork.
    pub start_time: u64,
    pub zombie: bool,
}

/// The row of `pid`, if it exists.
pub fn stat(pid: u32) -> Option<ProcRow> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    row(pid, &text)
}

fn row(pid: u32, text: &str) -> Option<ProcRow> {
    let f = stat_fields(text)?;
    Some(ProcRow {
        pid,
        zombie: *f.first()? == "Z",
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        session: f.get(3)?.parse().ok()?,
        start_time: f.get(19)?.parse().ok()?,
    })
}

/// The start time of `pid` (field 22 of /proc/PID/stat), if it exists.
pub fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|r| r.start_time)
}

/// True when `pid` is gone or a zombie.
pub fn is_dead(pid: u32) -> bool {
    stat(pid).is_none_or(|r| r.zombie)
}

/// Every process on this machine.
pub fn table() -> Vec<ProcRow> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        stat(pid)
    })
    .collect()
}

/// Live processes that belong to the service led by `pid`: its process group, its session, and
/// every descendant of those (a grandchild that called setsid left both, but is still a
/// descendant while its parents live). Pid plus start time, so a reused pid is never hit.
pub(crate) fn owned(pid: u32) -> Vec<(u32, u64)> {
    let table = table();
    let mut set: BTreeSet<u32> = table
        .iter()
        .filter(|r| r.pid == pid || r.pgrp == pid || r.session == pid)
        .map(|r| r.pid)
        .collect();
    loop {
        let before = set.len();
        for r in &table {
            if set.contains(&r.ppid) {
                set.insert(r.pid);
            }
        }
        if set.len() == before {
            break;
        }
    }
    table
        .iter()
        .filter(|r| !r.zombie && set.contains(&r.pid))
        .map(|r| (r.pid, r.start_time))
        .collect()
}

/// True while a live (not zombie) process is in group or session `pid`.
pub(crate) fn group_alive(pid: u32) -> bool {
    table()
        .iter()
        .any(|r| !r.zombie && (r.pgrp == pid || r.session == pid))
}

/// `pid` and its descendants now, from the kernel's per-thread `children` lists: cheap (only
/// the service's own processes are read), unlike a scan of all of /proc.
pub(crate) fn descendants(pid: u32) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    let mut seen = BTreeSet::new();
    while let Some(p) = todo.pop() {
        if !seen.insert(p) {
            continue;
        }
        let Some(st) = start_time(p) else { continue };
        out.push((p, st));
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(t.path().join("children")) {
                todo.extend(
                    list.split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
    }
    out
}

/// A live process carrying a launch id in its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    pub row: ProcRow,
    /// The value of the variable.
    pub launch_id: String,
}

/// Every live process whose environment has `var` set to a value starting with `prefix`. Reads
/// only environments this process may read (its own user's, or all as root).
pub fn tagged(var: &str, prefix: &str) -> Vec<Tagged> {
    let needle = format!("{var}={prefix}");
    let mut out = Vec::new();
    for r in table() {
        if r.zombie {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{}/environ", r.pid)) else {
            continue;
        };
        for kv in env.split(|&b| b == 0) {
            if kv.starts_with(needle.as_bytes()) {
                let value = &kv[var.len() + 1..];
                out.push(Tagged {
                    row: r,
                    launch_id: String::from_utf8_lossy(value).into_owned(),
                });
                break;
            }
        }
    }
    // Still the same process (pid not reused while its environment was read).
    out.retain(|t| start_time(t.row.pid) == Some(t.row.start_time));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn stat_fields_survive_odd_names() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 12345 0";
        let f = super::stat_fields(stat).unwrap();
        assert_eq!(f[0], "S");
        assert_eq!(f[2], "42");
        assert_eq!(f[19], "12345");
        let r = super::row(42, stat).unwrap();
        assert_eq!(
            (r.ppid, r.pgrp, r.session, r.start_time),
            (1, 42, 42, 12345)
        );
    }

    #[test]
    fn finds_its_own_tag() {
        let me = std::process::id();
        let child = std::process::Command::new("sleep")
            .arg("5")
            .env("HARNESS_TEST_TAG", format!("t/{me}/x"))
            .spawn()
            .unwrap();
        let found = super::tagged("HARNESS_TEST_TAG", &format!("t/{me}/"));
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].row.pid, child.id());
        assert_eq!(found[0].launch_id, format!("t/{me}/x"));
    }
}
