//! Bounds on connections that have not yet shown the token.
//!
//! Every accepted TCP connection holds a [`Ticket`] from accept until its request head has been read
//! (TLS handshake plus HTTP head, itself bounded by `handshake_timeout`). At most
//! `max_unauthenticated` tickets exist, and at most `max_unauthenticated_per_peer` per peer address.
//! A new connection over a limit is not refused: a pending connection of the same peer (per-peer
//! limit) or of the peer holding the most (total limit) is closed instead: the one that got least
//! far ([`Stage`]: nothing received yet, then TLS under way, then TLS done), the oldest among
//! equals. An idle or slow flood therefore cannot keep out a client that completes its handshake
//! promptly, and the fds the port holds stay bounded (`max_connections` + `max_unauthenticated`).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

/// The pending connections, oldest first per peer.
pub(crate) struct Admission {
    max_total: usize,
    max_per_peer: usize,
    state: Mutex<State>,
}

/// How far a pending connection got; the least advanced are closed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stage {
    /// Accepted; nothing read from it yet.
    Accepted,
    /// It sent bytes (a TLS ClientHello, presumably).
    Sending,
    /// TLS is established; its HTTP head is awaited.
    Encrypted,
}

#[derive(Default)]
struct State {
    next: u64,
    total: usize,
    /// Per peer, oldest first.
    peers: HashMap<IpAddr, VecDeque<Entry>>,
    evicted: u64,
}

struct Entry {
    id: u64,
    stage: Stage,
    /// Dropping it ends the connection's [`Ticket::closed`].
    _close: async_channel::Sender<()>,
}

/// A pending connection's place. `closed` ends when the connection is evicted; dropping the ticket
/// (handshake done or failed) frees the place.
pub(crate) struct Ticket {
    id: u64,
    peer: IpAddr,
    admission: Arc<Admission>,
    pub closed: async_channel::Receiver<()>,
}

impl Admission {
    pub fn new(max_total: usize, max_per_peer: usize) -> Arc<Admission> {
        Arc::new(Admission {
            max_total: max_total.max(1),
            max_per_peer: max_per_peer.max(1),
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a new connection from `peer`, evicting the oldest pending one if a limit is reached.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Ticket {
        let mut st = self.lock();
        let from_peer = st.peers.get(&peer).map_or(0, VecDeque::len);
        if from_peer >= self.max_per_peer {
            st.evict_from(peer);
        } else if st.total >= self.max_total
            && let Some(busiest) = st.busiest()
        {
            st.evict_from(busiest);
        }
        let (tx, rx) = async_channel::bounded(1);
        let id = st.next;
        st.next += 1;
        st.total += 1;
        st.peers.entry(peer).or_default().push_back(Entry {
            id,
            stage: Stage::Accepted,
            _close: tx,
        });
        Ticket {
            id,
            peer,
            admission: self.clone(),
            closed: rx,
        }
    }

    /// Closes the least advanced, oldest pending connection of all (to free an fd when accept
    /// fails for lack of one).
    pub fn evict_one(&self) -> bool {
        let mut st = self.lock();
        let victim = st
            .peers
            .iter()
            .filter_map(|(peer, q)| victim(q).map(|(key, _)| (key, *peer)))
            .min();
        match victim {
            Some((_, peer)) => {
                st.evict_from(peer);
                true
            }
            None => false,
        }
    }

    /// Connections now between accept and their request head.
    pub fn pending(&self) -> usize {
        self.lock().total
    }

    /// Pending connections closed to make room, since start.
    pub fn evicted(&self) -> u64 {
        self.lock().evicted
    }
}

/// The entry of `q` to close first, least advanced then oldest: its sort key and index.
fn victim(q: &VecDeque<Entry>) -> Option<((Stage, u64), usize)> {
    q.iter()
        .enumerate()
        .map(|(i, e)| ((e.stage, e.id), i))
        .min()
}

impl State {
    /// The peer with the most pending connections.
    fn busiest(&self) -> Option<IpAddr> {
        self.peers
            .iter()
            .max_by_key(|(_, q)| q.len())
            .map(|(peer, _)| *peer)
    }

    fn evict_from(&mut self, peer: IpAddr) {
        let Some(q) = self.peers.get_mut(&peer) else {
            return;
        };
        if let Some((_, i)) = victim(q) {
            q.remove(i);
            self.total -= 1;
            self.evicted += 1;
        }
        if q.is_empty() {
            self.peers.remove(&peer);
        }
    }
}

impl Ticket {
    /// A handle that records how far the connection got (see [`Stage`]).
    pub fn progress(&self) -> Progress {
        Progress {
            id: self.id,
            peer: self.peer,
            admission: self.admission.clone(),
        }
    }
}

/// Records a pending connection's [`Stage`]; does nothing once it is past its head or evicted.
#[derive(Clone)]
pub(crate) struct Progress {
    id: u64,
    peer: IpAddr,
    admission: Arc<Admission>,
}

impl Progress {
    pub fn reached(&self, stage: Stage) {
        let mut st = self.admission.lock();
        if let Some(e) = st
            .peers
            .get_mut(&self.peer)
            .and_then(|q| q.iter_mut().find(|e| e.id == self.id))
        {
            e.stage = e.stage.max(stage);
        }
    }
}

/// A pending connection's stream: its first received bytes mark it [`Stage::Sending`].
pub(crate) struct Watched<S> {
    inner: S,
    progress: Option<Progress>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, progress: Progress) -> Self {
        Watched {
            inner,
            progress: Some(progress),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = &read
            && *n > 0
            && let Some(p) = this.progress.take()
        {
            p.reached(Stage::Sending);
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut st = self.admission.lock();
        let Some(q) = st.peers.get_mut(&self.peer) else {
            return;
        };
        let Some(pos) = q.iter().position(|e| e.id == self.id) else {
            return; // evicted
        };
        q.remove(pos);
        if q.is_empty() {
            st.peers.remove(&self.peer);
        }
        st.total -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn the_oldest_of_a_peer_over_its_limit_is_closed() {
        let a = Admission::new(10, 2);
        let first = a.admit(ip(1));
        let second = a.admit(ip(1));
        let other = a.admit(ip(2));
        let third = a.admit(ip(1));
        assert!(first.closed.is_closed(), "the oldest of peer 1 is evicted");
        assert!(!second.closed.is_closed() && !third.closed.is_closed());
        assert!(!other.closed.is_closed(), "another peer is untouched");
        assert_eq!(a.pending(), 3);
        assert_eq!(a.evicted(), 1);
        drop(first);
        assert_eq!(
            a.pending(),
            3,
            "dropping an evicted ticket frees nothing twice"
        );
        drop(second);
        assert_eq!(a.pending(), 2);
    }

    #[test]
    fn a_connection_that_got_further_is_kept_over_older_idle_ones() {
        let a = Admission::new(10, 3);
        let idle1 = a.admit(ip(1));
        let client = a.admit(ip(1));
        client.progress().reached(Stage::Sending);
        let idle2 = a.admit(ip(1));
        let _new = a.admit(ip(1));
        assert!(idle1.closed.is_closed(), "the oldest idle one goes first");
        let _newer = a.admit(ip(1));
        assert!(
            idle2.closed.is_closed(),
            "then the next idle one, not the older client"
        );
        assert!(!client.closed.is_closed());
        client.progress().reached(Stage::Encrypted);
        let _more = (a.admit(ip(1)), a.admit(ip(1)));
        assert!(!client.closed.is_closed(), "idle ones still go first");
        assert_eq!(a.pending(), 3);
    }

    #[test]
    fn over_the_total_the_busiest_peer_loses_its_oldest() {
        let a = Admission::new(3, 3);
        let light = a.admit(ip(1));
        let heavy1 = a.admit(ip(2));
        let heavy2 = a.admit(ip(2));
        let newcomer = a.admit(ip(3));
        assert!(heavy1.closed.is_closed());
        assert!(!light.closed.is_closed() && !heavy2.closed.is_closed());
        assert!(!newcomer.closed.is_closed());
        assert_eq!(a.pending(), 3);
        assert!(a.evict_one());
        assert!(light.closed.is_closed(), "the oldest of all");
        drop((light, heavy1, heavy2, newcomer));
        assert_eq!(a.pending(), 0);
        assert!(!a.evict_one());
    }
}
