//! A bounded cache of values for one partition, so hot reads stay off the disk path (the page
//! cache on these machines is reclaimed within seconds and cannot be counted on).
//!
//! Entries live in the hash table's own buckets. A small entry keeps its key and value in one
//! allocation, so a hit touches the table's control bytes, its bucket and that one block:
//! three cache misses where a slab of entries, a key allocation, a value allocation and a
//! shared header took six (a W2 profile had the cache at 29% of the worker's time). A hit on a
//! small value hands out a copy, which costs less than sharing it (an atomic count in a header
//! of its own); a large value, or one shared with a read mirror, is kept in an allocation of
//! its own and shared.
//!
//! CLOCK eviction over the table's buckets: each entry has a referenced bit set on every hit;
//! the hand walks the buckets, clearing bits until it finds an unreferenced entry to evict.
//! Keys and values are copied in, so a cached entry never pins a larger network buffer.
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

/// Key and value together up to this size share one allocation. Above it they are apart: one
/// block would round a 4 KiB value up to the allocator's next size class, a quarter more, and
/// copying it out on every hit would cost more than sharing it.
const JOINED_BYTES_MAX: usize = 1024;
/// Bytes charged per entry beyond its key and value (see [`cost`]) when they share one
/// allocation: its table bucket and control byte (25 bytes, up to about twice that while the
/// table has room to grow) and the allocation's own header. Measured through the server
/// (BENCHMARKS.md, "What a cached value costs"): a full cache's resident memory stays within
/// its budget.
const JOINED_OVERHEAD_BYTES: usize = 64;
/// Bytes charged per entry whose key and value are apart: the table bucket, the box of two
/// `Bytes`, and the shared headers `Bytes` gives them when they are first handed out.
const SPLIT_OVERHEAD_BYTES: usize = 160;
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

/// A cached value handed out by [`ValueCache::get_packed`].
#[derive(Debug, PartialEq)]
pub enum Packed {
    /// A share of a large value.
    Shared(Bytes),
    /// A small value, copied to this range of the caller's buffer.
    At(std::ops::Range<usize>),
}

enum Data {
    /// The key, then the value.
    Joined(Box<[u8]>),
    /// Apart, each in an allocation of its own exact size, shareable with a mirror.
    Split(Box<Split>),
}

struct Split {
    key: Bytes,
    value: Bytes,
}

struct Entry {
    data: Data,
    /// The key's length (in a joined block, where the value starts).
    key_len: u32,
    /// Sixteen bits of the key's hash that the table does not use (see [`tag_of`]): a lookup
    /// compares the key, in the entry's block (a cache miss), only where they match.
    tag: u16,
    referenced: Cell<bool>,
}

// An entry is three words: a bucket holds nothing else.
const _: () = assert!(std::mem::size_of::<Entry>() == 24);

/// The bits of a key's hash an entry keeps: hashbrown places an entry by the hash's low bits
/// and tells its bucket's candidates apart by the top seven; these are neither.
fn tag_of(hash: u64) -> u16 {
    (hash >> 32) as u16
}

impl Entry {
    /// An entry of `key` (whose hash has `tag`) and `value`; apart where `split` says so.
    fn new(key: &[u8], tag: u16, value: &[u8], split: bool) -> Entry {
        let data = if split {
            Data::Split(Box::new(Split {
                key: Bytes::copy_from_slice(key),
                value: Bytes::copy_from_slice(value),
            }))
        } else {
            let mut block = Vec::with_capacity(key.len() + value.len());
            block.extend_from_slice(key);
            block.extend_from_slice(value);
            Data::Joined(block.into_boxed_slice())
        };
        Entry {
            data,
            key_len: u32::try_from(key.len()).expect("keys are limited far below 4 GiB"),
            tag,
            referenced: Cell::new(false),
        }
    }

    /// Whether this is the entry of `key`, whose hash has `tag`.
    fn is(&self, key: &[u8], tag: u16) -> bool {
        self.tag == tag && self.key_len as usize == key.len() && self.key() == key
    }

    /// Where the entry's block is, and its length: the key and value, or the box that holds
    /// them.
    fn block(&self) -> (*const u8, usize) {
        match &self.data {
            Data::Joined(b) => (b.as_ptr(), b.len()),
            Data::Split(s) => (
                std::ptr::from_ref::<Split>(s).cast(),
                std::mem::size_of::<Split>(),
            ),
        }
    }

    /// The key: what the table's hashes are taken of.
    fn key(&self) -> &[u8] {
        match &self.data {
            Data::Joined(b) => &b[..self.key_len as usize],
            Data::Split(s) => &s.key,
        }
    }

    fn value_len(&self) -> usize {
        match &self.data {
            Data::Joined(b) => b.len() - self.key_len as usize,
            Data::Split(s) => s.value.len(),
        }
    }

    /// What the entry is charged (see [`cost`]).
    fn cost(&self, mirrored: bool) -> usize {
        let split = matches!(self.data, Data::Split(_));
        cost(self.key_len as usize, self.value_len(), split, mirrored)
    }

    /// Puts the entry in `mirror`, if there is one (its entries are all split).
    fn mirror_into(&self, mirror: &Option<Arc<ReadMirror>>) {
        if let (Some(m), Data::Split(s)) = (mirror, &self.data) {
            m.map.insert(s.key.clone(), s.value.clone());
        }
    }

    /// The value to hand out: a copy of a small one, a share of a large one.
    fn value(&self) -> Bytes {
        match &self.data {
            Data::Joined(b) => Bytes::copy_from_slice(&b[self.key_len as usize..]),
            Data::Split(s) => s.value.clone(),
        }
    }
}

/// What an entry is charged: its bytes, an eighth more for the allocator's rounding up to its
/// size classes, and the fixed overhead of its kind.
fn cost(key_len: usize, value_len: usize, split: bool, mirror: bool) -> usize {
    let bytes = key_len + value_len;
    let overhead = if split {
        SPLIT_OVERHEAD_BYTES
    } else {
        JOINED_OVERHEAD_BYTES
    };
    bytes + bytes / 8 + overhead + if mirror { MIRROR_OVERHEAD_BYTES } else { 0 }
}

/// The two passes of [`ValueCache::prefetch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefetch {
    Bucket,
    Block,
}

pub struct ValueCache {
    budget: usize,
    used: usize,
    table: HashTable<Entry>,
    hasher: DefaultHashBuilder,
    /// The CLOCK hand: a bucket number of `table`.
    hand: usize,
    mirror: Option<Arc<ReadMirror>>,
}

impl ValueCache {
    pub fn new(budget: usize, mirror: Option<Arc<ReadMirror>>) -> ValueCache {
        ValueCache {
            budget,
            used: 0,
            table: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            hand: 0,
            mirror,
        }
    }

    /// Whether an entry of this size keeps key and value apart: large ones, and every one an
    /// embedded store's mirror shares.
    fn split(&self, key_len: usize, value_len: usize) -> bool {
        self.mirror.is_some() || key_len + value_len > JOINED_BYTES_MAX
    }

    fn entry_cost(&self, e: &Entry) -> usize {
        e.cost(self.mirror.is_some())
    }

    fn find(&self, key: &[u8]) -> Option<&Entry> {
        let hash = self.hasher.hash_one(key);
        self.table.find(hash, |e| e.is(key, tag_of(hash)))
    }

    /// Asks the CPU to start loading what a lookup of `key` will read, without waiting for
    /// it: [`Prefetch::Bucket`] the entry's bucket (found from the table's control bytes
    /// alone), then, once that has had time to arrive, [`Prefetch::Block`] the entry's block
    /// (found from the bucket, without comparing the key). Lookups of a pipeline's keys,
    /// prepared by one pass of each over all of them, overlap their cache misses instead of
    /// taking them one after another.
    pub fn prefetch(&self, key: &[u8], stage: Prefetch) {
        let hash = self.hasher.hash_one(key);
        match stage {
            Prefetch::Bucket => {
                // The first candidate the control bytes name: the key's entry, but for one
                // chance in 128 per other entry in its group.
                self.table.find(hash, |e| {
                    prefetch(std::ptr::from_ref(e).cast());
                    true
                });
            }
            Prefetch::Block => {
                let tag = tag_of(hash);
                if let Some(e) = self
                    .table
                    .find(hash, |e| e.tag == tag && e.key_len as usize == key.len())
                {
                    // A 100-byte value after its key spans two cache lines: both are asked for.
                    let (at, len) = e.block();
                    prefetch(at);
                    prefetch(at.wrapping_add(len.saturating_sub(1)));
                }
            }
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        let e = self.find(key)?;
        e.referenced.set(true);
        Some(e.value())
    }

    /// The value of `key`, as [`ValueCache::get`] gives it, with a small one copied to the
    /// end of `out` instead of into an allocation of its own.
    pub fn get_packed(&self, key: &[u8], out: &mut Vec<u8>) -> Option<Packed> {
        let e = self.find(key)?;
        e.referenced.set(true);
        Some(match &e.data {
            Data::Joined(b) => {
                let start = out.len();
                out.extend_from_slice(&b[e.key_len as usize..]);
                Packed::At(start..out.len())
            }
            Data::Split(s) => Packed::Shared(s.value.clone()),
        })
    }

    /// Caches `value` as the value of `key` (replacing any entry), evicting as needed.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) {
        let split = self.split(key.len(), value.len());
        let charge = cost(key.len(), value.len(), split, self.mirror.is_some());
        let hash = self.hasher.hash_one(key);
        let (budget, used, mirrored) = (self.budget, self.used, self.mirror.is_some());
        let tag = tag_of(hash);
        if let Some(e) = self.table.find_mut(hash, |e| e.is(key, tag)) {
            // Overwrite in place when the new value fits the budget's rules; else drop it.
            let old = e.cost(mirrored);
            if charge <= budget / 8 && used - old + charge <= budget {
                match &mut e.data {
                    // A value of the same size overwrites the old one in its block.
                    Data::Joined(b) if b.len() == key.len() + value.len() => {
                        b[key.len()..].copy_from_slice(value);
                    }
                    _ => {
                        let referenced = e.referenced.get();
                        *e = Entry::new(key, tag, value, split);
                        e.referenced.set(referenced);
                    }
                }
                e.mirror_into(&self.mirror);
                self.used = used - old + charge;
                return;
            }
            self.remove(key);
        }
        if charge > self.budget / 8 {
            // One entry never takes more than an eighth of the cache.
            return;
        }
        while self.used + charge > self.budget && !self.table.is_empty() {
            self.evict_one();
        }
        let entry = Entry::new(key, tag, value, split);
        entry.mirror_into(&self.mirror);
        self.used += charge;
        let hasher = &self.hasher;
        self.table
            .insert_unique(hash, entry, |e| hasher.hash_one(e.key()));
    }

    pub fn remove(&mut self, key: &[u8]) {
        let hash = self.hasher.hash_one(key);
        if let Ok(found) = self.table.find_entry(hash, |e| e.is(key, tag_of(hash))) {
            let (e, _) = found.remove();
            self.forget(&e);
        }
    }

    /// Accounts for an entry taken out of the table, and takes it out of the mirror.
    fn forget(&mut self, e: &Entry) {
        if let Some(m) = &self.mirror {
            m.map.remove(e.key());
        }
        self.used -= self.entry_cost(e);
        // Give memory back once the cache has shrunk to a quarter of its room.
        if self.table.capacity() > 1024 && self.table.len() < self.table.capacity() / 4 {
            let hasher = &self.hasher;
            self.table
                .shrink_to(self.table.len() * 2, |e| hasher.hash_one(e.key()));
        }
    }

    #[cfg(test)]
    fn used_bytes(&self) -> usize {
        self.used
    }

    /// Evicts one entry; the table must not be empty.
    fn evict_one(&mut self) {
        loop {
            if self.hand >= self.table.num_buckets() {
                self.hand = 0;
            }
            let bucket = self.hand;
            self.hand += 1;
            match self.table.get_bucket(bucket) {
                Some(e) if !e.referenced.replace(false) => {
                    let (e, _) = self
                        .table
                        .get_bucket_entry(bucket)
                        .map_err(|_| ())
                        .expect("bucket is occupied")
                        .remove();
                    self.forget(&e);
                    return;
                }
                _ => {}
            }
        }
    }
}

/// Starts loading the cache line at `p` into the CPU's caches, without waiting for it.
#[cfg(target_arch = "x86_64")]
pub(super) fn prefetch(p: *const u8) {
    #[expect(
        unsafe_code,
        reason = "std has no stable prefetch; listed in UNSAFE.md"
    )]
    // SAFETY: a prefetch is a hint: it reads no memory architecturally and cannot fault, so
    // any address is sound (this one is a live allocation of the cache's).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn prefetch(_: *const u8) {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cache_stays_within_budget_and_keeps_hot_entries() {
        // Guards against the cache growing without bound or evicting what is being read.
        let budget = 100 * (JOINED_OVERHEAD_BYTES + 10);
        let mut c = ValueCache::new(budget, None);
        c.insert(b"hot", b"1234567");
        for i in 0..1000 {
            assert!(c.get(b"hot").is_some(), "hot entry evicted at {i}");
            c.insert(format!("k{i:06}").as_bytes(), b"x");
            assert!(c.used_bytes() <= budget);
        }
        assert!(c.table.len() > 50, "{} entries", c.table.len());
    }

    #[test]
    fn a_cache_that_shrinks_keeps_every_entry_findable() {
        // Guards against giving memory back (the table shrunk) losing track of entries.
        for mirror in [None, Some(Arc::new(ReadMirror::default()))] {
            let mut c = ValueCache::new(usize::MAX / 2, mirror.clone());
            for i in 0..5000u32 {
                c.insert(&i.to_le_bytes(), &i.to_be_bytes());
            }
            for i in (0..5000u32).filter(|i| i % 10 != 0) {
                c.remove(&i.to_le_bytes());
            }
            assert!(c.table.capacity() < 4096, "{}", c.table.capacity());
            for i in 0..5000u32 {
                let want = (i % 10 == 0).then(|| Bytes::copy_from_slice(&i.to_be_bytes()));
                assert_eq!(c.get(&i.to_le_bytes()), want);
                if let Some(m) = &mirror {
                    assert_eq!(m.get(&i.to_le_bytes()), want);
                }
            }
            let each = cost(4, 4, mirror.is_some(), mirror.is_some());
            assert_eq!(c.used_bytes(), 500 * each);
        }
    }

    #[test]
    fn prefetching_changes_nothing() {
        // Guards against the prefetch hint (which finds entries by a part of the hash alone)
        // touching an entry's state or failing on keys it does not hold.
        for mirror in [None, Some(Arc::new(ReadMirror::default()))] {
            let mut c = ValueCache::new(1 << 20, mirror);
            let key = |i: u32| format!("key-{i}").into_bytes();
            for stage in [Prefetch::Bucket, Prefetch::Block] {
                c.prefetch(b"absent", stage);
            }
            for i in 0..1000 {
                c.insert(&key(i), &[i as u8; 100]);
            }
            let used = c.used_bytes();
            for i in 0..2000 {
                for stage in [Prefetch::Bucket, Prefetch::Block] {
                    c.prefetch(&key(i), stage);
                }
            }
            assert_eq!(c.used_bytes(), used);
            assert!(
                c.table.iter().all(|e| !e.referenced.get()),
                "a prefetch is no hit"
            );
            for i in 0..1000 {
                assert_eq!(c.get(&key(i)).as_deref(), Some(&[i as u8; 100][..]));
            }
        }
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
        fn cache_never_returns_a_stale_value(
            mirrored in any::<bool>(),
            ops in proptest::collection::vec(
                (0u8..20, proptest::option::of((any::<u8>(), prop_oneof![Just(1usize), Just(2000)]))),
                1..400,
            ),
        ) {
            // Guards against a cached value (or its mirror) outliving the write that replaced or
            // removed it, with small (joined) and large (split) values overwriting each other.
            let mirror = mirrored.then(|| Arc::new(ReadMirror::default()));
            let budget = 10 * cost(1, 2000, true, mirrored);
            let mut c = ValueCache::new(budget, mirror.clone());
            let mut model = std::collections::HashMap::new();
            for (k, v) in ops {
                match v {
                    Some((byte, len)) => {
                        let value = vec![byte; len];
                        c.insert(&[k], &value);
                        model.insert(k, value);
                    }
                    None => { c.remove(&[k]); model.remove(&k); }
                }
                for key in 0u8..20 {
                    let got = c.get(&[key]);
                    if let Some(m) = &mirror {
                        // The mirror holds exactly what the cache holds.
                        prop_assert_eq!(m.get(&[key]), got.clone());
                    }
                    // A packed read finds the same value, after what the buffer held.
                    let mut out = vec![0xAA];
                    let packed = match c.get_packed(&[key], &mut out) {
                        Some(Packed::At(range)) => {
                            prop_assert_eq!(range.start, 1);
                            Some(out[range].to_vec())
                        }
                        Some(Packed::Shared(v)) => Some(v.to_vec()),
                        None => None,
                    };
                    prop_assert_eq!(&packed, &got.as_ref().map(|g| g.to_vec()));
                    if let Some(got) = got {
                        prop_assert_eq!(Some(&got.to_vec()), model.get(&key));
                    }
                }
                if let Some(m) = &mirror {
                    prop_assert_eq!(m.entries(), c.table.len());
                }
                let sum: usize = c.table.iter().map(|e| c.entry_cost(e)).sum();
                prop_assert_eq!(sum, c.used_bytes());
                prop_assert!(c.used_bytes() <= budget);
            }
        }
    }
}
