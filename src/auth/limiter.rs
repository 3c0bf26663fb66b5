//! Failed attempts per client address, for the token endpoint (failed grants) and the file server (failed
//! authentications): a budget of failures in a window, past which the address gets 429.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::util::time::Time;

/// Failed grants per client address: after `limit` failures within `window_secs`, further grant requests
/// from that address are answered 429 until the window ends. Successful grants never count, so honest
/// phones are not slowed.
/// Keyed by client address by default; the console also keys one by account name.
pub struct FailureLimiter<K = IpAddr> {
    limit: u32,
    window_secs: i64,
    entries: Mutex<HashMap<K, (Time, u32)>>,
}

/// Bound on tracked addresses; beyond it, expired entries are dropped first and then the oldest.
const MAX_TRACKED: usize = 100_000;

impl<K: std::hash::Hash + Eq> FailureLimiter<K> {
    pub fn new(limit: u32, window_secs: i64) -> FailureLimiter<K> {
        FailureLimiter { limit, window_secs, entries: Mutex::new(HashMap::new()) }
    }

    /// `Some(seconds)` to wait if `addr` is over its budget.
    pub fn check(&self, addr: K, now: Time) -> Option<u64> {
        let entries = self.entries.lock().ok()?;
        let &(start, count) = entries.get(&addr)?;
        let end = start + self.window_secs;
        (count >= self.limit && now < end).then(|| (end - now).max(1) as u64)
    }

    /// Takes back one failure of `addr` (an attempt counted before it was checked turned out right).
    pub fn forgive(&self, addr: &K) {
        let Ok(mut entries) = self.entries.lock() else { return };
        if let Some(entry) = entries.get_mut(addr) {
            entry.1 = entry.1.saturating_sub(1);
        }
    }

    pub fn failed(&self, addr: K, now: Time) {
        let Ok(mut entries) = self.entries.lock() else { return };
        if entries.len() >= MAX_TRACKED {
            let window = self.window_secs;
            entries.retain(|_, (start, _)| *start + window > now);
            if entries.len() >= MAX_TRACKED {
                entries.clear();
            }
        }
        let entry = entries.entry(addr).or_insert((now, 0));
        if entry.0 + self.window_secs <= now {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_counts_failures_per_address_in_a_window() {
        let l = FailureLimiter::new(3, 60);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(l.check(a, 100), None);
            l.failed(a, 100);
        }
        assert_eq!(l.check(a, 110), Some(50));
        assert_eq!(l.check(b, 110), None, "another address is not affected");
        assert_eq!(l.check(a, 160), None, "the window ends");
    }
}
