//! Service output: drained at all times, kept in rotated files, served with tail and follow.
//!
//! A service writes into two raw files (`stdout`, `stderr`) that it holds open with `O_APPEND`;
//! nothing it writes can block or be lost when the daemon is slow or dead. The daemon's pump
//! copies complete lines into `<service>.log` (`TIME STREAM TEXT`, size-rotated into
//! `.log.1 ..`), into an in-memory tail ring and to live followers, records how far it got in
//! `offsets`, and punches holes (`fallocate(PUNCH_HOLE)`) into what it consumed, so the raw files
//! take no disk space for copied output yet are never truncated under the writer. After a daemon
//! restart the pump resumes from `offsets`; when a process ends, the pump drains to the end
//! before the exit is recorded, so the last lines always come first.
//!
//! Reading polls every 5 ms while output flows. A quiet pump sleeps until inotify reports a
//! write to `stdout`/`stderr` (one watch per service directory, [`wake`]), with a safety poll
//! every 2 s; where inotify is not usable it polls, backing off to 200 ms. Exits do not depend on
//! it (see `runtime`).

mod wake;

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_channel::{Receiver, Sender};
use async_io::Timer;
use event_listener::Event;
use futures_lite::{FutureExt, Stream};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Longest line kept whole; longer ones are split.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Lines of each service kept in memory for `--tail` without reading files.
const RING_LINES: usize = 2_000;
/// A follower this far behind is cut off rather than buffering without bound.
const MAX_FOLLOWER_BACKLOG: usize = 200_000;
const READ_CHUNK: usize = 1 << 20;
/// Longest sleep of a quiet pump whose directory has an inotify watch: a safety net only.
const IDLE_WATCHED: Duration = Duration::from_secs(2);
/// Longest sleep of a quiet pump that polls (no inotify).
const IDLE_POLLED: Duration = Duration::from_millis(200);
const PUNCH_EVERY: u64 = 1 << 20;
/// Space kept allocated past the end of the raw files of a service that writes
/// (`fallocate(KEEP_SIZE)`, renewed as the pump copies; released when the run ends), so that
/// its own writes still land when its disk fills up: the daemon counts and marks the lines it
/// cannot keep, and there are no lines the service could not write at all (a service that
/// printed nothing reserves nothing).
const RESERVE: u64 = 256 << 10;

/// Which output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    Stdout,
    Stderr,
}

impl StreamKind {
    fn tag(self) -> &'static str {
        match self {
            StreamKind::Stdout => "out",
            StreamKind::Stderr => "err",
        }
    }
}

/// One line a service printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub service: String,
    pub stream: StreamKind,
    /// When the daemon read it (within a few ms of when it was written while the daemon runs).
    pub time: Timestamp,
    /// The line without its newline; invalid UTF-8 replaced.
    pub text: String,
}

/// Which lines `logs` returns.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LogQuery {
    pub project: String,
    /// Empty means every service of the project.
    #[serde(default)]
    pub services: Vec<String>,
    /// At most this many of the latest lines per service (before following).
    #[serde(default)]
    pub tail: Option<usize>,
    /// Only lines read at or after this time.
    #[serde(default)]
    pub since: Option<Timestamp>,
    /// Keep delivering new lines, across restarts, until the stream is dropped.
    #[serde(default)]
    pub follow: bool,
}

/// Size-based rotation of `<service>.log`.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Rotate when the current file would grow past this.
    pub max_bytes: u64,
    /// Rotated files kept (`.log.1` newest).
    pub keep: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_bytes: 32 << 20,
            keep: 4,
        }
    }
}

/// Lines from `Orchestrator::logs`: history first (ordered by time), then live lines when
/// following. Ends when history is exhausted, or, when following, when dropped.
pub struct Logs {
    rx: Pin<Box<Receiver<LogLine>>>,
    _tasks: Vec<smol::Task<()>>,
}

impl Logs {
    pub async fn next(&mut self) -> Option<LogLine> {
        self.rx.recv().await.ok()
    }
}

impl Stream for Logs {
    type Item = LogLine;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LogLine>> {
        self.rx.as_mut().poll_next(cx)
    }
}

/// Where a service's files live and who listens; shared by every run of the service, so
/// followers keep receiving across restarts.
pub(crate) struct LogHub {
    service: String,
    dir: PathBuf,
    /// The daemon's default, or the service's `logging:` (set with each apply).
    limits: std::sync::Mutex<LogLimits>,
    state: async_lock::Mutex<HubState>,
}

#[derive(Default)]
struct HubState {
    ring: VecDeque<LogLine>,
    followers: Vec<Sender<LogLine>>,
    /// Lines that could not be written to the log file and are not yet marked in it.
    gap: Option<Gap>,
}

/// Lines lost from the log file, per stream, since the last line that was written.
#[derive(Debug, Clone, Default, PartialEq)]
struct Gap {
    lost: [u64; 2],
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    reason: String,
    /// The OS error, kept with the offsets so that a daemon restart keeps the marker.
    errno: i32,
}

impl Gap {
    fn add(&mut self, lines: &[LogLine], reason: &std::io::Error) {
        for l in lines {
            self.lost[stream_index(l.stream)] += 1;
            self.since.get_or_insert(l.time);
            self.until = Some(l.time);
        }
        self.reason = reason_text(reason);
        self.errno = reason.raw_os_error().unwrap_or(0);
    }

    /// One marker line per stream that lost lines, as they are shown and written.
    fn markers(&self, service: &str, time: Timestamp) -> Vec<LogLine> {
        let span = match (self.since, self.until) {
            (Some(a), Some(b)) => format!(", read between {a} and {b}"),
            _ => String::new(),
        };
        STREAMS
            .iter()
            .enumerate()
            .filter(|(i, _)| self.lost[*i] > 0)
            .map(|(i, (_, stream))| LogLine {
                service: service.to_owned(),
                stream: *stream,
                time,
                text: format!(
                    "… {} lines lost: {} (the log file could not be written{span}) …",
                    self.lost[i], self.reason
                ),
            })
            .collect()
    }
}

fn stream_index(s: StreamKind) -> usize {
    match s {
        StreamKind::Stdout => 0,
        StreamKind::Stderr => 1,
    }
}

/// `no space left on device`: the error as a reader of the marker wants it.
fn reason_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

impl LogHub {
    pub fn new(service: &str, dir: PathBuf, limits: LogLimits) -> Arc<LogHub> {
        Arc::new(LogHub {
            service: service.to_owned(),
            dir,
            limits: std::sync::Mutex::new(limits),
            state: async_lock::Mutex::new(HubState::default()),
        })
    }

    fn limits(&self) -> LogLimits {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_limits(&self, limits: LogLimits) {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    /// Deletes the log file and its rotated files, and the lines kept in memory; followers stay.
    pub async fn clear(&self) -> std::io::Result<()> {
        let mut st = self.state.lock().await;
        st.ring.clear();
        let path = self.log_path();
        let keep = self.limits().keep;
        blocking::unblock(move || {
            // Also files of a larger `max_files` from before.
            for k in (1..=keep.max(1) + 16).rev() {
                match std::fs::remove_file(rotated(&path, k)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })
        .await
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.service))
    }

    /// The last `n` lines from memory, as text.
    pub async fn last_lines(&self, n: usize) -> Vec<String> {
        let st = self.state.lock().await;
        let skip = st.ring.len().saturating_sub(n);
        st.ring.iter().skip(skip).map(|l| l.text.clone()).collect()
    }

    /// Empties the raw files and the offsets before a new run writes into them.
    pub async fn reset_raw(&self) -> std::io::Result<()> {
        let dir = self.dir.clone();
        let gap = self.state.lock().await.gap.clone();
        blocking::unblock(move || {
            std::fs::create_dir_all(&dir)?;
            for name in ["stdout", "stderr"] {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(dir.join(name))?;
            }
            match gap {
                // Lines lost before this run are still owed a marker: kept with the offsets.
                Some(g) => write_offsets(&dir, [0, 0], Some(&g)),
                // No offsets file reads as 0 0: removing it costs no new file (and inode) per
                // launch, as writing 0 0 did.
                None => match std::fs::remove_file(dir.join("offsets")) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                },
            }
        })
        .await
    }

    /// Starts copying the raw files, from the recorded offsets.
    pub fn pump(self: &Arc<Self>) -> Pump {
        let finish = Arc::new(Finish::default());
        let hub = self.clone();
        let asked = finish.clone();
        let task = smol::spawn(async move { hub.run_pump(asked).await });
        Pump { finish, task }
    }

    async fn run_pump(self: Arc<Self>, finish: Arc<Finish>) {
        let dir = self.dir.clone();
        let (start, gap, watch) = blocking::unblock(move || {
            let (start, gap) = read_offsets(&dir);
            (start, gap, wake::Watch::new(&dir))
        })
        .await;
        let longest_idle = if watch.is_some() {
            IDLE_WATCHED
        } else {
            IDLE_POLLED
        };
        if let Some(gap) = gap {
            // Lines lost before a daemon restart, not yet marked in the file.
            self.state.lock().await.gap.get_or_insert(gap);
        }
        let mut cur = Cursor {
            committed: start,
            read: start,
            partial: [Vec::new(), Vec::new()],
            punched: [0, 0],
            files: [None, None],
            last_read_any: false,
        };
        let mut idle = Duration::from_millis(5);
        let mut finishing = false;
        loop {
            // Before reading: a write after the read below wakes the wait below.
            let written = watch.as_ref().map(wake::Watch::listen);
            let dir = self.dir.clone();
            let (c, got) = blocking::unblock(move || {
                let got = cur.read_some_from(&dir);
                (cur, got)
            })
            .await;
            cur = c;
            let final_round = finishing && got.iter().all(Vec::is_empty);
            let lines = cur.split(got, final_round, &self.service);
            if !lines.is_empty() || final_round {
                self.commit(lines, &mut cur, final_round).await;
            }
            if final_round {
                return;
            }
            if finishing {
                continue;
            }
            // While output flows, reads are batched every 5 ms (not woken per write).
            let written = if cur.last_read_any {
                idle = Duration::from_millis(5);
                None
            } else {
                idle = (idle * 2).min(longest_idle);
                written
            };
            let woke = async {
                Timer::after(idle).await;
                false
            }
            .or(async {
                match written {
                    Some(l) => l.await,
                    None => std::future::pending().await,
                }
                false
            })
            .or(async {
                finish.wait().await;
                true
            })
            .await;
            if woke {
                finishing = true;
            }
        }
    }

    /// Writes lines to the log file, the ring and followers, then records the offsets. Lines
    /// the log file does not take (disk full) are counted; the count is written as a marker line
    /// (`… 9696 lines lost: no space left on device …`) before the next lines that are written,
    /// and shown by `logs` until then.
    async fn commit(&self, lines: Vec<LogLine>, cur: &mut Cursor, final_round: bool) {
        let mut st = self.state.lock().await;
        let mut failed = false;
        if !lines.is_empty() {
            let markers = st
                .gap
                .as_ref()
                .map(|g| g.markers(&self.service, lines[0].time))
                .unwrap_or_default();
            let mut buf = Vec::with_capacity(lines.len() * 64);
            // Where each line ends in `buf`, to count what a short write lost.
            let mut ends = Vec::with_capacity(lines.len());
            for l in &markers {
                let _ = writeln!(buf, "{} {} {}", l.time, l.stream.tag(), l.text);
            }
            let markers_end = buf.len();
            for l in &lines {
                let _ = writeln!(buf, "{} {} {}", l.time, l.stream.tag(), l.text);
                ends.push(buf.len());
            }
            let path = self.log_path();
            let limits = self.limits();
            let in_gap = st.gap.is_some();
            let (written, error) =
                blocking::unblock(move || append_rotating(&path, &buf, limits, in_gap)).await;
            if written >= markers_end && !markers.is_empty() {
                if let Some(g) = st.gap.take() {
                    tracing::warn!(service = %self.service, lost = ?g.lost, "log writing resumed after lines were lost: {}", g.reason);
                }
                for m in markers {
                    push_ring(&mut st.ring, m);
                }
            }
            if let Some(e) = error {
                failed = true;
                let kept = ends.iter().filter(|&&end| end <= written).count();
                let lost = &lines[kept..];
                if !lost.is_empty() {
                    if st.gap.is_none() {
                        tracing::warn!(service = %self.service, "cannot write the log file: {e}; counting the lines lost");
                    }
                    st.gap.get_or_insert_with(Gap::default).add(lost, &e);
                }
            }
        }
        let dir = self.dir.clone();
        let committed = cur.committed;
        // After a failed write, consumed output is released at once: the disk is full.
        let eager = final_round || failed;
        let punch: Vec<(usize, u64)> = (0..2)
            .filter(|&i| {
                committed[i] > cur.punched[i]
                    && (eager || committed[i] - cur.punched[i] >= PUNCH_EVERY)
            })
            .map(|i| (i, committed[i]))
            .collect();
        let files = [
            cur.files[0].as_ref().and_then(|f| f.try_clone().ok()),
            cur.files[1].as_ref().and_then(|f| f.try_clone().ok()),
        ];
        let wrote = !lines.is_empty();
        let gap = st.gap.clone();
        let _ = blocking::unblock(move || {
            for (i, upto) in &punch {
                if let Some(f) = &files[*i] {
                    // Consumed bytes only; the writer keeps appending past them.
                    let _ = rustix::fs::fallocate(
                        f,
                        rustix::fs::FallocateFlags::PUNCH_HOLE
                            | rustix::fs::FallocateFlags::KEEP_SIZE,
                        0,
                        *upto,
                    );
                }
            }
            for f in files.iter().flatten() {
                if final_round {
                    reserve_no_more(f);
                } else if wrote {
                    reserve(f);
                }
            }
            write_offsets(&dir, committed, gap.as_ref())
        })
        .await;
        for (punched, done) in cur.punched.iter_mut().zip(committed) {
            if eager || done - *punched >= PUNCH_EVERY {
                *punched = done;
            }
        }
        for l in lines {
            st.followers
                .retain(|f| f.len() < MAX_FOLLOWER_BACKLOG && f.try_send(l.clone()).is_ok());
            push_ring(&mut st.ring, l);
        }
    }

    /// History per the query, and a live receiver when following (subscribed under the same lock
    /// as the history read, so no line is missed or repeated).
    async fn query(
        &self,
        since: Option<Timestamp>,
        tail: Option<usize>,
        follow: bool,
    ) -> (Vec<LogLine>, Option<Receiver<LogLine>>) {
        let mut st = self.state.lock().await;
        let from_ring = since.is_none() && tail.is_some_and(|n| n <= st.ring.len());
        let mut lines: Vec<LogLine> = if from_ring {
            st.ring.iter().cloned().collect()
        } else {
            let path = self.log_path();
            let keep = self.limits().keep;
            let service = self.service.clone();
            blocking::unblock(move || read_log_files(&path, keep, &service, since, tail)).await
        };
        // Lost lines not yet marked in the file are marked here.
        if let Some(g) = &st.gap {
            lines.extend(g.markers(&self.service, g.until.unwrap_or_else(Timestamp::now)));
        }
        if let Some(n) = tail {
            let skip = lines.len().saturating_sub(n);
            lines.drain(..skip);
        }
        let rx = follow.then(|| {
            let (tx, rx) = async_channel::unbounded();
            st.followers.push(tx);
            rx
        });
        (lines, rx)
    }
}

/// Streams `hubs` per the query.
pub(crate) async fn serve(hubs: Vec<Arc<LogHub>>, q: &LogQuery) -> Logs {
    let mut history = Vec::new();
    let mut live = Vec::new();
    for hub in &hubs {
        let (lines, rx) = hub.query(q.since, q.tail, q.follow).await;
        history.extend(lines);
        live.extend(rx);
    }
    history.sort_by_key(|l| l.time);
    let (tx, rx) = async_channel::bounded(4096);
    let mut tasks = Vec::new();
    let history_sent = {
        let (done_tx, done_rx) = async_channel::bounded::<()>(1);
        let tx = tx.clone();
        tasks.push(smol::spawn(async move {
            for l in history {
                if tx.send(l).await.is_err() {
                    return;
                }
            }
            drop(done_tx);
        }));
        done_rx
    };
    for live_rx in live {
        let tx = tx.clone();
        let history_sent = history_sent.clone();
        tasks.push(smol::spawn(async move {
            let _ = history_sent.recv().await;
            while let Ok(l) = live_rx.recv().await {
                if tx.send(l).await.is_err() {
                    return;
                }
            }
        }));
    }
    if !q.follow {
        drop(tx);
    } else {
        // Following never ends on its own: keep one sender alive with the stream.
        tasks.push(smol::spawn(async move {
            let _keep = tx;
            futures_lite::future::pending::<()>().await;
        }));
    }
    Logs {
        rx: Box::pin(rx),
        _tasks: tasks,
    }
}

fn push_ring(ring: &mut VecDeque<LogLine>, l: LogLine) {
    if ring.len() == RING_LINES {
        ring.pop_front();
    }
    ring.push_back(l);
}

/// Keeps [`RESERVE`] bytes allocated past the end of a raw file (best effort).
fn reserve(f: &File) {
    if let Ok(m) = f.metadata() {
        let _ = rustix::fs::fallocate(f, rustix::fs::FallocateFlags::KEEP_SIZE, m.len(), RESERVE);
    }
}

/// Releases what [`reserve`] kept.
fn reserve_no_more(f: &File) {
    if let Ok(m) = f.metadata() {
        let _ = rustix::fs::fallocate(
            f,
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            m.len(),
            RESERVE,
        );
    }
}

/// A running pump; [`Pump::finish`] drains everything left and stops it.
pub(crate) struct Pump {
    finish: Arc<Finish>,
    task: smol::Task<()>,
}

impl Pump {
    pub async fn finish(self) {
        self.finish.asked.store(true, Ordering::SeqCst);
        self.finish.event.notify(usize::MAX);
        self.task.await;
    }
}

/// Asks a pump to finish: a flag and its event (a channel would take ~800 bytes per service
/// for one message in a run's life).
#[derive(Default)]
struct Finish {
    asked: AtomicBool,
    event: Event,
}

impl Finish {
    async fn wait(&self) {
        loop {
            let listener = self.event.listen();
            if self.asked.load(Ordering::SeqCst) {
                return;
            }
            listener.await;
        }
    }
}

struct Cursor {
    /// Bytes of each raw file copied as complete lines.
    committed: [u64; 2],
    /// Bytes read (committed plus the partial line held in memory).
    read: [u64; 2],
    partial: [Vec<u8>; 2],
    punched: [u64; 2],
    files: [Option<File>; 2],
    last_read_any: bool,
}

const STREAMS: [(&str, StreamKind); 2] = [
    ("stdout", StreamKind::Stdout),
    ("stderr", StreamKind::Stderr),
];

impl Cursor {
    fn read_some_from(&mut self, dir: &Path) -> [Vec<u8>; 2] {
        let mut out = [Vec::new(), Vec::new()];
        for (i, (name, _)) in STREAMS.iter().enumerate() {
            if self.files[i].is_none() {
                // Writable only for fallocate: the pump never writes to raw files.
                self.files[i] = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(dir.join(name))
                    .ok();
            }
            let Some(f) = &self.files[i] else { continue };
            // An idle service costs one fstat per poll, no buffer.
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let want = len.saturating_sub(self.read[i]).min(4 * READ_CHUNK as u64) as usize;
            if want == 0 {
                continue;
            }
            let mut buf = vec![0u8; want];
            let mut got = 0;
            while got < want {
                match f.read_at(&mut buf[got..], self.read[i] + got as u64) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            buf.truncate(got);
            self.read[i] += got as u64;
            out[i] = buf;
        }
        self.last_read_any = out.iter().any(|b| !b.is_empty());
        out
    }

    /// Complete lines (all of it when `flush`), advancing `committed` past them.
    fn split(&mut self, got: [Vec<u8>; 2], flush: bool, service: &str) -> Vec<LogLine> {
        let time = Timestamp::now();
        let mut lines = Vec::new();
        for (i, bytes) in got.into_iter().enumerate() {
            let stream = STREAMS[i].1;
            let mut data = std::mem::take(&mut self.partial[i]);
            data.extend_from_slice(&bytes);
            let mut start = 0;
            let mut push = |line: &[u8], consumed: usize, committed: &mut u64| {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                lines.push(LogLine {
                    service: service.to_owned(),
                    stream,
                    time,
                    text: String::from_utf8_lossy(line).into_owned(),
                });
                *committed += consumed as u64;
            };
            while start < data.len() {
                let rest = &data[start..];
                match rest.iter().position(|&b| b == b'\n') {
                    Some(n) if n <= MAX_LINE_BYTES => {
                        push(&rest[..n], n + 1, &mut self.committed[i]);
                        start += n + 1;
                    }
                    _ if rest.len() > MAX_LINE_BYTES => {
                        push(
                            &rest[..MAX_LINE_BYTES],
                            MAX_LINE_BYTES,
                            &mut self.committed[i],
                        );
                        start += MAX_LINE_BYTES;
                    }
                    _ => break,
                }
            }
            let rest = &data[start..];
            if flush && !rest.is_empty() {
                push(rest, rest.len(), &mut self.committed[i]);
            } else {
                self.partial[i] = rest.to_vec();
            }
        }
        lines
    }
}

/// The offsets, and the lines lost and not yet marked in the log file.
fn read_offsets(dir: &Path) -> ([u64; 2], Option<Gap>) {
    let text = std::fs::read_to_string(dir.join("offsets")).unwrap_or_default();
    let f: Vec<i64> = text
        .split_whitespace()
        .map(|w| w.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    let offsets = [at(0).max(0) as u64, at(1).max(0) as u64];
    let lost = [at(2).max(0) as u64, at(3).max(0) as u64];
    let gap = (lost != [0, 0]).then(|| {
        let time = |ms: i64| {
            (ms > 0)
                .then(|| Timestamp::from_millisecond(ms).ok())
                .flatten()
        };
        let errno = i32::try_from(at(4)).unwrap_or(0);
        Gap {
            lost,
            since: time(at(5)),
            until: time(at(6)),
            reason: if errno > 0 {
                reason_text(&std::io::Error::from_raw_os_error(errno))
            } else {
                "an I/O error".into()
            },
            errno,
        }
    });
    (offsets, gap)
}

/// Records the offsets: a new file renamed over the old one, or, when that cannot be written
/// (disk full), the old file overwritten in place, which needs no new space (fixed width).
fn write_offsets(dir: &Path, offsets: [u64; 2], gap: Option<&Gap>) -> std::io::Result<()> {
    let g = gap.cloned().unwrap_or_default();
    let ms = |t: Option<Timestamp>| t.map_or(0, |t| t.as_millisecond());
    let text = format!(
        "{:020} {:020} {:020} {:020} {:010} {:020} {:020}\n",
        offsets[0],
        offsets[1],
        g.lost[0],
        g.lost[1],
        g.errno,
        ms(g.since),
        ms(g.until)
    );
    let tmp = dir.join("offsets.tmp");
    let renamed =
        std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, dir.join("offsets")));
    match renamed {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("offsets"))
                .map_err(|_| e)?;
            f.write_all_at(text.as_bytes(), 0)
        }
    }
}

fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

/// Appends whole lines, rotating before a line would take the file past `max_bytes` (a single
/// longer line gets a file of its own). Returns how many bytes of `buf` were written, and the
/// error that stopped it; a chunk that was written only in part is cut back to its last whole
/// line, or, `all_or_nothing`, to where it began (while lines are being lost, a write that
/// only fits in part would scatter small gaps through the file).
fn append_rotating(
    path: &Path,
    buf: &[u8],
    limits: LogLimits,
    all_or_nothing: bool,
) -> (usize, Option<std::io::Error>) {
    let whole = |chunk: &[u8], done: usize| {
        if all_or_nothing {
            0
        } else {
            whole(chunk, done)
        }
    };
    let done_partly = |f: &File, size: u64, chunk: &[u8], done: usize| {
        let _ = f.set_len(size + whole(chunk, done) as u64);
    };
    let mut size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut rest = buf;
    let mut written = 0;
    while !rest.is_empty() {
        let room = limits.max_bytes.saturating_sub(size) as usize;
        // As many whole lines as fit; at least one line into an empty file.
        let mut take = 0;
        for (i, b) in rest.iter().enumerate() {
            if *b == b'\n' {
                if i + 1 > room && !(take == 0 && size == 0) {
                    break;
                }
                take = i + 1;
                if i + 1 > room {
                    break;
                }
            }
        }
        if take == 0 && size > 0 {
            if let Err(e) = rotate(path, limits.keep) {
                return (written, Some(e));
            }
            size = 0;
            continue;
        }
        if take == 0 {
            take = rest.len();
        }
        // 0600: service output may hold secrets.
        let mut f = match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
        {
            Ok(f) => f,
            Err(e) => return (written, Some(e)),
        };
        let chunk = &rest[..take];
        let mut done = 0;
        while done < chunk.len() {
            match f.write(&chunk[done..]) {
                Ok(0) => {
                    done_partly(&f, size, chunk, done);
                    let e = std::io::Error::from(std::io::ErrorKind::WriteZero);
                    return (written + whole(chunk, done), Some(e));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    done_partly(&f, size, chunk, done);
                    return (written + whole(chunk, done), Some(e));
                }
            }
        }
        size += take as u64;
        written += take;
        rest = &rest[take..];
    }
    (written, None)
}

/// Bytes of the whole lines among the first `done` bytes of `chunk`.
fn whole(chunk: &[u8], done: usize) -> usize {
    chunk[..done]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1)
}

fn rotate(path: &Path, keep: usize) -> std::io::Result<()> {
    let keep = keep.max(1);
    let _ = std::fs::remove_file(rotated(path, keep));
    for k in (1..keep).rev() {
        let _ = std::fs::rename(rotated(path, k), rotated(path, k + 1));
    }
    std::fs::rename(path, rotated(path, 1))
}

/// The lines of the log files, oldest first; with `tail`, only the last `tail` of them are ever
/// held (a `--tail 100` of a 500,000-line history keeps 100 lines, not all).
fn read_log_files(
    path: &Path,
    keep: usize,
    service: &str,
    since: Option<Timestamp>,
    tail: Option<usize>,
) -> Vec<LogLine> {
    let cap = tail.unwrap_or(usize::MAX);
    if cap == 0 {
        return Vec::new();
    }
    let mut out = VecDeque::new();
    let mut files: Vec<PathBuf> = (1..=keep.max(1)).rev().map(|k| rotated(path, k)).collect();
    files.push(path.to_path_buf());
    for f in files {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        for raw in bytes.split(|&b| b == b'\n') {
            let Some(line) = parse_log_line(raw, service) else {
                continue;
            };
            if since.is_some_and(|s| line.time < s) {
                continue;
            }
            if out.len() == cap {
                out.pop_front();
            }
            out.push_back(line);
        }
    }
    out.into()
}

fn parse_log_line(raw: &[u8], service: &str) -> Option<LogLine> {
    let text = String::from_utf8_lossy(raw);
    let (time, rest) = text.split_once(' ')?;
    let (tag, text) = rest.split_once(' ').unwrap_or((rest, ""));
    let stream = match tag {
        "out" => StreamKind::Stdout,
        "err" => StreamKind::Stderr,
        _ => return None,
    };
    Some(LogLine {
        service: service.to_owned(),
        stream,
        time: time.parse().ok()?,
        text: text.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_read_keeps_only_the_last_lines_across_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        let t = Timestamp::now();
        let write = |p: &Path, from: usize, to: usize| {
            let text: String = (from..to).map(|i| format!("{t} out line {i}\n")).collect();
            std::fs::write(p, text).unwrap();
        };
        write(&rotated(&path, 2), 0, 100);
        write(&rotated(&path, 1), 100, 200);
        write(&path, 200, 250);
        let texts =
            |lines: Vec<LogLine>| -> Vec<String> { lines.into_iter().map(|l| l.text).collect() };
        let all = read_log_files(&path, 2, "svc", None, None);
        assert_eq!(all.len(), 250);
        let last = texts(read_log_files(&path, 2, "svc", None, Some(80)));
        let want: Vec<String> = (170..250).map(|i| format!("line {i}")).collect();
        assert_eq!(last, want);
        assert!(read_log_files(&path, 2, "svc", None, Some(0)).is_empty());
        assert_eq!(read_log_files(&path, 2, "svc", None, Some(1000)).len(), 250);
    }
}
