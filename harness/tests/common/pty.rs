//! The CLI on a pseudo-terminal, as a user at a terminal runs it: the terminal is its stdin, stdout,
//! stderr and controlling terminal; a thread collects everything it prints.
#![allow(dead_code)] // each test binary uses part of it

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct PtyRun {
    pub child: Child,
    master: std::fs::File,
    slave: OwnedFd,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl PtyRun {
    /// Starts `cmd` on a new terminal of `rows` x `cols`.
    pub fn spawn(mut cmd: Command, rows: u16, cols: u16) -> PtyRun {
        let (mut master, mut slave) = (0, 0);
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two fresh descriptors; the size is read, the name is not wanted.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty");
        // SAFETY: both descriptors were just opened and are owned by nothing else.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave.try_clone().unwrap()));
        // SAFETY: setsid and ioctl are async-signal-safe; the pty becomes the controlling terminal,
        // so window size changes and ^C reach the program as in a real terminal.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn on a pty");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = std::fs::File::from(master.try_clone().unwrap());
        let s = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        PtyRun {
            child,
            master: std::fs::File::from(master),
            slave,
            seen,
        }
    }

    /// Everything printed so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    /// Waits until the output contains `needle` (true) or `within` passed (false).
    pub fn wait_for(&self, needle: &str, within: Duration) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if self.text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.text().contains(needle)
    }

    /// Types `keys` (`\r` is Enter).
    pub fn type_keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
    }

    /// Changes the window size: the program on the terminal gets SIGWINCH.
    pub fn resize(&self, rows: u16, cols: u16) {
        let size = rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&self.master, size).unwrap();
    }

    /// True while the terminal echoes what is typed (cooked mode, as before the program).
    pub fn echoes(&self) -> bool {
        let t = rustix::termios::tcgetattr(&self.slave).unwrap();
        t.local_modes.contains(rustix::termios::LocalModes::ECHO)
            && t.local_modes.contains(rustix::termios::LocalModes::ICANON)
    }

    /// The exit code, once the program ended within `within`.
    /// Waits (at most 2 s) until the collecting thread has read all the program wrote: it exited,
    /// but its last output may still sit in the terminal unread.
    fn drain(&self) {
        let end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < end {
            let mut unread: libc::c_int = 0;
            // SAFETY: FIONREAD writes one int through a valid pointer; the descriptor is ours.
            let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::FIONREAD, &mut unread) };
            if rc != 0 || unread == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // The thread may hold the last bytes read but not yet added.
        std::thread::sleep(Duration::from_millis(30));
    }

    pub fn wait(&mut self, within: Duration) -> Option<i32> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Some(s) = self.child.try_wait().unwrap() {
                self.drain();
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        None
    }
}
