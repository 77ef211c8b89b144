//! Wakes a pump when its service writes: one inotify instance for the daemon, one watch per
//! service directory, events for `stdout`/`stderr` only.
//!
//! Without it, each quiet pump polled its two files 5 times a second (a trip through the blocking
//! pool, two `fstat`s): with 2,500 services, 130-280 ms of the daemon's CPU per second of doing
//! nothing (bench/results-spawn-2026-12-06.md). With a watch a quiet pump sleeps until an event or
//! a slow safety poll. Where inotify is not usable (no instance, watch limit reached) a pump polls
//! as before.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use async_io::Async;
use event_listener::{Event, EventListener};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

struct Inotify {
    fd: Arc<Async<OwnedFd>>,
    /// Watch descriptor → (its wakers' event, pumps using it). One directory has one watch
    /// descriptor however often it is added; it goes with its last user.
    watches: Mutex<HashMap<i32, (Arc<Event>, usize)>>,
}

static INOTIFY: OnceLock<Option<Arc<Inotify>>> = OnceLock::new();

fn instance() -> Option<&'static Arc<Inotify>> {
    INOTIFY
        .get_or_init(|| {
            let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK).ok()?;
            let fd = Arc::new(Async::new(fd).ok()?);
            let ino = Arc::new(Inotify {
                fd: fd.clone(),
                watches: Mutex::new(HashMap::new()),
            });
            smol::spawn(read_events(ino.clone())).detach();
            Some(ino)
        })
        .as_ref()
}

/// Reads events forever, waking the pumps of the directories they name.
async fn read_events(ino: Arc<Inotify>) {
    let mut buf = vec![MaybeUninit::<u8>::uninit(); 64 << 10];
    loop {
        if ino.fd.readable().await.is_err() {
            return;
        }
        let mut woken: Vec<Arc<Event>> = Vec::new();
        let mut all = false;
        {
            let mut reader = inotify::Reader::new(ino.fd.get_ref(), &mut buf);
            loop {
                match reader.next() {
                    Ok(ev) => {
                        if ev.events().contains(ReadFlags::QUEUE_OVERFLOW) {
                            all = true;
                            continue;
                        }
                        let ours = ev.file_name().is_some_and(|n| {
                            let n = n.to_bytes();
                            n == b"stdout" || n == b"stderr"
                        });
                        if !ours {
                            continue;
                        }
                        if let Ok(w) = ino.watches.lock()
                            && let Some((e, _)) = w.get(&ev.wd())
                            && !woken.iter().any(|x| Arc::ptr_eq(x, e))
                        {
                            woken.push(e.clone());
                        }
                    }
                    Err(rustix::io::Errno::INTR) => {}
                    Err(_) => break,
                }
            }
        }
        if all && let Ok(w) = ino.watches.lock() {
            woken = w.values().map(|(e, _)| e.clone()).collect();
        }
        for e in woken {
            e.notify(usize::MAX);
        }
    }
}

/// A pump's watch on its directory; removed when the last pump of that directory drops it.
pub(super) struct Watch {
    wd: i32,
    event: Arc<Event>,
}

impl Watch {
    /// Watches `dir` (which must exist) for writes to `stdout`/`stderr`; `None` where inotify is
    /// not usable. Blocking (a system call or two).
    pub(super) fn new(dir: &Path) -> Option<Watch> {
        let ino = instance()?;
        let mut w = ino.watches.lock().ok()?;
        let wd = inotify::add_watch(
            ino.fd.get_ref(),
            dir,
            WatchFlags::MODIFY | WatchFlags::ONLYDIR,
        )
        .ok()?;
        let entry = w.entry(wd).or_insert_with(|| (Arc::new(Event::new()), 0));
        entry.1 += 1;
        Some(Watch {
            wd,
            event: entry.0.clone(),
        })
    }

    /// A listener woken by the next write after this call.
    pub(super) fn listen(&self) -> EventListener {
        self.event.listen()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let Some(ino) = instance() else { return };
        let Ok(mut w) = ino.watches.lock() else {
            return;
        };
        if let Some(entry) = w.get_mut(&self.wd) {
            entry.1 -= 1;
            if entry.1 == 0 {
                w.remove(&self.wd);
                // Fails harmlessly if the directory is gone (the kernel removed the watch).
                let _ = inotify::remove_watch(ino.fd.get_ref(), self.wd);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use futures_lite::FutureExt;

    use super::Watch;

    /// Whether `l` completes within `d`.
    fn woken(l: event_listener::EventListener, d: Duration) -> bool {
        smol::block_on(
            async {
                l.await;
                true
            }
            .or(async {
                async_io::Timer::after(d).await;
                false
            }),
        )
    }

    /// A write to `stdout` or `stderr` wakes every pump of the directory; other files do not, and
    /// the watch goes with its last pump.
    #[test]
    fn writes_to_the_output_files_wake_the_pumps_of_their_directory() {
        let dir = tempfile::tempdir().unwrap();
        let append = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.path().join(name))
                .unwrap()
                .write_all(b"line\n")
                .unwrap();
        };
        append("stdout");
        let (a, b) = (
            Watch::new(dir.path()).unwrap(),
            Watch::new(dir.path()).unwrap(),
        );
        assert_eq!(a.wd, b.wd);

        let l = a.listen();
        append("svc.log");
        assert!(
            !woken(l, Duration::from_millis(300)),
            "woken by the daemon's own log file"
        );

        for name in ["stdout", "stderr"] {
            let (la, lb) = (a.listen(), b.listen());
            append(name);
            assert!(
                woken(la, Duration::from_secs(10)),
                "{name}: first pump not woken"
            );
            assert!(
                woken(lb, Duration::from_secs(10)),
                "{name}: second pump not woken"
            );
        }

        let wd = a.wd;
        drop(a);
        let ino = super::instance().unwrap();
        assert!(
            ino.watches.lock().unwrap().contains_key(&wd),
            "still used by b"
        );
        drop(b);
        assert!(!ino.watches.lock().unwrap().contains_key(&wd));
    }
}
