//! Helpers of the fault suite (harness/tests/faults.rs): one host fault at a time, hosts repaired
//! on drop, processes counted by their exact argv, service states from `status -o json`.
#![allow(dead_code)] // each test binary uses part of it

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::Testbed;

use super::testbed_env::Env;

/// Rounds of the randomised tests: `HARNESS_FAULT_ROUNDS`, else `quick`.
pub fn rounds(quick: u32) -> u32 {
    std::env::var("HARNESS_FAULT_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(quick)
}

/// Held by every test that breaks a host: one broken host at a time in this binary. On drop,
/// every host it broke is repaired (link up, sshd started), also when the test panicked.
pub struct HostFault {
    _lock: MutexGuard<'static, ()>,
    links: Vec<String>,
    sshds: Vec<String>,
}

pub fn host_lock() -> HostFault {
    static LOCK: Mutex<()> = Mutex::new(());
    HostFault {
        _lock: LOCK.lock().unwrap_or_else(|p| p.into_inner()),
        links: Vec::new(),
        sshds: Vec::new(),
    }
}

impl HostFault {
    pub fn link_down(&mut self, host: &str) {
        self.links.push(host.to_owned());
        Testbed::get().link_down(host);
    }

    pub fn link_up(&mut self, host: &str) {
        Testbed::get().link_up(host);
        self.links.retain(|h| h != host);
    }

    pub fn sshd_kill(&mut self, host: &str) {
        self.sshds.push(host.to_owned());
        Testbed::get().sshd_kill(host);
    }

    pub fn sshd_start(&mut self, host: &str) {
        Testbed::get().sshd_start(host);
        self.sshds.retain(|h| h != host);
    }
}

impl Drop for HostFault {
    fn drop(&mut self) {
        let tb = Testbed::get();
        for h in std::mem::take(&mut self.links) {
            tb.link_up(&h);
        }
        for h in std::mem::take(&mut self.sshds) {
            tb.sshd_start(&h);
        }
    }
}

/// Polls `f` every 20 ms for up to `within`; the time it took when it became true.
pub fn wait_for(within: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let began = Instant::now();
    while began.elapsed() < within {
        if f() {
            return Some(began.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f().then(|| began.elapsed())
}

/// Live (not zombie) processes whose argv is exactly `argv`, anywhere on this machine (every
/// testbed host shares its pid namespace).
pub fn processes(argv: &[&str]) -> Vec<u32> {
    let mut want = Vec::new();
    for a in argv {
        want.extend_from_slice(a.as_bytes());
        want.push(0);
    }
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let zombie = stat.rsplit(") ").next()?.starts_with('Z');
            (cmd == want && !zombie).then_some(pid)
        })
        .collect()
}

/// The status entry of `name`.
pub fn entry(env: &Env, name: &str) -> Value {
    env.status()
        .into_iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in status"))
}

/// `state.kind` of `name`.
pub fn state(env: &Env, name: &str) -> String {
    entry(env, name)["state"]["kind"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The numbers of `line N` lines in `text`, in order.
pub fn counted(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.rsplit("line ").next()?.trim().parse().ok())
        .collect()
}

/// Panics unless `seq` is 0, 1, 2, ... (nothing lost, nothing twice).
#[track_caller]
pub fn assert_contiguous(what: &str, seq: &[u64]) {
    for (i, n) in seq.iter().enumerate() {
        assert_eq!(
            *n,
            i as u64,
            "{what}: line {i} is {n} (lost or doubled output) around {:?}",
            &seq[i.saturating_sub(3)..(i + 3).min(seq.len())]
        );
    }
}

/// xorshift: random enough for delays, with no dependency.
pub fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

pub fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1
}

/// `hosts:` lines for h1..h3 of the testbed.
pub fn hosts_yaml(tb: &Testbed) -> String {
    let key = tb.var("TB_SSH_KEY").unwrap();
    let mut y = String::from("hosts:\n");
    for h in ["h1", "h2", "h3"] {
        y.push_str(&format!(
            "  {h}: {{address: {}, user: hbuser, identity_file: {key}}}\n",
            tb.host(h).addr
        ));
    }
    y
}
