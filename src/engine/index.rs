//! The in-memory index of one partition: key to the position of its newest record.
//!
//! Invariant: every entry points at a complete, checksummed put record that was durable (per
//! the fsync policy) before the entry was inserted. Deleted keys have no entry.

use hashbrown::HashMap;

/// Where a record lives: segment id, offset of the record, and its encoded length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
}

#[derive(Default)]
pub struct Index {
    map: HashMap<Box<[u8]>, Loc>,
}

impl Index {
    pub fn get(&self, key: &[u8]) -> Option<Loc> {
        self.map.get(key).copied()
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.map.contains_key(key)
    }

    /// Points `key` at `loc`; returns the previous position.
    pub fn insert(&mut self, key: &[u8], loc: Loc) -> Option<Loc> {
        match self.map.get_mut(key) {
            Some(slot) => Some(std::mem::replace(slot, loc)),
            None => {
                self.map.insert(key.into(), loc);
                None
            }
        }
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<Loc> {
        self.map.remove(key)
    }

    /// Moves `key` to `new` only if it still points at `old` (compaction's swap: a write that
    /// landed meanwhile wins).
    pub fn replace_if(&mut self, key: &[u8], old: Loc, new: Loc) -> bool {
        match self.map.get_mut(key) {
            Some(slot) if *slot == old => {
                *slot = new;
                true
            }
            _ => false,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Every (key, position) whose record lives in one of `segments`.
    pub fn entries_in(&self, segments: &std::collections::BTreeSet<u32>) -> Vec<(Box<[u8]>, Loc)> {
        self.map
            .iter()
            .filter(|(_, loc)| segments.contains(&loc.segment))
            .map(|(k, loc)| (k.clone(), *loc))
            .collect()
    }
}
