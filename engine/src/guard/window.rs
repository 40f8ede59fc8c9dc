//! A bounded, expiring key → value window (idempotency, duplicate detection).
//!
//! Entries live for a fixed TTL. Because the TTL is the same for every entry,
//! insertion order is expiry order, so expiry is a pop from the front of a
//! queue: O(1) amortised, no timers. The window also has a hard capacity; when
//! full, the oldest entry is evicted early and counted.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use rustc_hash::FxBuildHasher;

/// Bounded expiring map.
#[derive(Debug)]
pub struct Window<K, V> {
    ttl_ms: i64,
    capacity: usize,
    map: HashMap<K, (i64, V), FxBuildHasher>,
    order: VecDeque<(i64, K)>,
    evicted_early: u64,
}

impl<K: Hash + Eq + Clone, V> Window<K, V> {
    /// A window keeping entries for `ttl_ms`, at most `capacity` of them.
    pub fn new(ttl_ms: i64, capacity: usize) -> Self {
        Window {
            ttl_ms,
            capacity: capacity.max(1),
            map: HashMap::default(),
            order: VecDeque::new(),
            evicted_early: 0,
        }
    }

    /// Drop entries older than the TTL at `now_ms`.
    pub fn expire(&mut self, now_ms: i64) {
        while let Some((at, _)) = self.order.front() {
            if now_ms - *at < self.ttl_ms {
                break;
            }
            let (at, k) = self.order.pop_front().expect("front exists");
            // Only remove if the map entry is this one (not re-inserted later).
            if self.map.get(&k).is_some_and(|(t, _)| *t == at) {
                self.map.remove(&k);
            }
        }
    }

    /// The live value for `key` at `now_ms`.
    pub fn get(&mut self, key: &K, now_ms: i64) -> Option<&V> {
        self.expire(now_ms);
        self.map.get(key).map(|(_, v)| v)
    }

    /// Insert or replace; the entry's lifetime restarts at `now_ms`.
    pub fn insert(&mut self, key: K, value: V, now_ms: i64) {
        self.expire(now_ms);
        while self.map.len() >= self.capacity {
            let Some((at, k)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&k).is_some_and(|(t, _)| *t == at) {
                self.map.remove(&k);
                self.evicted_early += 1;
            }
        }
        self.order.push_back((now_ms, key.clone()));
        self.map.insert(key, (now_ms, value));
        // Replaced keys leave stale queue entries; compact when they dominate.
        if self.order.len() > 2 * self.capacity {
            let map = &self.map;
            self.order
                .retain(|(at, k)| map.get(k).is_some_and(|(t, _)| t == at));
        }
    }

    /// Remove and return the live value for `key` at `now_ms` (to change it
    /// and insert it again).
    pub fn take(&mut self, key: &K, now_ms: i64) -> Option<V> {
        self.expire(now_ms);
        self.map.remove(key).map(|(_, v)| v)
    }

    /// Live entries (after the last expiry).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Entries evicted before their TTL because the window was full.
    pub fn evicted_early(&self) -> u64 {
        self.evicted_early
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn remembers_within_ttl_and_forgets_after() {
        let mut w = Window::new(1_000, 10);
        w.insert(1u64, "a", 0);
        assert_eq!(w.get(&1, 999), Some(&"a"));
        assert_eq!(w.get(&1, 1_000), None);
        assert!(w.is_empty());
    }

    #[test]
    fn capacity_evicts_oldest_and_counts() {
        let mut w = Window::new(1_000_000, 3);
        for k in 0..5u64 {
            w.insert(k, (), k as i64);
        }
        assert_eq!(w.len(), 3);
        assert_eq!(w.evicted_early(), 2);
        assert!(w.get(&0, 10).is_none());
        assert!(w.get(&4, 10).is_some());
    }

    proptest! {
        /// No false negatives inside the window (while under capacity), and
        /// nothing is remembered after it.
        #[test]
        fn no_false_negatives_and_forgets(
            ops in proptest::collection::vec((0u64..50, 0i64..200), 1..300),
            ttl in 1i64..500,
        ) {
            let mut w = Window::new(ttl, 10_000);
            let mut last_insert: HashMap<u64, i64> = HashMap::new();
            let mut now = 0i64;
            for (key, dt) in ops {
                now += dt;
                let seen = w.get(&key, now).is_some();
                let expect = last_insert.get(&key).is_some_and(|t| now - t < ttl);
                prop_assert_eq!(seen, expect);
                w.insert(key, (), now);
                last_insert.insert(key, now);
            }
        }

        /// Memory stays bounded under a stream of unique keys.
        #[test]
        fn bounded_under_unique_keys(cap in 1usize..200, n in 0u64..5_000) {
            let mut w = Window::new(i64::MAX / 4, cap);
            for k in 0..n {
                w.insert(k, (), k as i64);
                prop_assert!(w.len() <= cap);
                prop_assert!(w.order.len() <= 2 * cap + 1);
            }
        }
    }
}
