//! Bounds on connections that have not yet shown the token.
//!
//! Every accepted TCP connection holds a [`Ticket`] from accept until its request head has been read
//! (TLS handshake plus HTTP head, itself bounded by `handshake_timeout`). At most
//! `max_unauthenticated` tickets exist, and at most `max_unauthenticated_per_peer` per peer address.
//! A new connection over a limit is not refused: the *oldest* pending connection of the same peer
//! (per-peer limit) or of the peer holding the most (total limit) is closed instead. An idle or slow
//! flood therefore cannot keep a client that completes its handshake in milliseconds out, and the
//! fds the port holds stay bounded (`max_connections` + `max_unauthenticated`).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// The pending connections, oldest first per peer.
pub(crate) struct Admission {
    max_total: usize,
    max_per_peer: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next: u64,
    total: usize,
    /// Per peer: (ticket id, the sender whose drop closes that connection), oldest first.
    peers: HashMap<IpAddr, VecDeque<(u64, async_channel::Sender<()>)>>,
    evicted: u64,
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
            st.evict_oldest_of(peer);
        } else if st.total >= self.max_total
            && let Some(busiest) = st.busiest()
        {
            st.evict_oldest_of(busiest);
        }
        let (tx, rx) = async_channel::bounded(1);
        let id = st.next;
        st.next += 1;
        st.total += 1;
        st.peers.entry(peer).or_default().push_back((id, tx));
        Ticket {
            id,
            peer,
            admission: self.clone(),
            closed: rx,
        }
    }

    /// Closes the oldest pending connection of all (to free an fd when accept fails for lack of one).
    pub fn evict_oldest(&self) -> bool {
        let mut st = self.lock();
        let oldest = st
            .peers
            .iter()
            .filter_map(|(peer, q)| q.front().map(|(id, _)| (*id, *peer)))
            .min();
        match oldest {
            Some((_, peer)) => {
                st.evict_oldest_of(peer);
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

impl State {
    /// The peer with the most pending connections (the oldest first among equals).
    fn busiest(&self) -> Option<IpAddr> {
        self.peers
            .iter()
            .filter_map(|(peer, q)| {
                q.front()
                    .map(|(id, _)| (q.len(), std::cmp::Reverse(*id), *peer))
            })
            .max()
            .map(|(_, _, peer)| peer)
    }

    fn evict_oldest_of(&mut self, peer: IpAddr) {
        let Some(q) = self.peers.get_mut(&peer) else {
            return;
        };
        // Dropping the sender ends the connection's `closed`.
        if q.pop_front().is_some() {
            self.total -= 1;
            self.evicted += 1;
        }
        if q.is_empty() {
            self.peers.remove(&peer);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut st = self.admission.lock();
        let Some(q) = st.peers.get_mut(&self.peer) else {
            return;
        };
        let Some(pos) = q.iter().position(|(id, _)| *id == self.id) else {
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
        assert!(a.evict_oldest());
        assert!(light.closed.is_closed(), "the oldest of all");
        drop((light, heavy1, heavy2, newcomer));
        assert_eq!(a.pending(), 0);
        assert!(!a.evict_oldest());
    }
}
