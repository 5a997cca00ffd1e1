//! The newest record of each key, gathered while a partition opens.
//!
//! Opening reads every record (from hints or by scanning) in segment order, which is not
//! sequence order: compaction writes old records into segments with new ids. So for each key
//! the record with the highest sequence number is kept, deletes included, until every segment
//! has been read. A store can hold millions of keys, so the keys are appended to one buffer
//! instead of taking an allocation each.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use super::index::Loc;
use super::record::RecordKind;

/// The newest record seen so far for one key.
struct Slot {
    key_start: usize,
    key_len: u32,
    kind: RecordKind,
    seq: u64,
    loc: Loc,
}

/// The newest record of each key offered so far.
#[derive(Default)]
pub struct NewestRecords {
    /// Every distinct key, back to back.
    keys: Vec<u8>,
    slots: Vec<Slot>,
    /// Positions in `slots`, found by the hash of their key.
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

fn key_of<'a>(keys: &'a [u8], slot: &Slot) -> &'a [u8] {
    &keys[slot.key_start..slot.key_start + slot.key_len as usize]
}

impl NewestRecords {
    /// Makes room for `records` more keys of `key_bytes` bytes in all.
    pub fn reserve(&mut self, records: usize, key_bytes: usize) {
        let NewestRecords {
            keys,
            slots,
            table,
            hasher,
        } = self;
        table.reserve(records, |&p| {
            hasher.hash_one(key_of(keys, &slots[p as usize]))
        });
        slots.reserve(records);
        keys.reserve(key_bytes);
    }

    /// Keeps the record (`seq`, `kind`, `loc`) for `key` if it is newer than the one kept.
    pub fn offer(&mut self, key: &[u8], seq: u64, kind: RecordKind, loc: Loc) {
        let hash = self.hasher.hash_one(key);
        let NewestRecords {
            keys,
            slots,
            table,
            hasher,
        } = self;
        let entry = table.entry(
            hash,
            |&p| key_of(keys, &slots[p as usize]) == key,
            |&p| hasher.hash_one(key_of(keys, &slots[p as usize])),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(o) => {
                let slot = &mut slots[*o.get() as usize];
                if seq > slot.seq {
                    slot.seq = seq;
                    slot.kind = kind;
                    slot.loc = loc;
                }
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                let pos = u32::try_from(slots.len()).expect("fewer than 2^32 keys in a partition");
                slots.push(Slot {
                    key_start: keys.len(),
                    key_len: key.len() as u32,
                    kind,
                    seq,
                    loc,
                });
                keys.extend_from_slice(key);
                v.insert(pos);
            }
        }
    }

    /// (key, kind, location) of the newest record of every key.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], RecordKind, Loc)> + '_ {
        self.slots
            .iter()
            .map(|s| (key_of(&self.keys, s), s.kind, s.loc))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn loc(n: u32) -> Loc {
        Loc {
            segment: n,
            offset: n,
            len: n,
        }
    }

    /// Guards against an older record, read later, replacing a newer one (compaction output
    /// segments have higher ids than the log segments whose records are newer).
    #[test]
    fn the_highest_sequence_number_wins_in_any_order() {
        let mut newest = NewestRecords::default();
        newest.offer(b"a", 5, RecordKind::Put, loc(5));
        newest.offer(b"a", 3, RecordKind::Delete, loc(3));
        newest.offer(b"b", 1, RecordKind::Put, loc(1));
        newest.offer(b"b", 2, RecordKind::Delete, loc(2));
        newest.offer(b"", 7, RecordKind::Put, loc(7));
        let got: HashMap<Vec<u8>, (RecordKind, Loc)> = newest
            .iter()
            .map(|(k, kind, l)| (k.to_vec(), (kind, l)))
            .collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[&b"a"[..]], (RecordKind::Put, loc(5)));
        assert_eq!(got[&b"b"[..]], (RecordKind::Delete, loc(2)));
        assert_eq!(got[&b""[..]], (RecordKind::Put, loc(7)));
    }

    /// Guards against keys lost or mixed up when the table grows past a reservation.
    #[test]
    fn many_keys_of_mixed_lengths_survive_growth() {
        let mut newest = NewestRecords::default();
        newest.reserve(10, 100);
        let key = |i: u32| format!("{i}-{}", "k".repeat(i as usize % 40)).into_bytes();
        for i in 0..5000u32 {
            newest.offer(&key(i), u64::from(i), RecordKind::Put, loc(i));
        }
        for i in (0..5000u32).step_by(3) {
            newest.offer(
                &key(i),
                10_000 + u64::from(i),
                RecordKind::Delete,
                loc(i + 1),
            );
        }
        let got: HashMap<Vec<u8>, (RecordKind, Loc)> = newest
            .iter()
            .map(|(k, kind, l)| (k.to_vec(), (kind, l)))
            .collect();
        assert_eq!(got.len(), 5000);
        for i in 0..5000u32 {
            let want = if i % 3 == 0 {
                (RecordKind::Delete, loc(i + 1))
            } else {
                (RecordKind::Put, loc(i))
            };
            assert_eq!(got[&key(i)], want, "key {i}");
        }
    }
}
