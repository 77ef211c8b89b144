//! The one reader of this machine's `/proc`: process start times (which tell a live process from a
//! reused pid), the process table (group, session, parent), the launch id a service carries in
//! its environment, and who listens on a TCP port (`/proc/net/tcp{,6}` and `/proc/PID/fd`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// Whether `pid` (the process started at `start_time`) and every process below it are asleep,
/// waiting for something (state `S`): none is runnable, in disk wait, stopped or exited. Any doubt
/// (a process gone meanwhile, an unreadable file) answers false.
pub fn tree_waiting(pid: u32, start_time: u64) -> bool {
    let mut todo = vec![pid];
    let mut seen = 0;
    while let Some(p) = todo.pop() {
        seen += 1;
        if seen > 4096 {
            return false;
        }
        let Ok(text) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            return false;
        };
        let Some(f) = stat_fields(&text) else {
            return false;
        };
        if f.first() != Some(&"S") {
            return false;
        }
        if p == pid && f.get(19).and_then(|s| s.parse::<u64>().ok()) != Some(start_time) {
            return false;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            return false;
        };
        for t in tasks.flatten() {
            let Ok(children) = std::fs::read_to_string(t.path().join("children")) else {
                return false;
            };
            todo.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    true
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
pub fn owned(pid: u32) -> Vec<(u32, u64)> {
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
pub fn descendants(pid: u32) -> Vec<(u32, u64)> {
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

/// A TCP socket listening in this process's network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub addr: IpAddr,
    pub port: u16,
    /// The socket's inode, which `/proc/PID/fd` links name (`socket:[INODE]`).
    pub inode: u64,
}

impl Listener {
    /// Whether a process binding `addr:port` would collide with this listener: same port, and
    /// the same address or a wildcard on either side (`0.0.0.0`, `::`).
    pub fn blocks(&self, addr: IpAddr, port: u16) -> bool {
        let same = |a: IpAddr, b: IpAddr| match (a, b) {
            (IpAddr::V6(v6), IpAddr::V4(v4)) | (IpAddr::V4(v4), IpAddr::V6(v6)) => {
                v6.to_ipv4_mapped() == Some(v4)
            }
            _ => a == b,
        };
        self.port == port
            && (self.addr.is_unspecified() || addr.is_unspecified() || same(self.addr, addr))
    }
}

/// Every TCP socket in the LISTEN state, IPv4 and IPv6 (a missing table, such as tcp6 without
/// IPv6, is empty).
pub fn tcp_listeners() -> Vec<Listener> {
    let mut out = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        if let Ok(text) = std::fs::read_to_string(file) {
            out.extend(parse_net_tcp(&text, v6));
        }
    }
    out
}

/// The LISTEN rows of a /proc/net/tcp (or tcp6) table.
fn parse_net_tcp(text: &str, v6: bool) -> Vec<Listener> {
    const LISTEN: &str = "0A";
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(3) != Some(&LISTEN) {
                return None;
            }
            let (addr, port) = f.get(1)?.split_once(':')?;
            Some(Listener {
                addr: parse_hex_addr(addr, v6)?,
                port: u16::from_str_radix(port, 16).ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// An address as the kernel prints it: 32-bit words in hex, each in the machine's byte order.
fn parse_hex_addr(hex: &str, v6: bool) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    if v6 {
        if hex.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for i in 0..4 {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
        }
        Some(IpAddr::V6(Ipv6Addr::from(bytes)))
    } else {
        (hex.len() == 8).then_some(())?;
        Some(IpAddr::V4(Ipv4Addr::from(word(0)?)))
    }
}

/// A process holding a socket open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOwner {
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`).
    pub name: String,
}

/// The processes holding each of `inodes` open, by inode. Reads only the fd tables this process
/// may read (its own user's, or all as root): an inode missing from the answer has an owner that
/// cannot be known from here.
pub fn socket_owners(inodes: &[u64]) -> BTreeMap<u64, Vec<SocketOwner>> {
    let mut out: BTreeMap<u64, Vec<SocketOwner>> = BTreeMap::new();
    if inodes.is_empty() {
        return out;
    }
    let wanted: BTreeSet<u64> = inodes.iter().copied().collect();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Some(inode) = socket_inode(&fd.path()) else {
                continue;
            };
            if wanted.contains(&inode) {
                let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map(|c| c.trim_end().to_owned())
                    .unwrap_or_default();
                let owners = out.entry(inode).or_default();
                if !owners.iter().any(|o| o.pid == pid) {
                    owners.push(SocketOwner { pid, name });
                }
            }
        }
    }
    out
}

/// The socket inode an fd link names (`socket:[INODE]`).
fn socket_inode(fd: &std::path::Path) -> Option<u64> {
    let link = std::fs::read_link(fd).ok()?;
    link.to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The socket inodes `pid` holds open; `None` when its fd table cannot be read from here
/// (another user's process) or it is gone.
pub fn socket_inodes(pid: u32) -> Option<Vec<u64>> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(
        fds.flatten()
            .filter_map(|fd| socket_inode(&fd.path()))
            .collect(),
    )
}

/// Who listens where `addr:port` would bind: each colliding listener with its owners (empty
/// when they cannot be read from here).
pub fn port_users(addr: IpAddr, port: u16) -> Vec<(Listener, Vec<SocketOwner>)> {
    let listeners: Vec<Listener> = tcp_listeners()
        .into_iter()
        .filter(|l| l.blocks(addr, port))
        .collect();
    let inodes: Vec<u64> = listeners.iter().map(|l| l.inode).collect();
    let mut owners = socket_owners(&inodes);
    listeners
        .into_iter()
        .map(|l| {
            let o = owners.remove(&l.inode).unwrap_or_default();
            (l, o)
        })
        .collect()
}

/// The command line of `pid`, its arguments joined by spaces (at most `max` bytes), if readable.
pub fn cmdline(pid: u32, max: usize) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut s: String = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    /// Polls `f` until it holds (at most 5 s).
    fn eventually(f: impl Fn() -> bool) -> bool {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < until {
            if f() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn a_tree_asleep_is_waiting_and_a_busy_child_or_an_exited_process_is_not() {
        let spawn = |script: &str| {
            std::process::Command::new("sh")
                .args(["-c", script])
                .spawn()
                .unwrap()
        };
        // A shell waiting for its sleeping child: the whole tree is asleep.
        let mut asleep = spawn("sleep 86437; true");
        let st = super::start_time(asleep.id()).unwrap();
        assert!(eventually(|| super::tree_waiting(asleep.id(), st)));
        // The wrong start time is another process.
        assert!(!super::tree_waiting(asleep.id(), st + 1));
        // A shell waiting for a child that never sleeps: never all asleep.
        let mut busy = spawn("sh -c 'while :; do :; done'; true");
        let bst = super::start_time(busy.id()).unwrap();
        assert!(eventually(|| {
            std::fs::read_to_string(format!("/proc/{}/task/{}/children", busy.id(), busy.id()))
                .is_ok_and(|c| !c.trim().is_empty())
        }));
        for _ in 0..20 {
            assert!(!super::tree_waiting(busy.id(), bst));
        }
        // Exited and not yet reaped (a zombie): not waiting.
        let mut done = spawn("exit 7");
        let dst = super::start_time(done.id()).unwrap_or(0);
        assert!(eventually(|| super::is_dead(done.id())));
        assert!(!super::tree_waiting(done.id(), dst));
        let _ = done.wait();
        for c in [&mut asleep, &mut busy] {
            // The whole group: the shells' children too.
            let _ = std::process::Command::new("pkill")
                .args(["-KILL", "-P", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }

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

    #[test]
    fn net_tcp_rows_parse() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F91 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4243 1 0000000000000000 100 0 0 10 0
";
        let l = super::parse_net_tcp(v4, false);
        assert_eq!(l.len(), 1, "{l:?}");
        if cfg!(target_endian = "little") {
            assert_eq!(l[0].addr, "127.0.0.1".parse::<std::net::IpAddr>().unwrap());
        }
        assert_eq!((l[0].port, l[0].inode), (8080, 4242));
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0
";
        let l = super::parse_net_tcp(v6, true);
        assert_eq!(l.len(), 1);
        assert!(l[0].addr.is_unspecified());
        assert!(l[0].blocks("127.0.0.1".parse().unwrap(), 8080));
        assert!(!l[0].blocks("127.0.0.1".parse().unwrap(), 8081));
    }

    #[test]
    fn finds_the_owner_of_its_own_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let users = super::port_users("127.0.0.1".parse().unwrap(), port);
        assert_eq!(users.len(), 1, "{users:?}");
        assert!(
            users[0].1.iter().any(|o| o.pid == std::process::id()),
            "{users:?}"
        );
        assert!(super::port_users("127.0.0.2".parse().unwrap(), port).is_empty());
    }
}

/// What `/proc` says about one process's resource use at one moment (`harness top`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub pid: u32,
    /// Field 22 of /proc/PID/stat, to tell a reused pid.
    pub start_time: u64,
    /// utime + stime (fields 14 and 15), in clock ticks.
    pub cpu_ticks: u64,
    /// Field 20.
    pub threads: u64,
    /// Field 24, in pages.
    pub rss_pages: u64,
    /// Entries of /proc/PID/fd; `None` when they cannot be read (another user's process).
    pub fds: Option<u64>,
}

/// The figures of `stat` (the text of /proc/PID/stat) and `fds`.
fn usage_of(pid: u32, stat: &str, fds: Option<u64>) -> Option<Usage> {
    let f = stat_fields(stat)?;
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(Usage {
        pid,
        cpu_ticks: n(11)? + n(12)?,
        threads: n(17)?,
        start_time: n(19)?,
        rss_pages: n(21)?,
        fds,
    })
}

/// A process of this machine (blocking: call it off the executor).
pub fn usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count() as u64);
    usage_of(pid, &stat, fds)
}

/// Seconds since this machine booted (/proc/uptime), the clock CPU time is measured against.
pub fn uptime() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Clock ticks per second and page size here.
pub fn units() -> (u64, u64) {
    (
        rustix::param::clock_ticks_per_second(),
        rustix::param::page_size() as u64,
    )
}

/// Readings of several processes of one machine, with its clock and units.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageBatch {
    /// Seconds since that machine booted, when it was read.
    pub uptime: f64,
    pub ticks_per_sec: u64,
    pub page_size: u64,
    /// The processes that exist, by pid.
    pub processes: BTreeMap<u32, Usage>,
}

/// This machine's `pids` (blocking).
pub fn usage_batch(pids: &[u32]) -> Option<UsageBatch> {
    let (ticks_per_sec, page_size) = units();
    Some(UsageBatch {
        uptime: uptime()?,
        ticks_per_sec,
        page_size,
        processes: pids
            .iter()
            .filter_map(|&p| usage(p).map(|u| (p, u)))
            .collect(),
    })
}

/// A POSIX sh script that prints, for another machine, what [`parse_usage_batch`] reads: one run
/// over ssh samples every process of that host (not one ssh per service).
pub fn usage_script(pids: &[u32]) -> String {
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    format!(
        "echo \"units $(getconf CLK_TCK) $(getconf PAGESIZE)\"; echo \"uptime $(cut -d' ' -f1 /proc/uptime)\"; \
         for p in {}; do if s=$(cat /proc/$p/stat 2>/dev/null); then \
         if f=$(ls /proc/$p/fd 2>/dev/null); then n=$(printf '%s\\n' \"$f\" | grep -c .); else n=-; fi; \
         echo \"proc $p $n $s\"; fi; done",
        if list.is_empty() {
            "0".to_owned()
        } else {
            list.join(" ")
        }
    )
}

/// Reads the output of [`usage_script`].
pub fn parse_usage_batch(text: &str) -> Option<UsageBatch> {
    let mut units = None;
    let mut uptime = None;
    let mut processes = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.splitn(4, ' ');
        match words.next() {
            Some("units") => {
                let hz = words.next()?.trim().parse().ok()?;
                let page = words.next()?.trim().parse().ok()?;
                units = Some((hz, page));
            }
            Some("uptime") => uptime = words.next()?.trim().parse().ok(),
            Some("proc") => {
                let (Some(pid), Some(fds), Some(stat)) = (words.next(), words.next(), words.next())
                else {
                    continue;
                };
                let Ok(pid) = pid.parse::<u32>() else {
                    continue;
                };
                if let Some(u) = usage_of(pid, stat, fds.parse().ok()) {
                    processes.insert(pid, u);
                }
            }
            _ => {}
        }
    }
    let (ticks_per_sec, page_size) = units?;
    Some(UsageBatch {
        uptime: uptime?,
        ticks_per_sec,
        page_size,
        processes,
    })
}

#[cfg(test)]
mod usage_tests {
    use super::*;

    #[test]
    fn this_process_and_the_script_agree() {
        let me = std::process::id();
        let batch = usage_batch(&[me, u32::MAX]).expect("batch");
        let u = batch.processes.get(&me).expect("this process");
        assert!(u.threads >= 1 && u.rss_pages > 0 && u.fds.is_some_and(|n| n > 0));
        assert!(!batch.processes.contains_key(&u32::MAX));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(usage_script(&[me, u32::MAX]))
            .output()
            .expect("sh");
        let parsed =
            parse_usage_batch(&String::from_utf8_lossy(&out.stdout)).expect("script output");
        assert_eq!(parsed.ticks_per_sec, batch.ticks_per_sec);
        assert_eq!(parsed.page_size, batch.page_size);
        let v = parsed.processes.get(&me).expect("this process via sh");
        assert_eq!(v.start_time, u.start_time);
        assert!(v.fds.is_some());
        assert_eq!(parsed.processes.len(), 1);
    }
}
