//! Crash-consistent launches. Every launch is recorded before it can produce a process: a launch
//! id (`<daemon>/<project>/<service>/<run>`, `<daemon>` naming this state directory) appended to
//! the state directory's `launches` journal and made durable (`fdatasync`) before the launch may
//! go on. Launches that are recorded while a write is under way are written together by the next
//! one (group commit): a start wave of 100 services costs a few syncs, not 200. Every process of
//! the launch carries the id — in its environment (`HARNESS_LAUNCH_ID`), in the name of its run
//! directory on a host, in its own cgroup where cgroups are usable — so a daemon killed at any
//! instant finds it again on its next start and adopts or kills it (see `apply::reattach`).
//! The record is forgotten (a `-` line, not synced) once the launch's processes are known to be
//! gone. The journal is rewritten with the live records alone when it grows past 256 KiB.
//!
//! Journal lines: `+<id>` records a launch (the service's current one), `-<id>` forgets it,
//! `=<id> <pid> <start time>` names the process a local launch produced (written right after the
//! spawn, not synced: the fallback, after the launch id in the process's environment and the pid
//! in the registry, for finding it again; it replaced a `pid` file per service, one new inode per
//! launch). A line cut short by a crash belongs to a write that never completed, so to a launch
//! that never started: lines that do not parse are skipped.

use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use command_executor::service::cgroup::{Cgroup, CgroupRoot};
use sha2::Digest;

const JOURNAL: &str = "launches";
/// The journal is rewritten with only the live records once it is this long.
const COMPACT_AT: u64 = 256 * 1024;

/// This daemon's launch ids, their journal, and service cgroups.
pub(crate) struct Launches {
    /// Names this state directory: two daemons on one machine or host never mistake each
    /// other's processes.
    pub instance: String,
    pub cgroups: Option<CgroupRoot>,
    seq: AtomicU64,
    journal: Arc<Journal>,
}

/// The `launches` journal: what is recorded (in memory, as the file says), what waits to be
/// written, and the file.
struct Journal {
    path: PathBuf,
    /// The current launch of each service (project, service) -> id.
    live: Mutex<BTreeMap<(String, String), String>>,
    /// The process of a live local launch: id -> (pid, start time).
    pids: Mutex<BTreeMap<String, (u32, u64)>>,
    /// Lines waiting for the next write, each with where its outcome goes (none for `-` lines,
    /// which are written but not synced).
    queue: Mutex<Vec<(String, Option<Arc<Outcome>>)>>,
    /// Held by the one task writing a group.
    writer: async_lock::Mutex<Writer>,
    /// Ids recorded by a wave and not yet used by their service's launch.
    ready: Mutex<BTreeMap<(String, String), String>>,
}

type Outcome = OnceLock<Result<(), (std::io::ErrorKind, String)>>;

#[derive(Default)]
struct Writer {
    file: Option<std::fs::File>,
    len: u64,
}

impl Launches {
    /// Loads the journal of `state_dir`. Blocking.
    pub fn new(state_dir: &Path) -> Launches {
        let dir = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
        let digest = sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes());
        let instance = hex::encode(&digest[..6]);
        let cgroups = CgroupRoot::detect(&format!("harness-{instance}"));
        let path = state_dir.join(JOURNAL);
        let (live, pids) = std::fs::read(&path)
            .map(|bytes| replay(&bytes, &instance))
            .unwrap_or_default();
        Launches {
            instance,
            cgroups,
            seq: AtomicU64::new(0),
            journal: Arc::new(Journal {
                path,
                live: Mutex::new(live),
                pids: Mutex::new(pids),
                queue: Mutex::new(Vec::new()),
                writer: async_lock::Mutex::new(Writer::default()),
                ready: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// What every launch id of the service starts with.
    pub fn prefix(&self, project: &str, service: &str) -> String {
        format!("{}/{project}/{service}/", self.instance)
    }

    /// A new launch id, unique across restarts of the daemon.
    pub fn next(&self, project: &str, service: &str) -> String {
        format!(
            "{}{}-{}-{}",
            self.prefix(project, service),
            jiff::Timestamp::now().as_millisecond(),
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// The service's cgroup (created, on the blocking pool: a wave's mkdirs in cgroupfs run
    /// beside each other, not one after another on the executor), where cgroups are usable.
    pub async fn cgroup(&self, project: &str, service: &str) -> Option<Cgroup> {
        let root = self.cgroups.clone()?;
        let name = cgroup_name(project, service);
        match blocking::unblock(move || Cgroup::open(&root, &name)).await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("no cgroup for {project}/{service}: {e}");
                None
            }
        }
    }

    /// The service's cgroup if it exists.
    pub fn existing_cgroup(&self, project: &str, service: &str) -> Option<Cgroup> {
        Cgroup::existing(self.cgroups.as_ref()?, &cgroup_name(project, service))
    }

    /// Records `id` as the service's launch, durably, before anything is started: returns once
    /// the journal holding it is synced. Records made meanwhile share one write and one sync.
    pub async fn record(&self, project: &str, service: &str, id: &str) -> std::io::Result<()> {
        let outcome = Arc::new(Outcome::new());
        if let Ok(mut live) = self.journal.live.lock()
            && let Some(old) = live.insert((project.to_owned(), service.to_owned()), id.to_owned())
        {
            self.journal.drop_pid(&old);
        }
        if let Ok(mut q) = self.journal.queue.lock() {
            q.push((format!("+{id}\n"), Some(outcome.clone())));
        }
        self.journal.flush(&outcome).await;
        match outcome.get() {
            Some(Ok(())) => Ok(()),
            Some(Err((kind, msg))) => Err(std::io::Error::new(*kind, msg.clone())),
            None => Err(std::io::Error::other("the launch journal was not written")),
        }
    }

    /// Records a new launch id for each of `services` of `project` in one write and one sync,
    /// before any of them starts: a start wave costs one sync however many services it has.
    /// Each service's next launch uses its id ([`Launches::take_recorded`]).
    pub async fn record_wave(&self, project: &str, services: &[String]) -> std::io::Result<()> {
        if services.is_empty() {
            return Ok(());
        }
        let ids: Vec<(String, String)> = services
            .iter()
            .map(|s| (s.clone(), self.next(project, s)))
            .collect();
        let outcome = Arc::new(Outcome::new());
        if let Ok(mut live) = self.journal.live.lock() {
            for (s, id) in &ids {
                if let Some(old) = live.insert((project.to_owned(), s.clone()), id.clone()) {
                    self.journal.drop_pid(&old);
                }
            }
        }
        if let Ok(mut q) = self.journal.queue.lock() {
            let lines: String = ids.iter().map(|(_, id)| format!("+{id}\n")).collect();
            q.push((lines, Some(outcome.clone())));
        }
        self.journal.flush(&outcome).await;
        match outcome.get() {
            Some(Ok(())) => {
                if let Ok(mut r) = self.journal.ready.lock() {
                    for (s, id) in ids {
                        r.insert((project.to_owned(), s), id);
                    }
                }
                Ok(())
            }
            Some(Err((kind, msg))) => Err(std::io::Error::new(*kind, msg.clone())),
            None => Err(std::io::Error::other("the launch journal was not written")),
        }
    }

    /// The id [`Launches::record_wave`] recorded for the service's next launch, once; `None`
    /// when there is none or the service's record has changed since.
    pub fn take_recorded(&self, project: &str, service: &str) -> Option<String> {
        let key = (project.to_owned(), service.to_owned());
        let id = self.journal.ready.lock().ok()?.remove(&key)?;
        let live = self.journal.live.lock().ok()?;
        (live.get(&key) == Some(&id)).then_some(id)
    }

    /// The launch recorded for the service, if any.
    pub fn recorded(&self, project: &str, service: &str) -> Option<String> {
        let live = self.journal.live.lock().ok()?;
        live.get(&(project.to_owned(), service.to_owned())).cloned()
    }

    /// Notes the process that launch `id` produced (a local launch), written to the journal
    /// before this returns but not synced: a daemon killed from here on finds the pid there, after
    /// the launch id in the process's environment and the registry's record.
    pub async fn note_pid(&self, id: &str, pid: u32, start_time: u64) {
        if let Ok(mut pids) = self.journal.pids.lock() {
            pids.insert(id.to_owned(), (pid, start_time));
        }
        if let Ok(mut q) = self.journal.queue.lock() {
            q.push((format!("={id} {pid} {start_time}\n"), None));
        }
        self.written().await;
    }

    /// The process noted for launch `id` ([`Launches::note_pid`]), if any.
    pub fn pid_of(&self, id: &str) -> Option<(u32, u64)> {
        self.journal.pids.lock().ok()?.get(id).copied()
    }

    /// Every live record: (project, service) and its launch id (`drift`).
    pub fn all(&self) -> Vec<((String, String), String)> {
        self.journal
            .live
            .lock()
            .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// Keeps in memory only the records of services `keep` accepts.
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        if let Ok(mut live) = self.journal.live.lock() {
            live.retain(|(p, s), _| keep(p, s));
            let current: std::collections::BTreeSet<&String> = live.values().collect();
            if let Ok(mut pids) = self.journal.pids.lock() {
                pids.retain(|id, _| current.contains(id));
            }
        }
    }

    /// Forgets the service's launch: its processes are gone. Written by a task of its own (the
    /// caller does not wait for the journal), not synced: a record that outlives a crash only
    /// makes the next daemon look for processes it will not find.
    pub async fn forget(&self, project: &str, service: &str) {
        let id = self
            .journal
            .live
            .lock()
            .ok()
            .and_then(|mut live| live.remove(&(project.to_owned(), service.to_owned())));
        if let Ok(mut r) = self.journal.ready.lock() {
            r.remove(&(project.to_owned(), service.to_owned()));
        }
        let Some(id) = id else { return };
        self.journal.drop_pid(&id);
        if let Ok(mut q) = self.journal.queue.lock() {
            q.push((format!("-{id}\n"), None));
        }
        let journal = self.journal.clone();
        smol::spawn(async move {
            let done = Outcome::new();
            let _ = done.set(Ok(()));
            journal.flush(&done).await;
        })
        .detach();
    }
}

impl Launches {
    /// Waits until every forget so far is written (the daemon's shutdown, tests).
    pub async fn written(&self) {
        let done = Outcome::new();
        let _ = done.set(Ok(()));
        self.journal.flush(&done).await;
    }
}

impl Journal {
    /// Forgets the process noted for launch `id` (the launch is over or replaced).
    fn drop_pid(&self, id: &str) {
        if let Ok(mut pids) = self.pids.lock() {
            pids.remove(id);
        }
    }

    /// Writes whatever is queued (unless `mine` was already written by another task), synced
    /// when any of it is a record.
    async fn flush(&self, mine: &Outcome) {
        let mut w = self.writer.lock().await;
        if mine.get().is_some() && self.queue.lock().map(|q| q.is_empty()).unwrap_or(true) {
            return;
        }
        let batch = match self.queue.lock() {
            Ok(mut q) => std::mem::take(&mut *q),
            Err(_) => return,
        };
        if batch.is_empty() {
            return;
        }
        let sync = batch.iter().any(|(_, o)| o.is_some());
        let bytes: Vec<u8> = batch.iter().flat_map(|(l, _)| l.bytes()).collect();
        let compact = (w.len + bytes.len() as u64 > COMPACT_AT).then(|| self.snapshot());
        let path = self.path.clone();
        let file = w.file.take();
        let len = w.len;
        let r = blocking::unblock(move || write(&path, file, len, &bytes, sync, compact)).await;
        let result = match r {
            Ok((file, len)) => {
                w.file = Some(file);
                w.len = len;
                Ok(())
            }
            Err(e) => {
                tracing::warn!("cannot write {}: {e}", self.path.display());
                Err((e.kind(), format!("{}: {e}", self.path.display())))
            }
        };
        for (_, outcome) in batch {
            if let Some(o) = outcome {
                let _ = o.set(result.clone());
            }
        }
    }

    /// Every live record as journal lines, each with its process when one was noted.
    fn snapshot(&self) -> Vec<u8> {
        let live = self.live.lock().map(|l| l.clone()).unwrap_or_default();
        let pids = self.pids.lock().map(|p| p.clone()).unwrap_or_default();
        live.values()
            .flat_map(|id| {
                let mut lines = format!("+{id}\n");
                if let Some((pid, st)) = pids.get(id) {
                    lines.push_str(&format!("={id} {pid} {st}\n"));
                }
                lines.into_bytes()
            })
            .collect()
    }
}

/// Appends `bytes` to the journal (opened, and created durably, when `file` is `None`), syncs
/// when asked, and rewrites it as `compact` (the live records) when given. Blocking.
fn write(
    path: &Path,
    file: Option<std::fs::File>,
    len: u64,
    bytes: &[u8],
    sync: bool,
    compact: Option<Vec<u8>>,
) -> std::io::Result<(std::fs::File, u64)> {
    let dir = path.parent().unwrap_or(Path::new("."));
    if let Some(live) = compact {
        // The live records already include this batch's: one new file, synced, put in place.
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&live)?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()?;
        let f = std::fs::OpenOptions::new().append(true).open(path)?;
        return Ok((f, live.len() as u64));
    }
    let (mut f, mut len, created) = match file {
        Some(f) => (f, len, false),
        None => {
            let existed = path.exists();
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(path)?;
            let len = f.metadata()?.len();
            // A crash may have cut the last line short: never glue a record onto it.
            let mut last = [b'\n'];
            if len > 0 {
                f.seek(std::io::SeekFrom::Start(len - 1))?;
                f.read_exact(&mut last)?;
            }
            if last[0] != b'\n' {
                f.write_all(b"\n")?;
            }
            (f, len + u64::from(last[0] != b'\n'), !existed)
        }
    };
    f.write_all(bytes)?;
    len += bytes.len() as u64;
    if sync {
        f.sync_data()?;
        if created {
            std::fs::File::open(dir)?.sync_all()?;
        }
    }
    Ok((f, len))
}

/// The live records of `instance` in a journal's text, and the processes noted for them.
type Replayed = (
    BTreeMap<(String, String), String>,
    BTreeMap<String, (u32, u64)>,
);

fn replay(bytes: &[u8], instance: &str) -> Replayed {
    let mut live = BTreeMap::new();
    let mut pids = BTreeMap::new();
    let text = String::from_utf8_lossy(bytes);
    // Only whole lines: a last line without its newline was never completely written.
    let whole = text.rfind('\n').map_or("", |i| &text[..i]);
    for line in whole.lines() {
        let (add, id) = match line.split_at_checked(1) {
            Some(("+", id)) => (true, id),
            Some(("-", id)) => (false, id),
            Some(("=", rest)) => {
                let mut words = rest.split(' ');
                if let (Some(id), Some(pid), Some(st), None) =
                    (words.next(), words.next(), words.next(), words.next())
                    && parse_id(id, instance).is_some()
                    && let (Ok(pid), Ok(st)) = (pid.parse::<u32>(), st.parse::<u64>())
                {
                    pids.insert(id.to_owned(), (pid, st));
                }
                continue;
            }
            _ => continue,
        };
        let Some(key) = parse_id(id, instance) else {
            continue;
        };
        if add {
            live.insert(key, id.to_owned());
        } else if live.get(&key).is_some_and(|cur| cur == id) {
            live.remove(&key);
        }
    }
    let current: std::collections::BTreeSet<&String> = live.values().collect();
    pids.retain(|id, _| current.contains(id));
    (live, pids)
}

/// (project, service) of a well-formed launch id of `instance`.
fn parse_id(id: &str, instance: &str) -> Option<(String, String)> {
    if id.chars().any(char::is_control) {
        return None;
    }
    let mut parts = id.split('/');
    let (daemon, project, service, run) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let run_ok = run.split('-').count() == 3
        && run
            .split('-')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    (parts.next().is_none()
        && daemon == instance
        && !project.is_empty()
        && !service.is_empty()
        && run_ok)
        .then(|| (project.to_owned(), service.to_owned()))
}

fn cgroup_name(project: &str, service: &str) -> String {
    format!("{project}:{service}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_keeps_the_last_record_and_skips_a_cut_line() {
        let text = "+d/p/a/1-2-3\n+d/p/b/1-2-4\n-d/p/a/1-2-3\n+d/p/c/1-2-5\n-d/p/c/1-2-0\n\
                    garbage\n+other/p/x/1-2-6\n+d/p/e/1-2-7";
        let (live, _) = replay(text.as_bytes(), "d");
        let ids: Vec<&str> = live.values().map(String::as_str).collect();
        // a forgotten; c's `-` names an older launch; e's line was cut short.
        assert_eq!(ids, ["d/p/b/1-2-4", "d/p/c/1-2-5"]);
    }

    #[test]
    fn records_survive_a_reload_and_forgets_too() {
        let dir = tempfile::tempdir().unwrap();
        let l = Launches::new(dir.path());
        let (a, b) = (l.next("p", "a"), l.next("p", "b"));
        smol::block_on(async {
            l.record("p", "a", &a).await.unwrap();
            l.record("p", "b", &b).await.unwrap();
            l.forget("p", "a").await;
            l.written().await;
        });
        let again = Launches::new(dir.path());
        assert_eq!(again.recorded("p", "a"), None);
        assert_eq!(again.recorded("p", "b"), Some(b.clone()));
        // A cut last line is never glued to the next record.
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL))
            .unwrap()
            .write_all(b"+cut")
            .unwrap();
        let c = again.next("p", "c");
        smol::block_on(again.record("p", "c", &c)).unwrap();
        let third = Launches::new(dir.path());
        assert_eq!(third.recorded("p", "c"), Some(c));
        assert_eq!(third.recorded("p", "b"), Some(b));
    }

    #[test]
    fn a_noted_pid_survives_a_reload_and_a_compaction_and_goes_with_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let l = Launches::new(dir.path());
        let (a, b) = (l.next("p", "a"), l.next("p", "b"));
        smol::block_on(async {
            l.record("p", "a", &a).await.unwrap();
            l.record("p", "b", &b).await.unwrap();
            l.note_pid(&a, 4242, 77).await;
            l.note_pid(&b, 4343, 78).await;
            l.forget("p", "b").await;
            l.written().await;
        });
        let again = Launches::new(dir.path());
        assert_eq!(again.pid_of(&a), Some((4242, 77)));
        assert_eq!(again.pid_of(&b), None);
        // A new launch of `a` has no process yet: the old one's pid is not its.
        let a2 = again.next("p", "a");
        smol::block_on(again.record("p", "a", &a2)).unwrap();
        let third = Launches::new(dir.path());
        assert_eq!(third.pid_of(&a2), None);
        // Compaction keeps the live records' pids.
        let compacted = third.journal.snapshot();
        assert_eq!(String::from_utf8(compacted).unwrap(), format!("+{a2}\n"));
        smol::block_on(third.note_pid(&a2, 5, 6));
        let snap = String::from_utf8(third.journal.snapshot()).unwrap();
        assert_eq!(snap, format!("+{a2}\n={a2} 5 6\n"));
        let (live, pids) = replay(snap.as_bytes(), &third.instance);
        assert_eq!(live.len(), 1);
        assert_eq!(pids.get(&a2), Some(&(5, 6)));
    }

    #[test]
    fn concurrent_records_share_writes_and_all_persist() {
        let dir = tempfile::tempdir().unwrap();
        let l = Arc::new(Launches::new(dir.path()));
        let ids: Vec<(String, String)> = (0..50)
            .map(|i| (format!("s{i}"), l.next("p", &format!("s{i}"))))
            .collect();
        smol::block_on(async {
            let tasks: Vec<_> = ids
                .iter()
                .cloned()
                .map(|(s, id)| {
                    let l = l.clone();
                    smol::spawn(async move { l.record("p", &s, &id).await })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        let again = Launches::new(dir.path());
        for (s, id) in ids {
            assert_eq!(again.recorded("p", &s), Some(id));
        }
    }

    #[test]
    fn a_wave_is_one_sync_and_each_id_is_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let l = Launches::new(dir.path());
        let names: Vec<String> = (0..100).map(|i| format!("s{i}")).collect();
        smol::block_on(l.record_wave("p", &names)).unwrap();
        let id = l.take_recorded("p", "s7").unwrap();
        assert_eq!(l.recorded("p", "s7"), Some(id));
        assert_eq!(l.take_recorded("p", "s7"), None);
        // Forgotten before its launch: the id is not used.
        smol::block_on(async {
            l.forget("p", "s8").await;
            l.written().await;
        });
        assert_eq!(l.take_recorded("p", "s8"), None);
        let again = Launches::new(dir.path());
        assert!(again.recorded("p", "s99").is_some());
        assert_eq!(again.recorded("p", "s8"), None);
    }

    #[test]
    fn a_long_journal_is_compacted_to_the_live_records() {
        let dir = tempfile::tempdir().unwrap();
        let l = Launches::new(dir.path());
        // Long lines (about 300 bytes a record and its forget) pass the threshold sooner.
        let crashy = "c".repeat(120);
        smol::block_on(async {
            for _ in 0..1000 {
                let id = l.next("p", &crashy);
                l.record("p", &crashy, &id).await.unwrap();
                l.forget("p", &crashy).await;
            }
            let id = l.next("p", "last");
            l.record("p", "last", &id).await.unwrap();
            l.written().await;
        });
        let len = std::fs::metadata(dir.path().join(JOURNAL)).unwrap().len();
        assert!(len < COMPACT_AT, "journal is {len} bytes");
        let again = Launches::new(dir.path());
        assert!(again.recorded("p", "last").is_some());
        assert_eq!(again.recorded("p", &crashy), None);
    }
}
