//! Starting a local service without copying the daemon (ADR 0046).
//!
//! `fork` copies the daemon's page tables and the child drops them again at `exec`: with 2,500
//! services held, that was ≈ 70 % of the CPU of starting them (bench/results-launch-2026-12-06.md),
//! and the cost of each launch grew with the number already running. std's `Command` only avoids
//! `fork` (through `posix_spawn`) when no `pre_exec` is set, and a service needs its own session,
//! its cgroup joined before `exec` and the check that the daemon still lives — none of which
//! `posix_spawn` of glibc 2.36 offers together.
//!
//! So the child is made as glibc's `posix_spawn` makes it: `clone(CLONE_VM | CLONE_VFORK)` on a
//! small stack of its own, sharing the daemon's memory (no page table is copied) while the calling
//! thread waits until the child has called `exec` or exited. Everything the child needs (paths,
//! argv, envp, descriptors) is prepared before; the child only makes system calls: it resets
//! signal handlers to the default (they are the daemon's code, in shared memory), joins its
//! cgroup, checks its parent, calls `setsid`, moves its descriptors to 0-2, enters its working
//! directory, unblocks signals and execs, searching `PATH` as `execvp` does. A failure is written
//! to shared memory with the step that failed, and the child exits 127 without running anything.
//! The exit status comes through a pidfd (`waitid(P_PIDFD)`), opened while the child is unreaped;
//! where pidfds are not available (see [`ExitWatch`]), through a thread per child waiting in
//! `waitid(P_PID, WNOWAIT)` ([`Waiter`]).

use std::ffi::{CString, OsStr, OsString, c_int, c_void};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, Ordering};

use rustix::process::{Pid, PidfdFlags, WaitId, WaitIdOptions};

use super::ExitInfo;

/// The child's stack: it only calls system calls (through libc) on it.
const STACK: usize = 64 * 1024;

/// Set to `1` in the daemon's environment, it makes the daemon run as if the kernel had no pidfds
/// ([`ExitWatch::NoPidfd`]): for tests of that path, and for a sandbox that refuses pidfds in a
/// way the probe does not recognize.
pub const NO_PIDFD_VAR: &str = "HARNESS_NO_PIDFD";

/// How the daemon learns that a process it follows has ended; chosen once per process by
/// [`exit_watch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitWatch {
    /// A pidfd: readable when the process ends; for our own child `waitid(P_PIDFD)` then reaps
    /// it (Linux ≥ 5.4).
    Pidfd,
    /// No pidfd (`pidfd_open` or `waitid(P_PIDFD)` refused: Linux < 5.4, valgrind 3.19, seccomp
    /// filters): our own child is watched by a thread of its own blocked in
    /// `waitid(P_PID, WNOWAIT)` ([`Waiter`]); a re-attached process by polling `/proc`.
    NoPidfd,
}

/// 0: not probed yet; 1: pidfd; 2: no pidfd.
static EXIT_WATCH: AtomicU8 = AtomicU8::new(0);

/// Whether pidfds work here: `HARNESS_NO_PIDFD=1`, or `pidfd_open` of the daemon itself failing
/// with ENOSYS or EPERM (a seccomp filter), or `waitid(P_PIDFD)` on it failing with anything but
/// ECHILD (Linux 5.3 has `pidfd_open` but not `P_PIDFD`), choose [`ExitWatch::NoPidfd`] for the
/// life of the process. A transient failure (no descriptor left) is not remembered.
pub(crate) fn exit_watch() -> ExitWatch {
    match EXIT_WATCH.load(Ordering::Relaxed) {
        1 => return ExitWatch::Pidfd,
        2 => return ExitWatch::NoPidfd,
        _ => {}
    }
    let chosen = if std::env::var_os(NO_PIDFD_VAR).is_some_and(|v| v == "1") {
        ExitWatch::NoPidfd
    } else {
        match rustix::process::pidfd_open(rustix::process::getpid(), PidfdFlags::empty()) {
            Ok(fd) => match rustix::process::waitid(
                WaitId::PidFd(std::os::fd::AsFd::as_fd(&fd)),
                WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
            ) {
                // The daemon is not its own child: the kernel understood the request.
                Err(rustix::io::Errno::CHILD) => ExitWatch::Pidfd,
                _ => ExitWatch::NoPidfd,
            },
            Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => ExitWatch::NoPidfd,
            Err(_) => return ExitWatch::Pidfd,
        }
    };
    let code = if chosen == ExitWatch::Pidfd { 1 } else { 2 };
    EXIT_WATCH.store(code, Ordering::Relaxed);
    chosen
}

/// What to start.
pub(crate) struct Spawn<'a> {
    pub program: &'a OsStr,
    pub args: &'a [String],
    /// Set on top of the daemon's own environment.
    pub env: Vec<(OsString, OsString)>,
    pub cwd: Option<&'a Path>,
    /// Become descriptors 0, 1 and 2.
    pub stdio: [OwnedFd; 3],
    /// The directory of the cgroup the child is to start in (before `exec`).
    pub cgroup: Option<CString>,
    /// How its end is to be watched: [`exit_watch`] (tests choose).
    pub watch: ExitWatch,
}

/// The step of the child that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Prepare,
    Clone,
    Cgroup,
    Parent,
    Setsid,
    Stdio,
    Chdir,
    Exec,
    Pidfd,
    Waiter,
}

impl Step {
    fn from_raw(n: i32) -> Step {
        match n {
            1 => Step::Cgroup,
            2 => Step::Parent,
            3 => Step::Setsid,
            4 => Step::Stdio,
            5 => Step::Chdir,
            _ => Step::Exec,
        }
    }

    pub(crate) fn what(self) -> &'static str {
        match self {
            Step::Prepare => "preparing the command",
            Step::Clone => "creating the process",
            Step::Cgroup => "joining its cgroup",
            Step::Parent => "checking that the daemon still runs",
            Step::Setsid => "starting its session",
            Step::Stdio => "setting its stdin/stdout/stderr",
            Step::Chdir => "entering its working directory",
            Step::Exec => "executing the program",
            Step::Pidfd => "opening its pidfd",
            Step::Waiter => "starting the thread that waits for its end",
        }
    }
}

/// Why a spawn failed, and where.
#[derive(Debug)]
pub(crate) struct Failed {
    pub step: Step,
    pub error: std::io::Error,
}

/// A started child: not yet reaped, so its pid stays its own until its status is collected
/// through `exit`.
pub(crate) struct Spawned {
    pub pid: u32,
    pub exit: ChildExit,
}

/// Where the end of a started child shows.
pub(crate) enum ChildExit {
    /// Readable when the child ends; `waitid(P_PIDFD)` on it reaps it.
    Pidfd(OwnedFd),
    /// Without pidfds.
    Waiter(Waiter),
}

/// Stack of a waiter thread: it makes one system call and one channel send.
const WAITER_STACK: usize = 64 * 1024;

/// The end of a child, without pidfds: a thread of its own waits in `waitid(P_PID, WEXITED |
/// WNOWAIT)` — which leaves the child a zombie, so its pid stays its own — and says so on a
/// channel; [`Waiter::wait`] then reaps it without blocking. Dropped before that, the waiter
/// closes the channel and the thread reaps the child itself when it ends: no zombie is left
/// either way, and the status is collected exactly once.
pub(crate) struct Waiter {
    pid: Pid,
    ended: async_channel::Receiver<()>,
}

impl Waiter {
    fn start(pid: Pid) -> std::io::Result<Waiter> {
        let (tx, rx) = async_channel::bounded(1);
        std::thread::Builder::new()
            .name("harness-waiter".into())
            .stack_size(WAITER_STACK)
            .spawn(move || {
                while let Err(rustix::io::Errno::INTR) = rustix::process::waitid(
                    WaitId::Pid(pid),
                    WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
                ) {}
                // Closed: the handle is gone, nobody else will reap it.
                if tx.try_send(()).is_err() {
                    reap(pid.as_raw_pid());
                }
            })?;
        Ok(Waiter { pid, ended: rx })
    }

    /// Waits until the child has ended and reaps it: its exit code or signal. Cancel-safe: the
    /// notice is taken and the (immediate) reap made in the same poll.
    pub(crate) async fn wait(&self) -> ExitInfo {
        if self.ended.recv().await.is_err() {
            return ExitInfo::UNKNOWN;
        }
        loop {
            return match rustix::process::waitid(
                WaitId::Pid(self.pid),
                WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
            ) {
                Ok(Some(st)) => ExitInfo {
                    code: st.exit_status(),
                    signal: st.terminating_signal(),
                },
                Err(rustix::io::Errno::INTR) => continue,
                Ok(None) | Err(_) => ExitInfo::UNKNOWN,
            };
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        // After `close` the thread's send fails and it reaps; a notice sent before is still
        // here, and then the child is a zombie that only this handle would reap: reap it now
        // (immediate). After `wait` the notice is gone and nothing is reaped twice.
        self.ended.close();
        if self.ended.try_recv().is_ok() {
            let _ = rustix::process::waitid(
                WaitId::Pid(self.pid),
                WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
            );
        }
    }
}

/// Shared between the daemon and its child (CLONE_VM): read by the child, the two atomics written
/// by it on failure.
#[repr(C)]
struct ChildData {
    cgroup: *const libc::c_char,
    parent: libc::pid_t,
    stdio: [RawFd; 3],
    cwd: *const libc::c_char,
    paths: *const *const libc::c_char,
    n_paths: usize,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    step: AtomicI32,
    errno: AtomicI32,
    /// Set by the child first thing: one killed before it ran (see [`clone3`]) leaves it 0.
    ran: AtomicBool,
}

fn errno() -> c_int {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EINVAL)
}

/// The child, on its own stack in the daemon's memory: system calls only (no allocation, no lock,
/// no unwinding), until `exec` or `_exit`.
extern "C" fn child(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the ChildData of the parent's frame, alive while the parent waits
    // (CLONE_VFORK); every pointer in it is valid and NUL-terminated, prepared before the clone.
    unsafe {
        let d = &*(arg as *const ChildData);
        d.ran.store(true, Ordering::SeqCst);
        let fail = |step: i32| -> ! {
            let e = *libc::__errno_location();
            d.errno
                .store(if e == 0 { libc::EINVAL } else { e }, Ordering::SeqCst);
            d.step.store(step, Ordering::SeqCst);
            libc::_exit(127)
        };
        // Handlers are the daemon's code and data: none may run here. SIGPIPE, ignored by the
        // Rust runtime, is default again (as std's spawn does); other ignored signals stay so.
        // 1..=64: every signal of Linux (_NSIG is 64).
        for sig in 1..=64 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            if (old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN)
                || (sig == libc::SIGPIPE && old.sa_sigaction == libc::SIG_IGN)
            {
                let mut new: libc::sigaction = std::mem::zeroed();
                new.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &new, std::ptr::null_mut());
            }
        }
        if !d.cgroup.is_null() {
            let fd = libc::open(d.cgroup, libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                fail(1);
            }
            libc::close(fd);
        }
        // A daemon killed before here cannot have recorded this child: it must not run. Once in
        // its cgroup it is found (and adopted or killed) by the next daemon.
        if libc::getppid() != d.parent {
            *libc::__errno_location() = libc::ESRCH;
            fail(2);
        }
        if libc::setsid() < 0 {
            fail(3);
        }
        // The parent made every source descriptor >= 3, so no dup2 overwrites a later source.
        for (target, &src) in d.stdio.iter().enumerate() {
            if libc::dup2(src, target as c_int) < 0 {
                fail(4);
            }
        }
        if !d.cwd.is_null() && libc::chdir(d.cwd) != 0 {
            fail(5);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        // As execvp: the first candidate that execs wins; a permission error is remembered and
        // reported if none does; an error other than "not there" stops the search.
        let mut denied = false;
        for i in 0..d.n_paths {
            libc::execve(*d.paths.add(i), d.argv, d.envp);
            match *libc::__errno_location() {
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                _ => fail(6),
            }
        }
        *libc::__errno_location() = if denied { libc::EACCES } else { libc::ENOENT };
        fail(6)
    }
}

/// `clone3` with `CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP`: the child starts in its cgroup.
/// libc has no wrapper for it (glibc keeps its own private), and a child on a stack of its own
/// cannot return from a plain `syscall()`, so the entry is a few instructions of assembly, as
/// glibc's `clone3.S`: in the child, call `f(arg)` on the new stack, then `exit` with what it
/// returned. x86_64 only (the one architecture this is tested on); on others, and where the kernel
/// or a seccomp filter refuses the call, the caller joins the cgroup by writing `cgroup.procs`.
mod clone3 {
    use std::ffi::{c_int, c_void};
    use std::os::fd::RawFd;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// `struct clone_args` of linux/sched.h up to `cgroup` (CLONE_ARGS_SIZE_VER2).
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }

    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

    /// Cleared for good once the kernel says it does not know the call or the flag.
    static USABLE: AtomicBool = AtomicBool::new(cfg!(target_arch = "x86_64"));

    pub(super) fn usable() -> bool {
        USABLE.load(Ordering::Relaxed)
    }

    /// Not to be used again by this process.
    pub(super) fn refused() {
        USABLE.store(false, Ordering::Relaxed);
    }

    /// Starts `f(arg)` as a child sharing our memory, on the stack `base..top`, inside the cgroup
    /// of directory `cgroup`; returns once the child has exec'd or exited (CLONE_VFORK), with its
    /// pid or the errno of the refusal.
    ///
    /// # Safety
    /// As for `libc::clone` with CLONE_VM | CLONE_VFORK: `base..top` is writable memory that
    /// outlives the child's use of it, `top` is 16-byte aligned, and `f` only makes system calls
    /// and ends in `exec` or `_exit`.
    pub(super) unsafe fn vfork_into_cgroup(
        base: *mut u8,
        top: *mut u8,
        cgroup: RawFd,
        f: extern "C" fn(*mut c_void) -> c_int,
        arg: *mut c_void,
    ) -> Result<libc::pid_t, c_int> {
        let mut args = CloneArgs {
            flags: (libc::CLONE_VM | libc::CLONE_VFORK) as u64 | CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            stack: base as u64,
            stack_size: (top as u64) - (base as u64),
            cgroup: cgroup as u64,
            ..CloneArgs::default()
        };
        // SAFETY: as the caller promises; `args` lives across the call.
        let ret = unsafe { raw(&mut args, f, arg) };
        if ret >= 0 {
            return Ok(ret as libc::pid_t);
        }
        let e = -ret as c_int;
        if matches!(e, libc::ENOSYS | libc::EPERM | libc::E2BIG | libc::EINVAL) {
            USABLE.store(false, Ordering::Relaxed);
        }
        Err(e)
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn raw(
        args: &mut CloneArgs,
        f: extern "C" fn(*mut c_void) -> c_int,
        arg: *mut c_void,
    ) -> i64 {
        let ret: i64;
        // SAFETY: the syscall preserves every register but rax, rcx and r11; in the child (rax
        // 0) rsp is the top of the new stack, 16-byte aligned before the call as the ABI wants.
        unsafe {
            std::arch::asm!(
                "syscall",
                "test rax, rax",
                "jnz 2f",
                "xor ebp, ebp",
                "mov rdi, r13",
                "call r12",
                "mov edi, eax",
                "mov eax, 60", // exit
                "syscall",
                "ud2",
                "2:",
                inlateout("rax") libc::SYS_clone3 => ret,
                in("rdi") std::ptr::from_mut(args),
                in("rsi") std::mem::size_of::<CloneArgs>(),
                in("r12") f,
                in("r13") arg,
                lateout("rcx") _,
                lateout("r11") _,
            );
        }
        ret
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn raw(
        _: &mut CloneArgs,
        _: extern "C" fn(*mut c_void) -> c_int,
        _: *mut c_void,
    ) -> i64 {
        -(libc::ENOSYS as i64)
    }
}

fn cstring(s: impl Into<Vec<u8>>) -> Result<CString, Failed> {
    CString::new(s).map_err(|e| Failed {
        step: Step::Prepare,
        error: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
    })
}

/// Where `program` may be: itself if it names a path, else each directory of `path` (an empty
/// entry is the working directory), as execvp searches.
fn candidates(program: &OsStr, path: Option<&OsStr>) -> Vec<Vec<u8>> {
    let p = program.as_bytes();
    if p.contains(&b'/') {
        return vec![p.to_vec()];
    }
    let path = path.map_or(&b"/bin:/usr/bin"[..], OsStr::as_bytes);
    path.split(|&b| b == b':')
        .map(|dir| {
            let mut c = if dir.is_empty() {
                b".".to_vec()
            } else {
                dir.to_vec()
            };
            c.push(b'/');
            c.extend_from_slice(p);
            c
        })
        .collect()
}

/// A descriptor numbered 3 or above, so the child's moves to 0-2 cannot clobber one another.
fn above_stdio(fd: OwnedFd) -> Result<OwnedFd, Failed> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    rustix::io::fcntl_dupfd_cloexec(&fd, 3).map_err(|e| Failed {
        step: Step::Prepare,
        error: e.into(),
    })
}

/// Pidfds of children whose handle was dropped before they ended: collected (reaped) at the next
/// spawn, so no zombie stays for long.
static ORPHANS: Mutex<Vec<OwnedFd>> = Mutex::new(Vec::new());

/// Hands a pidfd of an unreaped child over to be reaped later.
pub(crate) fn orphan(pidfd: OwnedFd) {
    if let Ok(mut o) = ORPHANS.lock() {
        o.push(pidfd);
    }
}

fn reap_orphans() {
    if let Ok(mut o) = ORPHANS.lock() {
        o.retain(|fd| {
            !matches!(
                rustix::process::waitid(
                    rustix::process::WaitId::PidFd(std::os::fd::AsFd::as_fd(fd)),
                    WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
                ),
                Ok(Some(_)) | Err(_)
            )
        });
    }
}

/// Whether children start in their cgroup through `clone3` here (so far).
#[cfg(test)]
pub(crate) fn clone3_usable() -> bool {
    clone3::usable()
}

/// Starts the child. Blocking until it has called `exec` (or failed): call it off the executor.
pub(crate) fn spawn(s: Spawn<'_>) -> Result<Spawned, Failed> {
    spawn_as(s, clone3::usable())
}

/// [`spawn`], the child started in its cgroup by `clone3` if `born_in_cgroup` (and the kernel
/// agrees), else joining it by a write before `exec`.
pub(crate) fn spawn_as(s: Spawn<'_>, born_in_cgroup: bool) -> Result<Spawned, Failed> {
    reap_orphans();
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !s.env.iter().any(|(o, _)| o == k))
        .collect();
    env.extend(s.env);
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_os_str());
    let paths = candidates(s.program, path)
        .into_iter()
        .map(cstring)
        .collect::<Result<Vec<_>, _>>()?;
    let mut argv = vec![cstring(s.program.as_bytes())?];
    for a in s.args {
        argv.push(cstring(a.as_bytes())?);
    }
    let envp = env
        .into_iter()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstring(kv)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cwd = s
        .cwd
        .map(|c| cstring(c.as_os_str().as_bytes()))
        .transpose()?;
    let [i, o, e] = s.stdio;
    let stdio = [above_stdio(i)?, above_stdio(o)?, above_stdio(e)?];
    let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
        v.iter()
            .map(|c| c.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let (path_ptrs, argv_ptrs, envp_ptrs) = (ptrs(&paths), ptrs(&argv), ptrs(&envp));
    // Born in its cgroup where the kernel can (clone3's CLONE_INTO_CGROUP, Linux >= 5.7): joining
    // afterwards by a write to `cgroup.procs` takes a lock that waits for an RCU grace period
    // (10-20 ms on a 2-core VM) and that every other launch's join then queues behind.
    let cgroup_dir = match (&s.cgroup, born_in_cgroup) {
        (Some(dir), true) => {
            // SAFETY: a NUL-terminated path; the descriptor returned is ours to close.
            let fd = unsafe {
                libc::open(
                    dir.as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            };
            if fd < 0 {
                return Err(Failed {
                    step: Step::Cgroup,
                    error: std::io::Error::last_os_error(),
                });
            }
            // SAFETY: just opened, owned by nothing else.
            Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
        }
        _ => None,
    };
    let procs = s
        .cgroup
        .as_ref()
        .map(|d| {
            let mut p = d.as_bytes().to_vec();
            p.extend_from_slice(b"/cgroup.procs");
            cstring(p)
        })
        .transpose()?;
    let procs_ptr = procs.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    let mut data = ChildData {
        // Born in it: nothing to join.
        cgroup: if cgroup_dir.is_some() {
            std::ptr::null()
        } else {
            procs_ptr
        },
        parent: std::process::id() as libc::pid_t,
        stdio: [
            stdio[0].as_raw_fd(),
            stdio[1].as_raw_fd(),
            stdio[2].as_raw_fd(),
        ],
        cwd: cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        paths: path_ptrs.as_ptr(),
        n_paths: paths.len(),
        argv: argv_ptrs.as_ptr(),
        envp: envp_ptrs.as_ptr(),
        step: AtomicI32::new(0),
        errno: AtomicI32::new(0),
        ran: AtomicBool::new(false),
    };
    let mut stack = vec![0u8; STACK];
    // SAFETY: the stack is ours and outlives the child's use of it (CLONE_VFORK returns only after
    // its exec or exit); the top is 16-byte aligned as the ABI wants. All signals are blocked in
    // this thread around the clone so that no handler runs in the child before it resets them.
    let pid = unsafe {
        let base = stack.as_mut_ptr();
        let top = base.add(STACK);
        let top = top.sub(top as usize % 16);
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut pid = -1;
        let mut clone_errno = 0;
        if let Some(dir) = &cgroup_dir {
            let arg = std::ptr::from_ref(&data).cast_mut().cast();
            // Refused (another kernel's or sandbox's call): joined by the write, as below.
            match clone3::vfork_into_cgroup(base, top, dir.as_raw_fd(), child, arg) {
                Ok(p) if data.ran.load(Ordering::SeqCst) => pid = p,
                Ok(p) => {
                    // Killed before it ran a single instruction: the kernel's fork sends SIGKILL
                    // to a child born in a cgroup whose `cgroup.kill` count differs from the
                    // parent's (Linux 6.18 compares the target's with the count it read from
                    // the daemon's own cgroup): every cgroup once killed, or all of them when the
                    // daemon's own was. Nothing ran; reaped, and the write is used from now on.
                    reap(p);
                    clone3::refused();
                    data.cgroup = procs_ptr;
                }
                Err(_) => data.cgroup = procs_ptr,
            }
        }
        if pid < 0 {
            pid = libc::clone(
                child,
                top.cast(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                std::ptr::from_ref(&data).cast_mut().cast(),
            );
            clone_errno = errno();
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(Failed {
                step: Step::Clone,
                error: std::io::Error::from_raw_os_error(clone_errno),
            });
        }
        pid
    };
    drop(stack);
    drop(cgroup_dir);
    let step = data.step.load(Ordering::SeqCst);
    if step != 0 {
        reap(pid);
        return Err(Failed {
            step: Step::from_raw(step),
            error: std::io::Error::from_raw_os_error(data.errno.load(Ordering::SeqCst)),
        });
    }
    let fail = |step: Step, error: std::io::Error| {
        kill_and_reap(pid as u32);
        Failed { step, error }
    };
    let Some(p) = Pid::from_raw(pid) else {
        return Err(fail(Step::Clone, rustix::io::Errno::SRCH.into()));
    };
    // Unreaped, the pid cannot be reused: the pidfd (or the waiter's pid) is surely this child's.
    let exit = match s.watch {
        ExitWatch::Pidfd => ChildExit::Pidfd(
            rustix::process::pidfd_open(p, PidfdFlags::empty())
                .map_err(|e| fail(Step::Pidfd, e.into()))?,
        ),
        ExitWatch::NoPidfd => {
            ChildExit::Waiter(Waiter::start(p).map_err(|e| fail(Step::Waiter, e))?)
        }
    };
    Ok(Spawned {
        pid: pid as u32,
        exit,
    })
}

/// SIGKILLs a child not yet reaped and reaps it. Blocking (briefly: SIGKILL is not ignored).
pub(crate) fn kill_and_reap(pid: u32) {
    let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    reap(p.as_raw_pid());
}

/// Collects the status of a child that failed before running anything, or whose end its waiter
/// thread has seen. Blocking (it has exited already, or is about to).
fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waitpid on our own child, with a valid status pointer.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 && errno() == libc::EINTR {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn null() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    const BOTH: [ExitWatch; 2] = [ExitWatch::Pidfd, ExitWatch::NoPidfd];

    /// Waits for the child's end (blocking: the test's own thread) and reaps it.
    fn wait(exit: &ChildExit) -> ExitInfo {
        match exit {
            ChildExit::Pidfd(fd) => {
                let st = rustix::process::waitid(
                    WaitId::PidFd(std::os::fd::AsFd::as_fd(fd)),
                    WaitIdOptions::EXITED,
                )
                .unwrap()
                .unwrap();
                ExitInfo {
                    code: st.exit_status(),
                    signal: st.terminating_signal(),
                }
            }
            ChildExit::Waiter(w) => futures_lite::future::block_on(w.wait()),
        }
    }

    fn start(program: &str, args: &[&str], stdin: OwnedFd, watch: ExitWatch) -> Spawned {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        spawn(Spawn {
            program: OsStr::new(program),
            args: &args,
            env: Vec::new(),
            cwd: None,
            stdio: [stdin, null(), null()],
            cgroup: None,
            watch,
        })
        .unwrap()
    }

    /// Whether `pid` is gone for good: neither running nor a zombie, within 5 s.
    fn gone(pid: u32) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if crate::service::procfs::stat(pid).is_none() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    }

    /// Without pidfds, the waiter gives the exit code, or the signal, exactly once, and the child
    /// is reaped (no zombie); the probe of this machine chose one of the two ways.
    #[test]
    fn the_waiter_gives_the_status_once_and_reaps() {
        let _ = exit_watch();
        assert_ne!(EXIT_WATCH.load(Ordering::Relaxed), 0, "the probe decided");
        let child = start("sh", &["-c", "exit 7"], null(), ExitWatch::NoPidfd);
        let ChildExit::Waiter(w) = &child.exit else {
            panic!("a pidfd without pidfds");
        };
        let info = futures_lite::future::block_on(w.wait());
        assert_eq!(
            info,
            ExitInfo {
                code: Some(7),
                signal: None
            }
        );
        assert!(gone(child.pid), "reaped");
        // The notice was taken: a second wait reaps nothing (its thread is gone: at once).
        assert_eq!(futures_lite::future::block_on(w.wait()), ExitInfo::UNKNOWN);

        let child = start("sleep", &["300"], null(), ExitWatch::NoPidfd);
        rustix::process::kill_process(
            Pid::from_raw(child.pid as i32).unwrap(),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        assert_eq!(
            wait(&child.exit),
            ExitInfo {
                code: None,
                signal: Some(libc::SIGTERM)
            }
        );
        assert!(gone(child.pid), "reaped");
    }

    /// A waiter dropped while its child runs leaves the reaping to its thread; one dropped after
    /// the child ended (the notice unread) reaps at once. No zombie either way.
    #[test]
    fn a_dropped_waiter_leaves_no_zombie() {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let running = start("sh", &["-c", "read x"], r, ExitWatch::NoPidfd);
        let pid = running.pid;
        drop(running);
        assert!(crate::service::procfs::stat(pid).is_some_and(|r| !r.zombie));
        drop(w);
        assert!(
            gone(pid),
            "the thread reaped the child whose handle was dropped"
        );

        let ended = start("true", &[], null(), ExitWatch::NoPidfd);
        let pid = ended.pid;
        // Ended (a zombie, its notice sent) before the handle goes.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !crate::service::procfs::stat(pid).is_some_and(|r| r.zombie) {
            assert!(std::time::Instant::now() < deadline, "true did not end");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(ended);
        assert!(gone(pid), "the drop reaped the ended child");
    }

    #[test]
    fn candidates_follow_path_as_execvp() {
        assert_eq!(
            candidates(OsStr::new("sleep"), Some(OsStr::new("/a::/b"))),
            vec![
                b"/a/sleep".to_vec(),
                b"./sleep".to_vec(),
                b"/b/sleep".to_vec()
            ]
        );
        assert_eq!(
            candidates(OsStr::new("./x"), Some(OsStr::new("/a"))),
            vec![b"./x".to_vec()]
        );
    }

    /// The child runs in its own session, with no signal blocked, SIGPIPE at its default (the
    /// test harness ignores it, as the daemon does), the given environment, directory and stdout,
    /// and its exit status comes through the pidfd.
    #[test]
    fn the_child_has_its_own_session_clean_signals_env_cwd_and_output() {
        for watch in BOTH {
            own_session_clean_signals_env_cwd_and_output(watch);
        }
    }

    fn own_session_clean_signals_env_cwd_and_output(watch: ExitWatch) {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        // The shell reads its own status with builtins: a `grep` child would read it while the
        // shell waits for it, and dash blocks every signal around that wait (seen once in CI).
        let script = r#"while read -r k v; do case $k in SigBlk:|SigIgn:) echo "$k $v";; esac; done < /proc/$$/status; echo "sid $(cut -d' ' -f6 /proc/$$/stat) pid $$"; pwd; echo "v=$HB_SPAWN_TEST"; exit 3"#;
        let child = spawn(Spawn {
            program: OsStr::new("sh"),
            args: &["-c".into(), script.into()],
            env: vec![("HB_SPAWN_TEST".into(), "a b'c".into())],
            cwd: Some(Path::new("/tmp")),
            stdio: [null(), w, null()],
            cgroup: None,
            watch,
        })
        .unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut out).unwrap();
        assert_eq!(wait(&child.exit).code, Some(3), "{watch:?}: {out}");
        assert!(gone(child.pid), "{watch:?}: reaped");
        let field = |name: &str| {
            let line = out.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        assert_eq!(field("SigBlk:"), 0, "{out}");
        assert_eq!(field("SigIgn:") & (1 << (libc::SIGPIPE - 1)), 0, "{out}");
        assert!(
            out.contains(&format!("sid {0} pid {0}", child.pid)),
            "{out}"
        );
        assert!(out.contains("\n/tmp\n"), "{out}");
        assert!(out.contains("v=a b'c"), "{out}");
    }

    /// A missing program fails at the exec step with ENOENT and leaves no child behind.
    #[test]
    fn a_missing_program_is_reported_at_exec() {
        for watch in BOTH {
            let Err(f) = spawn(Spawn {
                program: OsStr::new("no-such-program-harness"),
                args: &[],
                env: Vec::new(),
                cwd: None,
                stdio: [null(), null(), null()],
                cgroup: None,
                watch,
            }) else {
                panic!("spawned a missing program");
            };
            assert_eq!(f.step, Step::Exec);
            assert_eq!(f.error.kind(), std::io::ErrorKind::NotFound);
        }
    }
}
