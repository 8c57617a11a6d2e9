//! One async mutex per key, created on demand and forgotten when nobody
//! holds or waits for it: "at most one mutation per resource in flight",
//! for the backend server's adapter and the coordinator's backend client.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// Mutexes by key.
#[derive(Debug)]
pub struct KeyedLock<K: Eq + Hash + Clone> {
    map: Arc<Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>>,
}

impl<K: Eq + Hash + Clone> Default for KeyedLock<K> {
    fn default() -> Self {
        Self {
            map: Arc::default(),
        }
    }
}

impl<K: Eq + Hash + Clone> Clone for KeyedLock<K> {
    fn clone(&self) -> Self {
        Self {
            map: self.map.clone(),
        }
    }
}

/// Held while the key is locked.
#[must_use = "the key is unlocked when the guard is dropped"]
pub struct KeyedGuard<K: Eq + Hash + Clone> {
    // Dropped first (fields drop in order), so the count below sees it gone.
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    key: K,
    map: Arc<Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>>,
}

impl<K: Eq + Hash + Clone> KeyedLock<K> {
    /// Waits for the key's mutex.
    pub async fn lock(&self, key: K) -> KeyedGuard<K> {
        let mutex = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        KeyedGuard {
            guard: Some(mutex.lock_owned().await),
            key,
            map: self.map.clone(),
        }
    }

    /// Keys with a mutex right now (held or waited for).
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no key is held or waited for.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Eq + Hash + Clone> Drop for KeyedGuard<K> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map's own reference left: nobody holds or waits for it.
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_per_key_and_entries_go_when_released() {
        let locks = KeyedLock::<String>::default();
        let a = locks.lock("a".into()).await;
        let _b = locks.lock("b".into()).await;
        let waiting = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _again = locks.lock("a".into()).await;
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(a);
        waiting.await.unwrap();
        assert_eq!(locks.len(), 1, "only b is left");
    }
}
