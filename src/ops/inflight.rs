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
//! The handshakes' share adapts to the queue: each admitted connection reports how long its task waited for
//! the runtime before its first poll ([`InFlight::waited`]). While that wait (an average of the last few
//! dozen) is above [`QUEUE_WAIT_TARGET`], the share shrinks by one slot per report, down to a sixteenth;
//! below half the target it grows back by one per report. The wait for a worker is the server's own queue
//! and nothing else: a handshake slow because the phone is far away does not shrink the share (its time
//! goes by in the network, not in the queue). With an RSA certificate a handshake costs the server about
//! three times what an ECDSA one does, so the same count of handshakes in flight is three times the
//! latency; the share finds the count that keeps the wait near the target on this machine, for this
//! certificate (measured in BENCHMARKS.md, "Past capacity").
//!
//! Cost per request: one atomic add and one atomic subtract (relaxed); no lock, no allocation.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;

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
    /// Threads that drain the listeners' accept queues while handshakes are at their bound (the server's
    /// sweepers), woken by the first connection shed.
    sweepers: Mutex<Vec<Thread>>,
    /// Set when the sweepers were woken, until one of them finds the bound no longer reached.
    sweeping: AtomicBool,
    /// The handshakes' share now: between `handshake_limit / 16` and `handshake_limit`, moved by the queue.
    effective: AtomicUsize,
    /// Recent tasks' wait for a worker, µs (exponentially weighted, 1/16 per report).
    wait_us: AtomicU64,
}

/// The wait for a worker the handshakes' share aims below (see the module's documentation). A phone's
/// connection is polled about five times (the handshake's flights, the request), so ten milliseconds each
/// keep its answer well under the 100 ms a phone past capacity should get it in.
pub const QUEUE_WAIT_TARGET: std::time::Duration = std::time::Duration::from_millis(10);

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
            sweepers: Mutex::new(Vec::new()),
            sweeping: AtomicBool::new(false),
            effective: AtomicUsize::new((limit - limit / 4).max(1)),
            wait_us: AtomicU64::new(0),
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

    /// The share handshakes may hold now (at most [`InFlight::handshake_limit`], less while the queue is long).
    pub fn effective_handshake_limit(&self) -> usize {
        self.effective.load(Ordering::Relaxed)
    }

    /// Reports how long an admitted connection's task waited for a worker before its first poll, and moves
    /// the handshakes' share by one slot accordingly.
    pub fn waited(&self, waited: std::time::Duration) {
        let sample = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        let old = self.wait_us.load(Ordering::Relaxed);
        // old * 15/16 + sample/16, without overflow for any sample.
        let average = old - old / 16 + sample / 16;
        self.wait_us.store(average, Ordering::Relaxed);
        let target = QUEUE_WAIT_TARGET.as_micros() as u64;
        let floor = (self.handshake_limit / 16).max(1);
        let step = |e: usize| match average {
            a if a > target => Some(e.saturating_sub(1).max(floor)),
            a if a < target / 2 => Some((e + 1).min(self.handshake_limit)),
            _ => None,
        };
        let _ = self.effective.fetch_update(Ordering::Relaxed, Ordering::Relaxed, step);
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
    pub fn handshake(self: &Arc<Self>) -> Option<HandshakeSlot> {
        let prior = self.now.fetch_add(1, Ordering::Relaxed);
        if prior >= self.effective_handshake_limit() {
            self.now.fetch_sub(1, Ordering::Relaxed);
            self.shed_connection();
            return None;
        }
        self.handshakes.fetch_add(1, Ordering::Relaxed);
        Some(HandshakeSlot(self.clone()))
    }

    /// Whether handshakes hold their whole share of the bound now (a new connection would be shed).
    #[inline]
    pub fn handshakes_full(&self) -> bool {
        self.now.load(Ordering::Relaxed) >= self.effective_handshake_limit()
    }

    /// Counts a connection shed without asking for a slot (see [`InFlight::handshakes_full`]), and wakes
    /// the sweepers if they sleep.
    pub fn shed_connection(&self) {
        self.shed_connections.fetch_add(1, Ordering::Relaxed);
        if !self.sweeping.swap(true, Ordering::AcqRel)
            && let Ok(sweepers) = self.sweepers.lock()
        {
            sweepers.iter().for_each(Thread::unpark);
        }
    }

    /// Registers a thread to unpark when connections start being shed (see [`InFlight::shed_connection`]).
    pub fn add_sweeper(&self, thread: Thread) {
        if let Ok(mut sweepers) = self.sweepers.lock() {
            sweepers.push(thread);
        }
    }

    /// Whether a connection was shed since the sweepers last found the bound no longer reached.
    pub fn sweep_wanted(&self) -> bool {
        self.sweeping.load(Ordering::Acquire)
    }

    /// A sweeper found the handshakes below their bound: the next connection shed wakes the sweepers again.
    pub fn sweep_done(&self) {
        self.sweeping.store(false, Ordering::Release);
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

/// One handshake in flight; gives its slot back when dropped. Owned: taken where the connection is accepted,
/// given back by the connection's task.
#[derive(Debug)]
pub struct HandshakeSlot(Arc<InFlight>);

impl Drop for HandshakeSlot {
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
        let f = Arc::new(InFlight::new(4));
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
        let f = Arc::new(InFlight::new(1));
        assert_eq!(f.handshake_limit(), 1);
        let h = f.handshake().expect("one handshake");
        assert!(f.request().is_err());
        drop(h);
        assert!(f.request().is_ok());
    }

    #[test]
    fn the_handshakes_share_follows_the_wait_for_a_worker() {
        let f = Arc::new(InFlight::new(64));
        assert_eq!((f.handshake_limit(), f.effective_handshake_limit()), (48, 48));
        // A queue well past the target: the share shrinks one slot per report, to a sixteenth and no lower.
        for _ in 0..200 {
            f.waited(QUEUE_WAIT_TARGET * 5);
        }
        assert_eq!(f.effective_handshake_limit(), 3);
        let held: Vec<_> = (0..3).map(|_| f.handshake().expect("the reduced share")).collect();
        assert!(f.handshakes_full() && f.handshake().is_none(), "the reduced share is the bound");
        assert!(f.request().is_ok(), "requests keep the whole bound");
        drop(held);
        // Waits between half the target and the target hold the share where it is; short ones give it back,
        // one slot per report, up to the configured share.
        for _ in 0..100 {
            f.waited(QUEUE_WAIT_TARGET * 3 / 4);
        }
        assert_eq!(f.effective_handshake_limit(), 3, "an average of 3/4 of the target moves nothing");
        for _ in 0..500 {
            f.waited(std::time::Duration::from_micros(100));
        }
        assert_eq!(f.effective_handshake_limit(), 48);
    }

    #[test]
    fn retry_after_is_small_and_spread() {
        let secs: Vec<u8> = (0..6).map(retry_after_secs).collect();
        assert_eq!(secs, [1, 2, 3, 1, 2, 3]);
    }
}
