//! A small time-bounded memo. The original agent kept its lookups for the
//! life of the process, so a user registered or a project moved by the
//! portal's staff was never seen again; here an entry lives at most the
//! configured time (about one coordinator cycle), only positive answers are
//! kept, and callers drop an entry the portal contradicts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries by key, each valid for `ttl` after it was stored.
#[derive(Debug)]
pub struct Memo<V> {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> Memo<V> {
    /// An empty memo; a zero `ttl` keeps nothing.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, V)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value stored for `key`, if it is still fresh at `now`.
    pub fn get_at(&self, key: &str, now: Instant) -> Option<V> {
        let mut map = self.lock();
        match map.get(key) {
            Some((at, v)) if now.duration_since(*at) < self.ttl => Some(v.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    /// The value stored for `key`, if it is still fresh.
    pub fn get(&self, key: &str) -> Option<V> {
        self.get_at(key, Instant::now())
    }

    /// Stores `value` for `key` as of `now`.
    pub fn put_at(&self, key: &str, value: V, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.lock();
        // Bounded: stale entries go whenever the map grows past a size no
        // offering reaches in one cycle.
        if map.len() >= 100_000 {
            let ttl = self.ttl;
            map.retain(|_, (at, _)| now.duration_since(*at) < ttl);
        }
        map.insert(key.to_owned(), (now, value));
    }

    /// Stores `value` for `key`.
    pub fn put(&self, key: &str, value: V) {
        self.put_at(key, value, Instant::now());
    }

    /// Drops `key`.
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_lives_for_its_ttl_and_no_longer() {
        let memo = Memo::new(Duration::from_secs(60));
        let t0 = Instant::now();
        memo.put_at("alloc_x_cpu", 7, t0);
        assert_eq!(
            memo.get_at("alloc_x_cpu", t0 + Duration::from_secs(59)),
            Some(7)
        );
        assert_eq!(
            memo.get_at("alloc_x_cpu", t0 + Duration::from_secs(60)),
            None
        );
        // Expired entries are gone, not revived.
        assert_eq!(memo.get_at("alloc_x_cpu", t0), None);
    }

    #[test]
    fn a_zero_ttl_keeps_nothing_and_forget_drops_an_entry() {
        let none = Memo::new(Duration::ZERO);
        none.put("k", 1);
        assert_eq!(none.get("k"), None);
        let memo = Memo::new(Duration::from_secs(60));
        memo.put("k", 1);
        memo.forget("k");
        assert_eq!(memo.get("k"), None);
    }
}
