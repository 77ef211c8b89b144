//! The answer to a WebSocket upgrade held back until the connection's first write, for a client
//! that sent its first request with the upgrade: both then leave together and the client wakes
//! once, not once for the answer and again for the reply (ADR 0045, addendum).

use std::io::Cursor;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use async_tungstenite::tungstenite::protocol::frame::FrameHeader;
use futures_lite::{AsyncRead, AsyncWrite};

/// Whether `bytes` (what followed the upgrade request) hold at least one whole frame.
pub(crate) fn holds_a_frame(bytes: &[u8]) -> bool {
    let mut cursor = Cursor::new(bytes);
    match FrameHeader::parse(&mut cursor) {
        Ok(Some((_, length))) => {
            let start = cursor.position();
            start
                .checked_add(length)
                .is_some_and(|end| end <= bytes.len() as u64)
        }
        _ => false,
    }
}

/// A stream whose writes, flushes and close first write what was [`Deferred::defer`]red.
pub(crate) struct Deferred<S> {
    inner: S,
    pending: Vec<u8>,
    written: usize,
}

impl<S> Deferred<S> {
    pub(crate) fn new(inner: S) -> Self {
        Deferred {
            inner,
            pending: Vec::new(),
            written: 0,
        }
    }

    /// Holds `bytes` back until the next write, flush or close.
    pub(crate) fn defer(&mut self, bytes: Vec<u8>) {
        self.pending = bytes;
        self.written = 0;
    }
}

impl<S: AsyncWrite + Unpin> Deferred<S> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        if !self.pending.is_empty() {
            self.pending = Vec::new();
            self.written = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Deferred<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deferred<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.written == 0 && !this.pending.is_empty() {
            // Nothing of it written yet: one write of both, so that a TLS stream puts them in
            // the same record and the same packet.
            let both = [this.pending.as_slice(), buf].concat();
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &both))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            if n > this.pending.len() {
                let taken = n - this.pending.len();
                this.pending = Vec::new();
                return Poll::Ready(Ok(taken));
            }
            // Only (part of) what was deferred went: the rest of it, then `buf`, below.
            this.written = n;
        }
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_tungstenite::tungstenite::protocol::frame::Frame;
    use async_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use futures_lite::AsyncWriteExt;

    fn frame(text: &str) -> Vec<u8> {
        let mut f = Frame::message(text.to_owned(), OpCode::Data(Data::Text), true);
        f.header_mut().mask = Some([1, 2, 3, 4]);
        let mut out = Vec::new();
        f.format(&mut out).expect("format");
        out
    }

    /// Takes at most 3 bytes per write.
    struct Trickle(Vec<u8>);

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(3);
            self.get_mut().0.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn only_a_whole_frame_counts() {
        let whole = frame("{\"id\":1,\"method\":\"hello\",\"params\":{}}");
        assert!(holds_a_frame(&whole));
        let mut more = whole.clone();
        more.extend_from_slice(&frame("x")[..3]);
        assert!(holds_a_frame(&more));
        assert!(!holds_a_frame(&whole[..whole.len() - 1]));
        assert!(!holds_a_frame(&whole[..1]));
        assert!(!holds_a_frame(b""));
    }

    #[test]
    fn what_is_deferred_goes_first_with_the_next_write_or_flush() {
        smol::block_on(async {
            let mut d = Deferred::new(Vec::new());
            d.defer(b"head ".to_vec());
            assert!(d.inner.is_empty(), "nothing before a write");
            d.write_all(b"body").await.expect("write");
            d.write_all(b"!").await.expect("write");
            assert_eq!(d.inner, b"head body!");
            // A stream that takes a few bytes at a time gets all of both, in order.
            let mut d = Deferred::new(Trickle(Vec::new()));
            d.defer(b"head ".to_vec());
            d.write_all(b"body").await.expect("write");
            assert_eq!(d.inner.0, b"head body");
            let mut d = Deferred::new(Vec::new());
            d.defer(b"head".to_vec());
            d.flush().await.expect("flush");
            assert_eq!(d.inner, b"head");
        });
    }
}
