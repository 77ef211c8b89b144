//! Process events and the bounded queue that carries them.
//!
//! Output is read continuously whether anyone listens or not, so a child never blocks on a full pipe. The
//! queue is bounded in bytes: when a listener falls that far behind, the oldest lines are dropped and a
//! [`Event::Lost`] tells how many. Lines longer than [`MAX_LINE`] are split, never dropped.

use std::borrow::Cow;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures_lite::Stream;
use futures_lite::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::error::Error;
use crate::process::ProcessId;

/// Longest line delivered in one event; longer lines arrive as several [`Line`]s with `newline == false`.
pub const MAX_LINE: usize = 64 * 1024;

/// Default bound on the bytes queued for a listener.
pub const DEFAULT_QUEUE_BYTES: usize = 16 * 1024 * 1024;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// One line of output, without its newline. `newline` is false for a piece of a split long line and for a
/// final line that had no newline, so concatenating `bytes` (plus `\n` where `newline`) gives the exact output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub bytes: Vec<u8>,
    pub newline: bool,
}

impl Line {
    /// The line as text, invalid UTF-8 replaced.
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes)
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal number. Behind a remote shell a signal death is only seen as code 128+n; such
    /// codes are reported as signals where the layer chain ends in a shell wrapper (managed processes).
    Signal(i32),
}

impl ExitStatus {
    /// True for `Code(0)`.
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }

    /// The exit code, if the process exited normally.
    pub fn code(self) -> Option<i32> {
        match self {
            ExitStatus::Code(c) => Some(c),
            ExitStatus::Signal(_) => None,
        }
    }

    pub(crate) fn from_std(s: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (s.code(), s.signal()) {
            (Some(c), _) => ExitStatus::Code(c),
            (None, Some(sig)) => ExitStatus::Signal(sig),
            (None, None) => ExitStatus::Code(-1),
        }
    }

    /// Reads a shell's `$?`: 129..=192 means killed by signal `n - 128`.
    pub(crate) fn from_shell(rc: i32) -> Self {
        if (129..=192).contains(&rc) {
            ExitStatus::Signal(rc - 128)
        } else {
            ExitStatus::Code(rc)
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => match crate::Signal::from_number(*s) {
                Some(sig) => write!(f, "killed by {sig}"),
                None => write!(f, "killed by signal {s}"),
            },
        }
    }
}

/// What happens to a process, in order: `Started`, output lines, then exactly one of `Exited` or `Failed`.
/// Every line of output arrives before `Exited`.
#[derive(Debug, Clone)]
pub enum Event {
    /// The program runs at the end of the chain.
    Started(ProcessId),
    /// A line on stdout.
    Stdout(Line),
    /// A line on stderr.
    Stderr(Line),
    /// The listener fell behind by more than the queue bound; this many older events were dropped.
    Lost(u64),
    /// The program ended.
    Exited(ExitStatus),
    /// Following the process failed (its layer chain broke); its state is unknown.
    Failed(Error),
}

impl Event {
    fn cost(&self) -> usize {
        64 + match self {
            Event::Stdout(l) | Event::Stderr(l) => l.bytes.len(),
            _ => 0,
        }
    }
}

/// The listening end: a [`Stream`] of [`Event`]s. Ends after `Exited` or `Failed`.
pub struct Events {
    rx: Pin<Box<async_channel::Receiver<Event>>>,
    queued: Arc<AtomicUsize>,
    drained: Arc<event_listener::Event>,
}

impl Events {
    /// The next event, or `None` once the process ended and everything was delivered.
    pub async fn next(&mut self) -> Option<Event> {
        futures_lite::StreamExt::next(self).await
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let polled = self.rx.as_mut().poll_next(cx);
        if let Poll::Ready(Some(ev)) = &polled {
            self.queued.fetch_sub(ev.cost(), Ordering::AcqRel);
            self.drained.notify(usize::MAX);
        }
        polled
    }
}

/// The producing end, shared by the tasks that read a process's output.
#[derive(Clone)]
pub(crate) struct EventSink {
    tx: async_channel::Sender<Event>,
    drain: async_channel::Receiver<Event>,
    queued: Arc<AtomicUsize>,
    lost: Arc<AtomicU64>,
    limit: usize,
    drained: Arc<event_listener::Event>,
}

impl EventSink {
    pub(crate) fn new(limit: usize) -> (EventSink, Events) {
        let (tx, rx) = async_channel::unbounded();
        let queued = Arc::new(AtomicUsize::new(0));
        let drained = Arc::new(event_listener::Event::new());
        let sink = EventSink {
            tx,
            drain: rx.clone(),
            queued: queued.clone(),
            lost: Arc::new(AtomicU64::new(0)),
            limit,
            drained: drained.clone(),
        };
        (
            sink,
            Events {
                rx: Box::pin(rx),
                queued,
                drained,
            },
        )
    }

    /// Queues an event, dropping the oldest ones if the listener is too far behind. Nothing is queued once
    /// the listener is gone.
    pub(crate) fn push(&self, ev: Event) {
        // Our own drain handle is the one receiver left: nobody listens.
        if self.tx.receiver_count() <= 1 {
            return;
        }
        let cost = ev.cost();
        while self.queued.load(Ordering::Acquire) + cost > self.limit {
            match self.drain.try_recv() {
                Ok(old) => {
                    self.queued.fetch_sub(old.cost(), Ordering::AcqRel);
                    let n = if let Event::Lost(n) = old { n } else { 1 };
                    self.lost.fetch_add(n, Ordering::AcqRel);
                }
                Err(_) => break,
            }
        }
        let lost = self.lost.swap(0, Ordering::AcqRel);
        if lost > 0 {
            let marker = Event::Lost(lost);
            self.queued.fetch_add(marker.cost(), Ordering::AcqRel);
            let _ = self.tx.try_send(marker);
        }
        self.queued.fetch_add(cost, Ordering::AcqRel);
        let _ = self.tx.try_send(ev);
    }

    /// Queues an event, waiting while the listener is more than the queue bound behind (instead of
    /// dropping older events). Nothing is queued once the listener is gone.
    pub(crate) async fn push_wait(&self, ev: Event) {
        let cost = ev.cost();
        loop {
            if self.tx.receiver_count() <= 1 {
                return;
            }
            let queued = self.queued.load(Ordering::Acquire);
            if queued == 0 || queued + cost <= self.limit {
                break;
            }
            let listener = self.drained.listen();
            // Re-check after registering, so a drain in between is not missed.
            let queued = self.queued.load(Ordering::Acquire);
            if queued == 0 || queued + cost <= self.limit {
                break;
            }
            // The listener may go away without draining: look again now and then.
            futures_lite::future::or(listener, async {
                async_io::Timer::after(std::time::Duration::from_millis(200)).await;
            })
            .await;
        }
        self.queued.fetch_add(cost, Ordering::AcqRel);
        let _ = self.tx.try_send(ev);
    }

    pub(crate) fn close(&self) {
        self.tx.close();
    }
}

/// Splits a byte stream into [`Line`]s of at most [`MAX_LINE`] bytes.
pub(crate) struct LineReader<R> {
    inner: BufReader<R>,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        LineReader {
            inner: BufReader::with_capacity(MAX_LINE, inner),
        }
    }

    /// The buffered reader underneath (bytes already buffered are read first).
    pub(crate) fn into_inner(self) -> BufReader<R> {
        self.inner
    }

    /// The next line, `None` at end of file. Read errors end the stream like end of file.
    pub(crate) async fn next_line(&mut self) -> Option<Line> {
        let mut line = Vec::new();
        loop {
            let buf = match self.inner.fill_buf().await {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => &[],
            };
            if buf.is_empty() {
                return if line.is_empty() {
                    None
                } else {
                    Some(Line {
                        bytes: line,
                        newline: false,
                    })
                };
            }
            let room = MAX_LINE - line.len();
            let window = &buf[..buf.len().min(room)];
            if let Some(i) = window.iter().position(|&b| b == b'\n') {
                line.extend_from_slice(&window[..i]);
                self.inner.consume(i + 1);
                return Some(Line {
                    bytes: line,
                    newline: true,
                });
            }
            let n = window.len();
            line.extend_from_slice(window);
            self.inner.consume(n);
            if line.len() >= MAX_LINE {
                return Some(Line {
                    bytes: line,
                    newline: false,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_and_keep_bytes() {
        smol::block_on(async {
            let mut data = vec![b'a'; MAX_LINE + 10];
            data.extend_from_slice(b"\nlast");
            let mut r = LineReader::new(futures_lite::io::Cursor::new(data));
            let a = r.next_line().await.unwrap();
            assert_eq!((a.bytes.len(), a.newline), (MAX_LINE, false));
            let b = r.next_line().await.unwrap();
            assert_eq!((b.bytes.len(), b.newline), (10, true));
            let c = r.next_line().await.unwrap();
            assert_eq!((c.bytes.as_slice(), c.newline), (b"last".as_slice(), false));
            assert!(r.next_line().await.is_none());
        });
    }

    #[test]
    fn queue_drops_oldest_and_says_so() {
        smol::block_on(async {
            let (sink, mut events) = EventSink::new(1000);
            for i in 0..100 {
                sink.push(Event::Stdout(Line {
                    bytes: vec![b'x'; 36 + i % 2],
                    newline: true,
                }));
            }
            sink.push(Event::Exited(ExitStatus::Code(0)));
            sink.close();
            let mut lost = 0;
            let mut lines = 0;
            let mut last = None;
            while let Some(ev) = events.next().await {
                match &ev {
                    Event::Lost(n) => lost += n,
                    Event::Stdout(_) => lines += 1,
                    _ => {}
                }
                last = Some(ev);
            }
            assert_eq!(lost + lines, 100);
            assert!(lines > 0 && lines < 100);
            assert!(matches!(last, Some(Event::Exited(ExitStatus::Code(0)))));
        });
    }

    #[test]
    fn shell_status() {
        assert_eq!(ExitStatus::from_shell(143), ExitStatus::Signal(15));
        assert_eq!(ExitStatus::from_shell(7), ExitStatus::Code(7));
    }
}
