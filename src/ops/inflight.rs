//! The bound on work in flight (`server.max_in_flight`, issue 17.2): TLS handshakes in progress and requests
//! being served on the phone-facing listeners, counted together in one atomic.
//!
//! Past the bound the server sheds, cheaply, before doing the work:
//!
//! - a new connection accepted (or whose ClientHello arrives) while handshakes hold their share of the bound is
//!   closed at once with a reset (no handshake spent, no `TIME_WAIT` kept);
//! - a request on an established connection while the whole bound is in use is answered `503` with
//!   `Retry-After`, before its token is looked at.
//!
//! Handshakes may hold at most three quarters of the bound ([`InFlight::handshake_limit`]): the rest is kept
//! for requests on connections whose handshake is already paid for, so that a storm of new connections
//! never starves the cheap revalidations of phones already connected, nor the first request of a connection
//! just admitted. The reasons are in docs/decisions.md.
//!
//! Cost per request: one atomic add and one atomic subtract (relaxed); no lock, no allocation.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Work in flight now, and its bounds. One per server, shared by its phone-facing listeners.
#[derive(Debug)]
pub struct InFlight {
    /// Handshakes in progress and requests being served.
    now: AtomicUsize,
    /// Handshakes in progress (a part of `now`), for the metrics.
    handshakes: AtomicUsize,
    limit: usize,
    handshake_limit: usize,
    shed_connections: AtomicU64,
    shed_requests: AtomicU64,
}

/// What was shed past the bound, as the metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// A new connection closed before its handshake.
    Connection,
    /// A request answered 503.
    Request,
}

impl InFlight {
    /// A bound of `limit` (at least 1); handshakes may hold three quarters of it (at least 1).
    pub fn new(limit: usize) -> InFlight {
        let limit = limit.max(1);
        InFlight {
            now: AtomicUsize::new(0),
            handshakes: AtomicUsize::new(0),
            limit,
            handshake_limit: (limit - limit / 4).max(1),
            shed_connections: AtomicU64::new(0),
            shed_requests: AtomicU64::new(0),
        }
    }

    /// The whole bound: handshakes and requests together.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The share of the bound handshakes may hold.
    pub fn handshake_limit(&self) -> usize {
        self.handshake_limit
    }

    /// Work in flight now (handshakes and requests).
    pub fn now(&self) -> usize {
        self.now.load(Ordering::Relaxed)
    }

    /// Handshakes in progress now.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::Relaxed)
    }

    /// Shed so far, by what.
    pub fn shed(&self, what: Shed) -> u64 {
        match what {
            Shed::Connection => self.shed_connections.load(Ordering::Relaxed),
            Shed::Request => self.shed_requests.load(Ordering::Relaxed),
        }
    }

    /// A slot for one TLS handshake, or None (counted as a shed connection) when handshakes already hold
    /// their share of the bound or the whole bound is in use.
    pub fn handshake(&self) -> Option<HandshakeSlot<'_>> {
        let prior = self.now.fetch_add(1, Ordering::Relaxed);
        if prior >= self.handshake_limit {
            self.now.fetch_sub(1, Ordering::Relaxed);
            self.shed_connections.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.handshakes.fetch_add(1, Ordering::Relaxed);
        Some(HandshakeSlot(self))
    }

    /// Whether handshakes hold their whole share of the bound now (a new connection would be shed).
    #[inline]
    pub fn handshakes_full(&self) -> bool {
        self.now.load(Ordering::Relaxed) >= self.handshake_limit
    }

    /// Counts a connection shed without asking for a slot (see [`InFlight::handshakes_full`]).
    pub fn shed_connection(&self) {
        self.shed_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// A slot for one request, or, when the whole bound is in use, the shed request's `Retry-After` in
    /// seconds (the request is counted as shed).
    #[inline]
    pub fn request(&self) -> Result<RequestSlot<'_>, u8> {
        let prior = self.now.fetch_add(1, Ordering::Relaxed);
        if prior >= self.limit {
            self.now.fetch_sub(1, Ordering::Relaxed);
            let n = self.shed_requests.fetch_add(1, Ordering::Relaxed);
            return Err(retry_after_secs(n));
        }
        Ok(RequestSlot(self))
    }
}

/// One handshake in flight; gives its slot back when dropped.
#[derive(Debug)]
pub struct HandshakeSlot<'a>(&'a InFlight);

impl Drop for HandshakeSlot<'_> {
    fn drop(&mut self) {
        self.0.handshakes.fetch_sub(1, Ordering::Relaxed);
        self.0.now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One request in flight; gives its slot back when dropped (answered, or the client gone).
#[derive(Debug)]
pub struct RequestSlot<'a>(&'a InFlight);

impl Drop for RequestSlot<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `Retry-After` seconds for the `n`th shed request: 1 to 3, spread so that phones told to come back do
/// not all come back in the same second.
pub fn retry_after_secs(n: u64) -> u8 {
    1 + (n % 3) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes_keep_a_quarter_of_the_bound_for_requests() {
        let f = InFlight::new(4);
        assert_eq!(f.handshake_limit(), 3);
        let h: Vec<_> = (0..3).map(|_| f.handshake().expect("room for a handshake")).collect();
        assert!(f.handshake().is_none(), "handshakes may not take the last quarter");
        assert_eq!(f.shed(Shed::Connection), 1);
        let r = f.request().expect("the last quarter is for requests");
        assert_eq!(f.request().err(), Some(1), "the bound is full: Retry-After 1");
        assert_eq!(f.shed(Shed::Request), 1);
        assert_eq!((f.now(), f.handshakes()), (4, 3));
        drop(h);
        assert_eq!((f.now(), f.handshakes()), (1, 0));
        drop(r);
        assert_eq!(f.now(), 0);
        assert!(f.request().is_ok() && f.handshake().is_some());
    }

    #[test]
    fn a_bound_of_one_still_admits_a_handshake() {
        let f = InFlight::new(1);
        assert_eq!(f.handshake_limit(), 1);
        let h = f.handshake().expect("one handshake");
        assert!(f.request().is_err());
        drop(h);
        assert!(f.request().is_ok());
    }

    #[test]
    fn retry_after_is_small_and_spread() {
        let secs: Vec<u8> = (0..6).map(retry_after_secs).collect();
        assert_eq!(secs, [1, 2, 3, 1, 2, 3]);
    }
}
