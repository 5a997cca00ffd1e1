//! The in-memory index of one partition: key to the position of its newest record.
//!
//! Invariant: every entry points at a complete, checksummed put record that was durable (per
//! the fsync policy) before the entry was inserted. Deleted keys have no entry.
//!
//! # Layout
//! The index is sized for millions of short keys, so it avoids one heap allocation per key
//! and a table slot as wide as an entry:
//! - `entries` holds every entry densely, 32 bytes each: its [`Loc`], its key length, and
//!   the key itself when it is at most [`INLINE_KEY_BYTES`] long. A longer key lives in its
//!   own allocation in `long_keys`, and the entry holds its slot number instead. Entries are
//!   stored in fixed-size chunks, so growth never copies them and never leaves more than one
//!   chunk unused.
//! - `table` maps a key's hash to the entry's position: 4 bytes and a control byte per
//!   bucket. hashbrown keeps at most 7/8 of the buckets full and grows by doubling, so just
//!   after a doubling the table costs about 2.3 buckets, 11.4 bytes, per key.
//!
//! So a key of up to 18 bytes costs between about 37 and 44 bytes, whatever the count.
//! Removing an entry moves the last entry into its place (and updates that entry's table
//! slot), keeping the entries dense.

use std::collections::BTreeSet;
use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use super::cache::{prefetch, Prefetch};
use crate::limits::KEY_BYTES_MAX;

/// Where a record lives: segment id, offset of the record, and its encoded length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
}

/// Keys up to this long are stored in the entry itself.
pub const INLINE_KEY_BYTES: usize = 18;
/// Entries per chunk of `entries` (32 KiB of entries).
const CHUNK_ENTRIES: usize = 1024;
/// Most entries one index holds: positions are `u32`.
pub const INDEX_ENTRIES_MAX: usize = u32::MAX as usize;

const _: () = assert!(KEY_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(
    INLINE_KEY_BYTES >= 4,
    "a long key's slot number fits in the entry"
);
const _: () = assert!(std::mem::size_of::<Entry>() == 32);

#[derive(Clone, Copy)]
struct Entry {
    loc: Loc,
    key_len: u16,
    /// The key if `key_len <= INLINE_KEY_BYTES`, zero-padded; otherwise the first four
    /// bytes are the little-endian slot of the key in `long_keys`.
    key: [u8; INLINE_KEY_BYTES],
}

impl Entry {
    fn long_slot(&self) -> Option<usize> {
        (usize::from(self.key_len) > INLINE_KEY_BYTES)
            .then(|| u32::from_le_bytes(self.key[..4].try_into().expect("four bytes")) as usize)
    }
}

/// The entries and the long keys: everything a table slot's position is resolved against.
#[derive(Default)]
struct Store {
    chunks: Vec<Vec<Entry>>,
    len: usize,
    long_keys: Vec<Box<[u8]>>,
    /// Slots of `long_keys` whose key was removed, for reuse.
    free_long: Vec<u32>,
}

impl Store {
    fn entry(&self, pos: u32) -> &Entry {
        let pos = pos as usize;
        &self.chunks[pos / CHUNK_ENTRIES][pos % CHUNK_ENTRIES]
    }

    fn entry_mut(&mut self, pos: u32) -> &mut Entry {
        let pos = pos as usize;
        &mut self.chunks[pos / CHUNK_ENTRIES][pos % CHUNK_ENTRIES]
    }

    fn key<'a>(&'a self, e: &'a Entry) -> &'a [u8] {
        match e.long_slot() {
            Some(slot) => &self.long_keys[slot],
            None => &e.key[..usize::from(e.key_len)],
        }
    }

    fn key_at(&self, pos: u32) -> &[u8] {
        self.key(self.entry(pos))
    }

    /// Appends an entry for `key` and returns its position.
    fn push(&mut self, key: &[u8], loc: Loc) -> u32 {
        assert!(key.len() <= KEY_BYTES_MAX, "key longer than KEY_BYTES_MAX");
        assert!(
            self.len < INDEX_ENTRIES_MAX,
            "an index holds at most {INDEX_ENTRIES_MAX} keys"
        );
        let mut e = Entry {
            loc,
            key_len: key.len() as u16,
            key: [0; INLINE_KEY_BYTES],
        };
        if key.len() <= INLINE_KEY_BYTES {
            e.key[..key.len()].copy_from_slice(key);
        } else {
            let slot = match self.free_long.pop() {
                Some(slot) => {
                    self.long_keys[slot as usize] = key.into();
                    slot
                }
                None => {
                    let slot = u32::try_from(self.long_keys.len()).expect("long keys fit u32");
                    self.long_keys.push(key.into());
                    slot
                }
            };
            e.key[..4].copy_from_slice(&slot.to_le_bytes());
        }
        if self.len.is_multiple_of(CHUNK_ENTRIES) {
            self.chunks.push(Vec::with_capacity(CHUNK_ENTRIES));
        }
        self.chunks.last_mut().expect("a chunk").push(e);
        let pos = self.len as u32;
        self.len += 1;
        pos
    }

    /// Removes the entry at `pos` by moving the last entry into its place; returns the
    /// removed entry's location and the old position of the moved entry, if one moved.
    fn swap_remove(&mut self, pos: u32) -> (Loc, Option<u32>) {
        let last = (self.len - 1) as u32;
        let mut chunk = self.chunks.pop().expect("a chunk");
        let tail = chunk.pop().expect("the last entry");
        if !chunk.is_empty() {
            self.chunks.push(chunk);
        }
        self.len -= 1;
        let removed = if pos == last {
            tail
        } else {
            std::mem::replace(self.entry_mut(pos), tail)
        };
        if let Some(slot) = removed.long_slot() {
            self.long_keys[slot] = Box::default();
            self.free_long.push(slot as u32);
        }
        (removed.loc, (pos != last).then_some(last))
    }

    fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.chunks.iter().flatten()
    }

    fn heap_bytes(&self) -> usize {
        let entries = self.chunks.len() * CHUNK_ENTRIES * std::mem::size_of::<Entry>()
            + self.chunks.capacity() * std::mem::size_of::<Vec<Entry>>();
        let long = self.long_keys.capacity() * std::mem::size_of::<Box<[u8]>>()
            + self.long_keys.iter().map(|k| k.len()).sum::<usize>()
            + self.free_long.capacity() * 4;
        entries + long
    }
}

/// The index of one partition.
#[derive(Default)]
pub struct Index {
    /// Positions in `store`, found by the hash of their key.
    table: HashTable<u32>,
    store: Store,
    hasher: DefaultHashBuilder,
}

impl Index {
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn find(&self, key: &[u8]) -> Option<&Entry> {
        let pos = self
            .table
            .find(self.hash(key), |&p| self.store.key_at(p) == key)?;
        Some(self.store.entry(*pos))
    }

    fn find_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        let hash = self.hash(key);
        let store = &self.store;
        let pos = *self.table.find(hash, |&p| store.key_at(p) == key)?;
        Some(self.store.entry_mut(pos))
    }

    pub fn get(&self, key: &[u8]) -> Option<Loc> {
        self.find(key).map(|e| e.loc)
    }

    /// Starts loading what a lookup of `key` will read, in two passes over a batch's keys like
    /// [`ValueCache::prefetch`](super::cache::ValueCache::prefetch): the table's bucket, then
    /// the entry it names. A hint: it changes nothing.
    pub fn prefetch(&self, key: &[u8], stage: Prefetch) {
        let hash = self.hash(key);
        // The first candidate the control bytes name: the key's, but for one chance in 128
        // per other entry in its group.
        self.table.find(hash, |p| {
            match stage {
                Prefetch::Bucket => prefetch(std::ptr::from_ref(p).cast()),
                Prefetch::Block => prefetch(std::ptr::from_ref(self.store.entry(*p)).cast()),
            }
            true
        });
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.find(key).is_some()
    }

    /// Points `key` at `loc`; returns the previous position.
    pub fn insert(&mut self, key: &[u8], loc: Loc) -> Option<Loc> {
        let hash = self.hash(key);
        let Index {
            table,
            store,
            hasher,
        } = self;
        let slot = table.entry(
            hash,
            |&p| store.key_at(p) == key,
            |&p| hasher.hash_one(store.key_at(p)),
        );
        match slot {
            hashbrown::hash_table::Entry::Occupied(o) => {
                let pos = *o.get();
                Some(std::mem::replace(&mut store.entry_mut(pos).loc, loc))
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(store.push(key, loc));
                None
            }
        }
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<Loc> {
        let hash = self.hash(key);
        let Index {
            table,
            store,
            hasher,
        } = self;
        let (pos, _) = table
            .find_entry(hash, |&p| store.key_at(p) == key)
            .ok()?
            .remove();
        let (loc, moved_from) = store.swap_remove(pos);
        if let Some(from) = moved_from {
            // The entry that was last now sits at `pos`: repoint its table slot.
            let moved_hash = hasher.hash_one(store.key_at(pos));
            *table
                .find_mut(moved_hash, |&p| p == from)
                .expect("every entry has a table slot") = pos;
        }
        // Give memory back after mass removals; halving at a quarter full keeps this
        // amortised O(1).
        if table.capacity() > 1024 && table.len() < table.capacity() / 4 {
            table.shrink_to(table.len() * 2, |&p| hasher.hash_one(store.key_at(p)));
        }
        Some(loc)
    }

    /// Moves `key` to `new` only if it still points at `old` (compaction's swap: a write that
    /// landed meanwhile wins).
    pub fn replace_if(&mut self, key: &[u8], old: Loc, new: Loc) -> bool {
        match self.find_mut(key) {
            Some(e) if e.loc == old => {
                e.loc = new;
                true
            }
            _ => false,
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Makes room for `additional` more keys, so that loading a known number of keys
    /// allocates the table once instead of rehashing it at every doubling.
    pub fn reserve(&mut self, additional: usize) {
        let Index {
            table,
            store,
            hasher,
        } = self;
        table.reserve(additional, |&p| hasher.hash_one(store.key_at(p)));
    }

    /// Every live key.
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.store.iter().map(|e| self.store.key(e))
    }

    /// Every (key, position) whose record lives in one of `segments`.
    pub fn entries_in(&self, segments: &BTreeSet<u32>) -> Vec<(Box<[u8]>, Loc)> {
        self.store
            .iter()
            .filter(|e| segments.contains(&e.loc.segment))
            .map(|e| (self.store.key(e).into(), e.loc))
            .collect()
    }

    /// Bytes of heap the index holds (the table, the entries and the long keys, without
    /// the allocator's own overhead).
    pub fn heap_bytes(&self) -> usize {
        self.table.allocation_size() + self.store.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn loc(n: u32) -> Loc {
        Loc {
            segment: n % 7,
            offset: n,
            len: n + 21,
        }
    }

    /// Checks every key of `model` and a few absent ones against `index`.
    fn assert_matches(index: &Index, model: &HashMap<Vec<u8>, Loc>) {
        assert_eq!(index.len(), model.len());
        assert_eq!(index.store.len, model.len());
        for (k, l) in model {
            assert_eq!(index.get(k), Some(*l), "key {k:?}");
            assert!(index.contains(k));
        }
        assert_eq!(index.get(b"absent key"), None);
        assert!(!index.contains(b"absent key"));
    }

    #[test]
    fn keys_at_the_inline_boundary_round_trip() {
        // Guards against off-by-one errors where keys switch from inline to heap storage.
        let mut index = Index::default();
        let mut model = HashMap::new();
        let keys: Vec<Vec<u8>> = (0..=40).map(|n| vec![b'k'; n]).collect();
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(index.insert(k, loc(i as u32)), None);
            model.insert(k.clone(), loc(i as u32));
        }
        assert_matches(&index, &model);
        // A key that is a prefix of a stored one, padded with zeros, must not match.
        assert_eq!(index.get(b"kkk\0"), None);
        for (i, k) in keys.iter().enumerate().step_by(2) {
            assert_eq!(index.remove(k), Some(loc(i as u32)));
            model.remove(k);
        }
        assert_matches(&index, &model);
    }

    #[test]
    fn prefetching_changes_nothing() {
        // Guards against the prefetch hint (which follows the first candidate bucket without
        // comparing keys) failing on absent, long or moved keys, or changing what is stored.
        let mut index = Index::default();
        let mut model = HashMap::new();
        for stage in [Prefetch::Bucket, Prefetch::Block] {
            index.prefetch(b"absent", stage);
        }
        let keys: Vec<Vec<u8>> = (0..2000u32)
            .map(|i| format!("{i:0width$}", width = (i % 40) as usize).into_bytes())
            .collect();
        for (i, k) in keys.iter().enumerate() {
            index.insert(k, loc(i as u32));
            model.insert(k.clone(), loc(i as u32));
        }
        // Removals move entries: the table's positions change.
        for k in keys.iter().step_by(3) {
            index.remove(k);
            model.remove(k);
        }
        for k in keys.iter().chain([&b"absent".to_vec()]) {
            for stage in [Prefetch::Bucket, Prefetch::Block] {
                index.prefetch(k, stage);
            }
        }
        assert_matches(&index, &model);
    }

    #[test]
    fn insert_returns_the_previous_location() {
        // Guards against an overwrite that loses the old location (live-byte accounting).
        let mut index = Index::default();
        assert_eq!(index.insert(b"key", loc(1)), None);
        assert_eq!(index.insert(b"key", loc(2)), Some(loc(1)));
        assert_eq!(index.get(b"key"), Some(loc(2)));
        assert_eq!(index.len(), 1);
        let long = [b'x'; 100];
        assert_eq!(index.insert(&long, loc(3)), None);
        assert_eq!(index.insert(&long, loc(4)), Some(loc(3)));
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn removal_moves_the_last_entry_and_keeps_it_reachable() {
        // Guards against the swap in remove leaving a table slot pointing at a stale position.
        let mut index = Index::default();
        let mut model = HashMap::new();
        for i in 0..3 * CHUNK_ENTRIES as u32 + 5 {
            let k = if i % 3 == 0 {
                format!("a-long-key-that-is-not-inline-{i}").into_bytes()
            } else {
                format!("k{i}").into_bytes()
            };
            index.insert(&k, loc(i));
            model.insert(k, loc(i));
        }
        assert_matches(&index, &model);
        let keys: Vec<Vec<u8>> = model.keys().cloned().collect();
        for k in keys.iter().take(2 * CHUNK_ENTRIES) {
            assert_eq!(index.remove(k), model.remove(k));
            assert_eq!(index.remove(k), None);
        }
        assert_matches(&index, &model);
        assert_eq!(
            index.store.chunks.len(),
            model.len().div_ceil(CHUNK_ENTRIES)
        );
        // Freed long-key slots are reused.
        let long_slots = index.store.long_keys.len();
        for i in 0..100u32 {
            let k = format!("another-long-key-not-inline-{i}").into_bytes();
            index.insert(&k, loc(i));
            model.insert(k, loc(i));
        }
        assert_eq!(index.store.long_keys.len(), long_slots);
        assert_matches(&index, &model);
    }

    #[test]
    fn reserve_keeps_existing_keys_reachable() {
        // Guards against a reserve that rehashes existing entries to the wrong slots.
        let mut index = Index::default();
        for i in 0..1000u32 {
            index.insert(format!("k{i}").as_bytes(), loc(i));
        }
        let before = index.table.capacity();
        index.reserve(100_000);
        assert!(index.table.capacity() >= 101_000 && index.table.capacity() > before);
        for i in 0..1000u32 {
            assert_eq!(index.get(format!("k{i}").as_bytes()), Some(loc(i)));
        }
    }

    #[test]
    fn replace_if_moves_only_an_unchanged_entry() {
        // Guards against compaction overwriting a write that landed while it copied.
        let mut index = Index::default();
        index.insert(b"k", loc(1));
        assert!(!index.replace_if(b"k", loc(9), loc(2)));
        assert_eq!(index.get(b"k"), Some(loc(1)));
        assert!(index.replace_if(b"k", loc(1), loc(2)));
        assert_eq!(index.get(b"k"), Some(loc(2)));
        assert!(!index.replace_if(b"absent", loc(1), loc(2)));
    }

    #[test]
    fn entries_in_lists_exactly_the_given_segments() {
        // Guards against compaction missing a live record or copying one it was not asked to.
        let mut index = Index::default();
        for i in 0..100u32 {
            let k = format!("key-{i}-{}", "x".repeat(i as usize % 30));
            index.insert(k.as_bytes(), loc(i));
        }
        let segments = BTreeSet::from([2, 5]);
        let mut got = index.entries_in(&segments);
        got.sort_by_key(|(_, l)| l.offset);
        let want: Vec<_> = (0..100u32)
            .filter(|i| segments.contains(&(i % 7)))
            .map(|i| {
                let k = format!("key-{i}-{}", "x".repeat(i as usize % 30));
                (k.into_bytes().into_boxed_slice(), loc(i))
            })
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn short_keys_cost_at_most_48_bytes_each() {
        // Guards against the index growing back to a boxed key and a wide slot per key:
        // checked after every insert, so also just after the table doubles.
        let mut index = Index::default();
        let mut worst = 0.0f64;
        for i in 0..120_000u64 {
            index.insert(format!("{i:016x}").as_bytes(), loc(i as u32));
            let n = i + 1;
            if n >= 20_000 {
                worst = worst.max(index.heap_bytes() as f64 / n as f64);
            }
        }
        assert!(worst <= 48.0, "{worst:.1} bytes per key");
        // Mass removal gives the table's memory back.
        let full = index.heap_bytes();
        for i in 0..110_000u64 {
            index.remove(format!("{i:016x}").as_bytes());
        }
        assert!(
            index.heap_bytes() < full / 4,
            "{} of {full} bytes",
            index.heap_bytes()
        );
        assert_eq!(
            index.get(format!("{:016x}", 119_999).as_bytes()),
            Some(loc(119_999))
        );
    }

    #[derive(Debug, Clone)]
    enum Step {
        Insert(u8, u32),
        Remove(u8),
        ReplaceIf(u8, u32, u32),
    }

    /// Keys of assorted lengths around the inline limit, some sharing prefixes.
    fn key(k: u8) -> Vec<u8> {
        let len = [0, 1, 5, 17, 18, 19, 24, 300][usize::from(k % 8)];
        let mut v = vec![k; len];
        if let Some(first) = v.first_mut() {
            *first = k / 8;
        }
        v
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            5 => (any::<u8>(), 0..8u32).prop_map(|(k, l)| Step::Insert(k % 64, l)),
            3 => any::<u8>().prop_map(|k| Step::Remove(k % 64)),
            1 => (any::<u8>(), 0..8u32, 0..8u32).prop_map(|(k, a, b)| Step::ReplaceIf(k % 64, a, b)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn index_matches_a_hashmap(steps in proptest::collection::vec(step(), 1..400)) {
            // Guards against any operation sequence diverging from a plain map.
            let mut index = Index::default();
            let mut model: HashMap<Vec<u8>, Loc> = HashMap::new();
            for s in &steps {
                match *s {
                    Step::Insert(k, l) => {
                        prop_assert_eq!(index.insert(&key(k), loc(l)), model.insert(key(k), loc(l)));
                    }
                    Step::Remove(k) => {
                        prop_assert_eq!(index.remove(&key(k)), model.remove(&key(k)));
                    }
                    Step::ReplaceIf(k, a, b) => {
                        let want = model.get(&key(k)) == Some(&loc(a));
                        if want {
                            model.insert(key(k), loc(b));
                        }
                        prop_assert_eq!(index.replace_if(&key(k), loc(a), loc(b)), want);
                    }
                }
                prop_assert_eq!(index.len(), model.len());
            }
            for k in 0..64u8 {
                prop_assert_eq!(index.get(&key(k)), model.get(&key(k)).copied());
            }
            let all: BTreeSet<u32> = (0..7).collect();
            let mut listed: Vec<(Vec<u8>, Loc)> = index
                .entries_in(&all)
                .into_iter()
                .map(|(k, l)| (k.into_vec(), l))
                .collect();
            let mut want: Vec<(Vec<u8>, Loc)> = model.into_iter().collect();
            listed.sort_by(|a, b| a.0.cmp(&b.0));
            want.sort_by(|a, b| a.0.cmp(&b.0));
            prop_assert_eq!(listed, want);
        }
    }
}
