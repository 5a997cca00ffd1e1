//! A bounded cache of values for one partition, so hot reads stay off the disk path (the page
//! cache on these machines is reclaimed within seconds and cannot be counted on).
//!
//! CLOCK eviction over a slab: each entry has a referenced bit set on every hit; the hand
//! clears bits until it finds an unreferenced entry to evict. Keys and values are copied in, so
//! a cached entry never pins a larger network buffer.
//!
//! Invariant: an entry holds the value of the newest acknowledged put of its key (writes update
//! or remove entries as they are acknowledged); a budget of 0 caches nothing.
//!
//! An embedded store's cache also keeps a [`ReadMirror`]: the same entries in a map any thread
//! may read, updated in the same call as the cache (so before the write is acknowledged), from
//! which the store's handles answer gets of cached keys on the calling thread.

use std::cell::Cell;
use std::hash::BuildHasher;
use std::sync::Arc;

use bytes::Bytes;
use hashbrown::{DefaultHashBuilder, HashTable};

/// Bytes charged per entry beyond its key and value (see [`cost`]): its slab slot (72 bytes,
/// up to twice that while the slab has room to grow), its table slot, and the shared headers
/// `Bytes` gives its key and value when they are first handed out. Measured through the server
/// (BENCHMARKS.md, "What a cached value costs"): a full cache's resident memory stays within
/// its budget.
const ENTRY_OVERHEAD_BYTES: usize = 160;
/// Bytes charged per entry for its place in a [`ReadMirror`] (a map slot of two `Bytes`, up
/// to twice that while the map has room to grow).
const MIRROR_OVERHEAD_BYTES: usize = 160;

/// The cached entries of a store's partitions, readable from any thread. Only the cache that
/// owns an entry changes it; a reader sees an entry as of some moment between the write that
/// made it and the write that replaces it.
#[derive(Default)]
pub struct ReadMirror {
    map: dashmap::DashMap<Bytes, Bytes, DefaultHashBuilder>,
}

impl ReadMirror {
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.map.get(key).map(|v| v.value().clone())
    }

    #[cfg(test)]
    fn entries(&self) -> usize {
        self.map.len()
    }
}

impl std::fmt::Debug for ReadMirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReadMirror({} entries)", self.map.len())
    }
}

struct Entry {
    /// The key and the value in allocations of their own exact sizes (one allocation of both
    /// would round a 4 KiB value up to the allocator's next size class, a quarter more).
    key: Bytes,
    value: Bytes,
    referenced: Cell<bool>,
}

impl Entry {
    fn new(key: &[u8], value: &[u8]) -> Entry {
        Entry {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
            referenced: Cell::new(false),
        }
    }

    /// The key as a slice: what the table's hashes are taken of.
    fn key(&self) -> &[u8] {
        &self.key
    }

    fn cost(&self, overhead: usize) -> usize {
        cost(self.key.len(), self.value.len(), overhead)
    }
}

/// What an entry is charged: its bytes, an eighth more for the allocator's rounding up to its
/// size classes, and the fixed `overhead`.
fn cost(key_len: usize, value_len: usize, overhead: usize) -> usize {
    let bytes = key_len + value_len;
    bytes + bytes / 8 + overhead
}

pub struct ValueCache {
    budget: usize,
    used: usize,
    /// Bytes charged per entry beyond its key and value.
    overhead: usize,
    slots: Vec<Entry>,
    /// Slot numbers, found by the hash of the slot's key.
    by_key: HashTable<u32>,
    hasher: DefaultHashBuilder,
    hand: usize,
    mirror: Option<Arc<ReadMirror>>,
}

impl ValueCache {
    pub fn new(budget: usize, mirror: Option<Arc<ReadMirror>>) -> ValueCache {
        let overhead = ENTRY_OVERHEAD_BYTES
            + if mirror.is_some() {
                MIRROR_OVERHEAD_BYTES
            } else {
                0
            };
        ValueCache {
            budget,
            used: 0,
            overhead,
            slots: Vec::new(),
            by_key: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            hand: 0,
            mirror,
        }
    }

    fn slot_of(&self, key: &[u8]) -> Option<usize> {
        let hash = self.hasher.hash_one(key);
        self.by_key
            .find(hash, |&s| self.slots[s as usize].key() == key)
            .map(|&s| s as usize)
    }

    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        let e = &self.slots[self.slot_of(key)?];
        e.referenced.set(true);
        Some(e.value.clone())
    }

    /// Caches `value` as the value of `key` (replacing any entry), evicting as needed.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) {
        if let Some(slot) = self.slot_of(key) {
            // Overwrite in place when the new value fits the budget's rules; else drop it.
            let old = self.slots[slot].cost(self.overhead);
            let new = cost(key.len(), value.len(), self.overhead);
            if new <= self.budget / 8 && self.used - old + new <= self.budget {
                let e = &mut self.slots[slot];
                e.value = Bytes::copy_from_slice(value);
                if let Some(m) = &self.mirror {
                    m.map.insert(e.key.clone(), e.value.clone());
                }
                self.used = self.used - old + new;
                return;
            }
            self.remove(key);
        }
        let cost = cost(key.len(), value.len(), self.overhead);
        if cost > self.budget / 8 {
            // One entry never takes more than an eighth of the cache.
            return;
        }
        while self.used + cost > self.budget && !self.slots.is_empty() {
            self.evict_one();
        }
        let entry = Entry::new(key, value);
        self.used += cost;
        let slot = u32::try_from(self.slots.len()).expect("cache slots fit u32");
        let hash = self.hasher.hash_one(key);
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.by_key
            .insert_unique(hash, slot, |&s| hasher.hash_one(slots[s as usize].key()));
        if let Some(m) = &self.mirror {
            m.map.insert(entry.key.clone(), entry.value.clone());
        }
        self.slots.push(entry);
    }

    pub fn remove(&mut self, key: &[u8]) {
        if let Some(slot) = self.slot_of(key) {
            self.take_slot(slot);
        }
    }

    #[cfg(test)]
    fn used_bytes(&self) -> usize {
        self.used
    }

    fn evict_one(&mut self) {
        loop {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            if self.slots[self.hand].referenced.replace(false) {
                self.hand += 1;
                continue;
            }
            self.take_slot(self.hand);
            return;
        }
    }

    /// Removes the entry in `slot`, and its table slot, by moving the last entry into it.
    fn take_slot(&mut self, slot: usize) {
        let (slots, hasher) = (&self.slots, &self.hasher);
        let hash = hasher.hash_one(slots[slot].key());
        self.by_key
            .find_entry(hash, |&s| s as usize == slot)
            .expect("every slot is in the table")
            .remove();
        let e = self.slots.swap_remove(slot);
        if let Some(m) = &self.mirror {
            m.map.remove(e.key());
        }
        self.used -= e.cost(self.overhead);
        if let Some(moved) = self.slots.get(slot) {
            // The entry that was last now sits at `slot`: repoint its table slot.
            let from = u32::try_from(self.slots.len()).expect("cache slots fit u32");
            let hash = self.hasher.hash_one(moved.key());
            *self
                .by_key
                .find_mut(hash, |&s| s == from)
                .expect("every slot is in the table") = slot as u32;
        }
        // Give memory back once the cache has shrunk to a quarter of its room.
        if self.slots.capacity() > 1024 && self.slots.len() < self.slots.capacity() / 4 {
            self.slots.shrink_to(self.slots.len() * 2);
            let (slots, hasher) = (&self.slots, &self.hasher);
            self.by_key
                .shrink_to(slots.len(), |&s| hasher.hash_one(slots[s as usize].key()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cache_stays_within_budget_and_keeps_hot_entries() {
        // Guards against the cache growing without bound or evicting what is being read.
        let mut c = ValueCache::new(100 * (ENTRY_OVERHEAD_BYTES + 10), None);
        c.insert(b"hot", b"1234567");
        for i in 0..1000 {
            assert!(c.get(b"hot").is_some(), "hot entry evicted at {i}");
            c.insert(format!("k{i:06}").as_bytes(), b"x");
            assert!(c.used_bytes() <= 100 * (ENTRY_OVERHEAD_BYTES + 10));
        }
    }

    #[test]
    fn a_cache_that_shrinks_keeps_every_entry_findable() {
        // Guards against giving memory back (slab and table shrunk) losing track of entries.
        let mirror = Arc::new(ReadMirror::default());
        let mut c = ValueCache::new(usize::MAX / 2, Some(mirror.clone()));
        for i in 0..5000u32 {
            c.insert(&i.to_le_bytes(), &i.to_be_bytes());
        }
        for i in (0..5000u32).filter(|i| i % 10 != 0) {
            c.remove(&i.to_le_bytes());
        }
        assert!(c.slots.capacity() < 4096, "{}", c.slots.capacity());
        for i in 0..5000u32 {
            let want = (i % 10 == 0).then(|| Bytes::copy_from_slice(&i.to_be_bytes()));
            assert_eq!(c.get(&i.to_le_bytes()), want);
            assert_eq!(mirror.get(&i.to_le_bytes()), want);
        }
        assert_eq!(c.used_bytes(), 500 * cost(4, 4, c.overhead));
    }

    #[test]
    fn zero_budget_caches_nothing() {
        // Guards against a disabled cache holding values anyway.
        let mut c = ValueCache::new(0, None);
        c.insert(b"k", b"v");
        assert_eq!(c.get(b"k"), None);
        assert_eq!(c.used_bytes(), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn cache_never_returns_a_stale_value(ops in proptest::collection::vec((0u8..20, proptest::option::of(any::<u8>())), 1..400)) {
            // Guards against a cached value (or its mirror) outliving the write that replaced or
            // removed it.
            let mirror = Arc::new(ReadMirror::default());
            let mut c = ValueCache::new(8 * (ENTRY_OVERHEAD_BYTES + MIRROR_OVERHEAD_BYTES + 2), Some(mirror.clone()));
            let mut model = std::collections::HashMap::new();
            for (k, v) in ops {
                match v {
                    Some(v) => { c.insert(&[k], &[v]); model.insert(k, v); }
                    None => { c.remove(&[k]); model.remove(&k); }
                }
                for key in 0u8..20 {
                    // The mirror holds exactly what the cache holds.
                    prop_assert_eq!(mirror.get(&[key]), c.get(&[key]));
                    if let Some(got) = c.get(&[key]) {
                        prop_assert_eq!(Some(&got[0]), model.get(&key));
                    }
                }
                prop_assert_eq!(mirror.entries(), c.slots.len());
                let sum: usize = c.slots.iter().map(|e| e.cost(c.overhead)).sum();
                prop_assert_eq!(sum, c.used_bytes());
                prop_assert_eq!(c.slots.len(), c.by_key.len());
                for (i, e) in c.slots.iter().enumerate() {
                    prop_assert_eq!(c.slot_of(e.key()), Some(i));
                }
            }
        }
    }
}
