//! The socket under hyper: smol's `TcpStream` with tokio-style readiness tracking.
//!
//! hyper polls a connection's read side every time its task wakes (a response from the other
//! side, a body frame, the client socket), not only when the socket has data. `smol-hyper`'s
//! `FuturesIo` answers every such poll with a `recv` system call, and zeroes hyper's whole read
//! buffer first; profiled under the proxy bench that was 9 `recv` per forwarded request, 7 of
//! them `EAGAIN`. [`Io`] remembers that the last `recv` found the socket empty and asks the
//! reactor (no system call) until it reported the socket readable again.

use std::cell::RefCell;
use std::io::{self, Read as _};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use async_io::Async;
use async_net::TcpStream;
use futures_lite::AsyncWrite;
use hyper::rt::ReadBufCursor;

/// Bytes read per `recv` at most (hyper's buffer starts at 8 KiB and grows for bulk bodies).
const CHUNK: usize = 16 * 1024;

thread_local! {
    /// Where `recv` writes before the bytes are copied into hyper's (uninitialised) buffer: one per
    /// thread, not per connection (a read never waits while holding it), so idle keep-alive
    /// connections cost no extra memory.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; CHUNK].into_boxed_slice());
}

pub(crate) struct Io {
    stream: TcpStream,
    raw: Arc<Async<std::net::TcpStream>>,
    /// False once a `recv` found nothing; true again when the reactor saw the socket readable.
    maybe_readable: bool,
}

impl Io {
    pub fn new(stream: TcpStream) -> Io {
        Io {
            raw: Arc::from(stream.clone()),
            stream,
            maybe_readable: true,
        }
    }

    pub fn into_stream(self) -> TcpStream {
        self.stream
    }
}

impl hyper::rt::Read for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut dst: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.maybe_readable {
                ready!(this.raw.poll_readable(cx))?;
                this.maybe_readable = true;
            }
            let want = dst.remaining().min(CHUNK);
            let read = SCRATCH.with_borrow_mut(|buf| {
                let n = this.raw.get_ref().read(&mut buf[..want])?;
                dst.put_slice(&buf[..n]);
                Ok::<_, io::Error>(n)
            });
            match read {
                Ok(n) => {
                    // A short read emptied the socket (as tokio clears readiness): hyper's next
                    // poll, looking for a pipelined request or more of the answer, waits for the
                    // reactor instead of a `recv` that would say `EAGAIN`.
                    if n < want {
                        this.maybe_readable = false;
                    }
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => this.maybe_readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_close(cx)
    }
}
