//! Bounded memories of recent deliveries: ids acknowledged (so a retry is acknowledged without
//! publishing again) and small facts learned from earlier deliveries.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The last `capacity` keys inserted, with a value each; the oldest is forgotten first.
///
/// In-process only: after a restart a retried delivery is published again, and its
/// deterministic event ids make the processor count it once anyway.
pub struct RecentMap<V> {
    capacity: usize,
    inner: Mutex<(HashMap<String, V>, VecDeque<String>)>,
}

/// Recently acknowledged delivery ids.
pub type RecentIds = RecentMap<()>;

impl<V: Clone> RecentMap<V> {
    /// A memory of at most `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> Self {
        RecentMap {
            capacity: capacity.max(1),
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }

    /// Whether `key` is remembered.
    pub fn contains(&self, key: &str) -> bool {
        self.lock().0.contains_key(key)
    }

    /// The value remembered for `key`.
    pub fn get(&self, key: &str) -> Option<V> {
        self.lock().0.get(key).cloned()
    }

    /// Remembers `key` with `value` (replacing an older value); returns `false` if the key was
    /// already there.
    pub fn insert(&self, key: &str, value: V) -> bool {
        let mut guard = self.lock();
        let (map, order) = &mut *guard;
        if map.insert(key.to_string(), value).is_some() {
            return false;
        }
        order.push_back(key.to_string());
        while order.len() > self.capacity {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
        true
    }

    fn lock(&self) -> MutexGuard<'_, (HashMap<String, V>, VecDeque<String>)> {
        // Both collections are updated together under the lock, never left half-done.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_latest_keys_only() {
        let r = RecentIds::new(2);
        assert!(r.insert("a", ()));
        assert!(!r.insert("a", ()));
        assert!(r.insert("b", ()));
        assert!(r.insert("c", ()));
        assert!(!r.contains("a"), "the oldest key is forgotten");
        assert!(r.contains("b") && r.contains("c"));
        let m = RecentMap::new(4);
        m.insert("o", 1);
        m.insert("o", 2);
        assert_eq!(m.get("o"), Some(2));
    }
}
