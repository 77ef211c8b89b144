//! One cgroup v2 per local service, where the daemon may make them: `stop` then kills the whole
//! cgroup (`cgroup.kill`), so a descendant that double-forked and called `setsid` — out of the
//! service's process group, session and process tree — dies with it.
//!
//! Usable when a cgroup2 hierarchy is mounted and the daemon may create a child of its own cgroup
//! (root, or a subtree delegated to its user). The new process joins its cgroup itself, before
//! `exec`, so no instant exists at which it runs outside it.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where this daemon's service cgroups go: `<its own cgroup>/<name>`, if it may create them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupRoot {
    dir: PathBuf,
}

/// A service's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    dir: PathBuf,
}

/// The cgroup2 mount point, from /proc/self/mountinfo (field 5 is the mount point; the
/// filesystem type follows the ` - ` separator).
fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// This process's cgroup v2 path (the `0::/path` line of /proc/self/cgroup).
fn own_cgroup() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

impl CgroupRoot {
    /// `<own cgroup>/<name>`, created if missing; `None` where cgroups are not usable (no
    /// cgroup2 mount, or no right to create a child of the daemon's own cgroup).
    pub fn detect(name: &str) -> Option<CgroupRoot> {
        let mount = cgroup2_mount()?;
        let own = own_cgroup()?;
        let dir = mount.join(own.trim_start_matches('/')).join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(_) => return None,
        }
        // Joining needs write access to cgroup.procs of the new cgroups.
        let probe = Cgroup::open(&CgroupRoot { dir: dir.clone() }, ".probe").ok()?;
        let ok = std::fs::metadata(probe.dir.join("cgroup.procs")).is_ok();
        probe.remove();
        ok.then_some(CgroupRoot { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Cgroup {
    /// The cgroup `name` under `root`, created if missing.
    pub fn open(root: &CgroupRoot, name: &str) -> std::io::Result<Cgroup> {
        let dir = root.dir.join(name);
        let mkdir = |d: &Path| match std::fs::create_dir(d) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        };
        // The root goes when its last service cgroup does (see `remove`): it may vanish between
        // the two calls, once per concurrent removal.
        let mut tries = 0;
        loop {
            mkdir(&root.dir)?;
            match mkdir(&dir) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 3 => tries += 1,
                other => return other.map(|()| Cgroup { dir }),
            }
        }
    }

    /// The cgroup `name` under `root` if it exists.
    pub fn existing(root: &CgroupRoot, name: &str) -> Option<Cgroup> {
        let dir = root.dir.join(name);
        dir.is_dir().then_some(Cgroup { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory, for a new process to start in (service::spawn).
    pub(crate) fn dir_c(&self) -> std::io::Result<CString> {
        CString::new(self.dir.as_os_str().as_bytes()).map_err(std::io::Error::other)
    }

    /// Pids in the cgroup now.
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// SIGKILLs every process in the cgroup and waits (up to 2 s) until it is empty. Blocking.
    pub fn kill_all(&self) {
        let killed = std::fs::write(self.dir.join("cgroup.kill"), "1").is_ok();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let pids = self.pids();
            if pids.is_empty() || Instant::now() >= deadline {
                return;
            }
            // Kernels before 5.14 have no cgroup.kill: one by one, until none is left.
            if !killed {
                for p in pids {
                    if let Some(pid) = i32::try_from(p)
                        .ok()
                        .and_then(rustix::process::Pid::from_raw)
                    {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Kills what is left and removes the cgroup, and its parent once that is empty (another
    /// service's cgroup keeps it). Blocking.
    pub fn remove(&self) {
        self.kill_all();
        let _ = std::fs::remove_dir(&self.dir);
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

#[cfg(test)]
mod tests {
    /// Runs `cat /proc/self/cgroup` in `cg` (born there by `clone3` if `born`): its cgroup v2
    /// line and its exit code.
    fn cgroup_of_a_child(cg: &super::Cgroup, born: bool) -> (String, Option<i32>) {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let null = || -> std::os::fd::OwnedFd { std::fs::File::open("/dev/null").unwrap().into() };
        let child = crate::service::spawn::spawn_as(
            crate::service::spawn::Spawn {
                program: "cat".as_ref(),
                args: &["/proc/self/cgroup".into()],
                env: Vec::new(),
                cwd: None,
                stdio: [null(), w, null()],
                cgroup: Some(cg.dir_c().unwrap()),
                watch: crate::service::spawn::exit_watch(),
            },
            born,
        )
        .unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut out).unwrap();
        let code = match &child.exit {
            crate::service::spawn::ChildExit::Pidfd(fd) => rustix::process::waitid(
                rustix::process::WaitId::PidFd(std::os::fd::AsFd::as_fd(fd)),
                rustix::process::WaitIdOptions::EXITED,
            )
            .unwrap()
            .unwrap()
            .exit_status(),
            crate::service::spawn::ChildExit::Waiter(w) => {
                futures_lite::future::block_on(w.wait()).code
            }
        };
        let v2 = out
            .lines()
            .find(|l| l.starts_with("0::"))
            .unwrap_or_default();
        (v2.to_owned(), code)
    }

    /// A service starts inside its cgroup, whether `clone3` puts it there or it joins by a write
    /// (kernels and sandboxes without CLONE_INTO_CGROUP); the first is what this machine uses.
    #[test]
    fn a_child_starts_in_its_cgroup_either_way() {
        let Some(root) =
            super::CgroupRoot::detect(&format!("harness-test-in-{}", std::process::id()))
        else {
            eprintln!("cgroups not usable here: nothing to check");
            return;
        };
        for (name, born) in [("born", true), ("joined", false)] {
            let cg = super::Cgroup::open(&root, name).unwrap();
            let (v2, code) = cgroup_of_a_child(&cg, born);
            assert!(v2.ends_with(&format!("/{name}")), "{name}: {v2}");
            assert_eq!(code, Some(0));
            if born {
                assert!(
                    crate::service::spawn::clone3_usable(),
                    "clone3 with CLONE_INTO_CGROUP works on this kernel (Linux {})",
                    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default()
                );
            }
            cg.remove();
        }
        // A cgroup killed once (`cgroup.kill`) and used again: Linux 6.18 kills a child born in
        // it before it runs; the spawn sees that and joins by the write instead.
        let cg = super::Cgroup::open(&root, "killed").unwrap();
        cg.kill_all();
        let (v2, code) = cgroup_of_a_child(&cg, true);
        assert!(v2.ends_with("/killed"), "{v2}");
        assert_eq!(code, Some(0), "it ran to its end");
        cg.remove();
    }

    /// Where cgroups are usable (root here), a setsid'd double-forked descendant dies with them.
    #[test]
    fn kill_all_reaches_a_double_forked_setsid_descendant() {
        let Some(root) = super::CgroupRoot::detect(&format!("harness-test-{}", std::process::id()))
        else {
            eprintln!("cgroups not usable here: nothing to check");
            return;
        };
        let cg = super::Cgroup::open(&root, "svc").unwrap();
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let null = || -> std::os::fd::OwnedFd { std::fs::File::open("/dev/null").unwrap().into() };
        let child = crate::service::spawn::spawn(crate::service::spawn::Spawn {
            program: "sh".as_ref(),
            args: &[
                "-c".into(),
                "setsid sh -c 'sleep 300 >/dev/null 2>&1 & echo $!' &".into(),
            ],
            env: Vec::new(),
            cwd: None,
            stdio: [null(), w, null()],
            cgroup: Some(cg.dir_c().unwrap()),
            watch: crate::service::spawn::exit_watch(),
        })
        .unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut out).unwrap();
        match &child.exit {
            crate::service::spawn::ChildExit::Pidfd(fd) => {
                rustix::process::waitid(
                    rustix::process::WaitId::PidFd(std::os::fd::AsFd::as_fd(fd)),
                    rustix::process::WaitIdOptions::EXITED,
                )
                .unwrap();
            }
            crate::service::spawn::ChildExit::Waiter(w) => {
                futures_lite::future::block_on(w.wait());
            }
        }
        let pid: u32 = out.trim().parse().unwrap();
        assert!(
            crate::service::procfs::stat(pid).is_some(),
            "the sleeper runs"
        );
        assert!(cg.pids().contains(&pid));
        cg.remove();
        assert!(crate::service::procfs::is_dead(pid), "the sleeper is gone");
        assert!(!cg.dir().exists());
        assert!(
            !root.dir().exists(),
            "the empty root goes with its last cgroup"
        );
    }
}
