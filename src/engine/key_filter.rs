//! A Bloom filter of one partition's live keys, readable from any thread: an embedded store's
//! handles answer a get of a key the filter has never seen ("absent") on the calling thread,
//! without the hop to the owner thread.
//!
//! Only the owner thread adds keys, always before the write that made the key live is
//! acknowledged, so a get that starts after that acknowledgement finds its bits. Removed keys
//! keep their bits (a get of one takes the hop, as a false positive does). When more keys were
//! added than the filter was sized for, the owner rebuilds it from the index at twice the size.
//!
//! Invariant: every live key of the partition is in the filter (no false negatives).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};

use hashbrown::DefaultHashBuilder;

/// Filter bits per key it is sized for. A false positive costs a hop to the owner thread
/// (tens of microseconds), so the rate is kept near 0.1%: at 1%, one get in a hundred taking
/// the hop cost more than half the speed of gets of absent keys one at a time.
const BITS_PER_KEY: usize = 16;
/// Bits set and tested per key, all in one block (7 slices of 9 bits use 63 of a hash's 64).
const PROBES: u32 = 7;
/// Keys the smallest filter is sized for.
const MIN_KEYS: usize = 1024;
/// u64 words per block: a key's bits all lie in one 64-byte block (one cache line), so adding
/// or testing a key touches one line of memory.
const BLOCK_WORDS: usize = 8;

struct Bits {
    words: Box<[AtomicU64]>,
    blocks: u64,
    /// Keys this filter was sized for, and keys added to it since it was built.
    capacity: usize,
    added: AtomicUsize,
    hasher: DefaultHashBuilder,
}

impl Bits {
    fn sized_for(keys: usize) -> Bits {
        let capacity = keys.max(MIN_KEYS);
        let blocks = (capacity * BITS_PER_KEY).div_ceil(BLOCK_WORDS * 64);
        Bits {
            words: (0..blocks * BLOCK_WORDS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            blocks: blocks as u64,
            capacity,
            added: AtomicUsize::new(0),
            hasher: DefaultHashBuilder::default(),
        }
    }

    /// The (word, bit mask) pairs of `key`: a block chosen by the hash's high bits, then
    /// [`PROBES`] bits within it from 9-bit slices of a remix of the hash (so that the bits
    /// within a block do not depend on the bits that chose it).
    fn positions(&self, key: &[u8]) -> impl Iterator<Item = (usize, u64)> {
        let h = self.hasher.hash_one(key);
        let block = ((u128::from(h) * u128::from(self.blocks)) >> 64) as usize;
        let probes = (h ^ (h >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (0..PROBES).map(move |i| {
            let bit = (probes >> (9 * i)) as usize & (BLOCK_WORDS * 64 - 1);
            (block * BLOCK_WORDS + bit / 64, 1u64 << (bit % 64))
        })
    }

    fn add(&self, key: &[u8]) {
        for (word, mask) in self.positions(key) {
            self.words[word].fetch_or(mask, Ordering::Release);
        }
        self.added.fetch_add(1, Ordering::Relaxed);
    }

    fn may_contain(&self, key: &[u8]) -> bool {
        self.positions(key)
            .all(|(word, mask)| self.words[word].load(Ordering::Acquire) & mask != 0)
    }
}

/// How much room a rebuilt filter leaves for new keys.
#[derive(Clone, Copy, Debug)]
pub enum Headroom {
    /// A quarter more than the live keys: at open, where the store may not grow at all.
    Quarter,
    /// Twice the live keys: when the filter filled up, so a growing store rebuilds it
    /// a logarithmic number of times.
    Double,
}

/// One partition's filter, shared by its owner and the store's handles (behind an `Arc`).
pub struct KeyFilter {
    bits: RwLock<Bits>,
}

impl Default for KeyFilter {
    fn default() -> Self {
        KeyFilter {
            bits: RwLock::new(Bits::sized_for(0)),
        }
    }
}

impl std::fmt::Debug for KeyFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bits = self.bits.read().unwrap_or_else(PoisonError::into_inner);
        write!(
            f,
            "KeyFilter({} blocks, sized for {} keys)",
            bits.blocks, bits.capacity
        )
    }
}

impl KeyFilter {
    /// False only if `key` is not live in the partition (as of a moment during the call).
    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.bits
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .may_contain(key)
    }

    /// Adds a key about to become live. Returns whether the filter is over the count it was
    /// sized for, so the owner should [`KeyFilter::rebuild`] it.
    pub fn add(&self, key: &[u8]) -> bool {
        let bits = self.bits.read().unwrap_or_else(PoisonError::into_inner);
        bits.add(key);
        bits.added.load(Ordering::Relaxed) > bits.capacity
    }

    /// Replaces the filter with one holding `keys` (every live key, `live` of them) and the
    /// room for more that `headroom` says. Readers see the old filter until the new one is
    /// complete.
    pub fn rebuild<'a>(
        &self,
        live: usize,
        headroom: Headroom,
        keys: impl Iterator<Item = &'a [u8]>,
    ) {
        let room = match headroom {
            Headroom::Quarter => live.saturating_add(live / 4),
            Headroom::Double => live.saturating_mul(2),
        };
        let fresh = Bits::sized_for(room);
        for k in keys {
            fresh.add(k);
        }
        *self.bits.write().unwrap_or_else(PoisonError::into_inner) = fresh;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_fresh_filter_holds_nothing_and_few_false_positives() {
        let f = KeyFilter::default();
        for i in 0..1000 {
            f.add(format!("in-{i}").as_bytes());
        }
        let false_positives = (0..10_000)
            .filter(|i| f.may_contain(format!("out-{i}").as_bytes()))
            .count();
        eprintln!("{false_positives} false positives in 10,000 absent keys");
        // Sized for 1,024 keys at 16 bits each: about 0.1% expected.
        assert!(
            false_positives < 100,
            "{false_positives} false positives in 10,000"
        );
    }

    proptest! {
        #[test]
        fn no_false_negatives_across_rebuilds(keys in proptest::collection::vec(any::<u32>(), 1..5000)) {
            // Guards against a key becoming invisible (a get answered "absent" for a live key),
            // including across the rebuilds that growth triggers.
            let f = KeyFilter::default();
            let mut live: Vec<Vec<u8>> = Vec::new();
            for k in keys {
                let key = k.to_le_bytes().to_vec();
                let over = f.add(&key);
                live.push(key);
                if over {
                    f.rebuild(live.len(), Headroom::Double, live.iter().map(Vec::as_slice));
                }
                prop_assert!(f.may_contain(live.last().unwrap()));
            }
            prop_assert!(live.iter().all(|k| f.may_contain(k)));
        }
    }
}
