//! The writer loop's queue: writes wait in one lane per source (a client connection) and lanes
//! take turns, so a client that floods a partition with writes cannot put everyone else's
//! behind its backlog. Deficit round robin: a lane's turn lasts until it has taken
//! [`TURN_BYTES`] (at least one write, whatever its size), then the next lane goes.
//!
//! Order within a lane is kept: one source's writes reach the log in the order it made them.

use std::collections::VecDeque;

use hashbrown::HashMap;

/// Who queued a write. Writes of one source keep their order; different sources take turns.
pub type Source = u64;

/// The source of writes made through the engine's own API ([`crate::KvStore`],
/// [`crate::engine::Partition::set`]): they share one lane.
pub const EMBEDDED: Source = 0;

/// Bytes a lane may take in one turn before the next lane goes (a write larger than this takes
/// its turn alone).
pub const TURN_BYTES: usize = 64 * 1024;

pub struct FairQueue<T> {
    /// Only sources with something queued have a lane.
    lanes: HashMap<Source, VecDeque<(usize, T)>>,
    /// Sources with a lane, the one whose turn it is first.
    turns: VecDeque<Source>,
    /// Bytes the lane at the front of `turns` may still take this turn.
    credit: usize,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        FairQueue {
            lanes: HashMap::new(),
            turns: VecDeque::new(),
            credit: TURN_BYTES,
        }
    }
}

impl<T> FairQueue<T> {
    pub fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    /// Queues `item`, of `bytes` bytes, at the back of `source`'s lane.
    pub fn push(&mut self, source: Source, bytes: usize, item: T) {
        let lane = self.lanes.entry(source).or_default();
        if lane.is_empty() {
            self.turns.push_back(source);
        }
        lane.push_back((bytes, item));
    }

    /// The item [`FairQueue::pop`] would return, with its size in bytes.
    pub fn peek(&self) -> Option<(usize, &T)> {
        let source = self.turns.front()?;
        self.lanes[source]
            .front()
            .map(|(bytes, item)| (*bytes, item))
    }

    /// The next item in fair order.
    pub fn pop(&mut self) -> Option<T> {
        let source = *self.turns.front()?;
        let lane = self
            .lanes
            .get_mut(&source)
            .expect("a source in turn has a lane");
        let (bytes, item) = lane.pop_front().expect("lanes are never empty");
        self.credit = self.credit.saturating_sub(bytes);
        if lane.is_empty() {
            self.lanes.remove(&source);
            self.turns.pop_front();
            self.credit = TURN_BYTES;
        } else if self.credit == 0 {
            self.turns.rotate_left(1);
            self.credit = TURN_BYTES;
        }
        Some(item)
    }

    /// Everything queued, in fair order, leaving the queue empty.
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(move || self.pop())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lanes_take_turns_by_bytes() {
        let mut q = FairQueue::default();
        // A flood of 32 KiB writes from source 1, then one small write from source 2.
        for i in 0..10 {
            q.push(1, 32 * 1024, (1, i));
        }
        q.push(2, 100, (2, 0));
        let order: Vec<_> = q.drain().collect();
        // Source 1 uses its turn (two writes make 64 KiB), then source 2 goes.
        assert_eq!(order[..3], [(1, 0), (1, 1), (2, 0)]);
        assert_eq!(order.len(), 11);
    }

    #[test]
    fn a_write_larger_than_a_turn_takes_one_turn() {
        let mut q = FairQueue::default();
        q.push(1, 1 << 20, 'a');
        q.push(1, 1 << 20, 'b');
        q.push(2, 10, 'x');
        q.push(2, 10, 'y');
        let order: String = q.drain().collect();
        assert_eq!(order, "axyb");
    }

    #[test]
    fn peek_shows_what_pop_returns() {
        let mut q = FairQueue::default();
        assert!(q.peek().is_none() && q.pop().is_none() && q.is_empty());
        q.push(7, 1, 'a');
        q.push(8, 2, 'b');
        let mut seen = Vec::new();
        while let Some((bytes, &next)) = q.peek() {
            seen.push((bytes, next));
            assert_eq!(q.pop(), Some(next));
        }
        assert_eq!(seen, [(1, 'a'), (2, 'b')]);
        assert!(q.is_empty());
    }

    proptest! {
        /// Every item comes out once, each source's in the order pushed.
        #[test]
        fn fair_and_order_keeping(
            pushes in proptest::collection::vec((0u64..5, 1usize..100_000), 0..200),
            pops_between in proptest::collection::vec(0usize..4, 0..200),
        ) {
            let mut q = FairQueue::default();
            let mut out = Vec::new();
            let mut pops = pops_between.into_iter();
            for (i, &(source, bytes)) in pushes.iter().enumerate() {
                q.push(source, bytes, (source, i));
                for _ in 0..pops.next().unwrap_or(0) {
                    if let Some(x) = q.pop() {
                        out.push(x);
                    }
                }
            }
            out.extend(q.drain());
            prop_assert_eq!(out.len(), pushes.len());
            for source in 0..5 {
                let mine: Vec<usize> =
                    out.iter().filter(|(s, _)| *s == source).map(|&(_, i)| i).collect();
                prop_assert!(mine.windows(2).all(|w| w[0] < w[1]), "order kept for {}", source);
            }
            let mut sorted: Vec<usize> = out.iter().map(|&(_, i)| i).collect();
            sorted.sort_unstable();
            prop_assert_eq!(sorted, (0..pushes.len()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_waiting_source_goes_within_one_turn_of_each_other() {
        let mut q = FairQueue::default();
        // Three flooders with deep backlogs, then a newcomer.
        for s in 1..=3u64 {
            for i in 0..100 {
                q.push(s, 16 * 1024, (s, i));
            }
        }
        q.push(9, 10, (9, 0));
        let order: Vec<_> = q.drain().collect();
        let at = order.iter().position(|&(s, _)| s == 9).unwrap();
        // At most one turn (64 KiB = 4 writes) of each flooder before it.
        assert!(at <= 3 * 4, "the newcomer went {at}th");
    }
}
