//! A client's gets see its own earlier writes, as the commands one Redis client pipelines do.
//!
//! A write changes the index and the cache only when the writer acknowledges it, and a get is
//! answered at once from them. So in one pipeline, `SET k v` then `GET k` would read `k` as it
//! was before the set. Each source (a connection) therefore keeps its writes whose answers it
//! has not taken yet. A get looks at the newest of them for its key:
//! - none, or its answer is taken: the store has every effect of the source's writes of the
//!   key, and the get reads it as usual;
//! - its answer is not taken yet: the get waits until it is, then answers with what the write
//!   left (the value set, or none after a remove), or, if the write failed, reads the store.
//!
//! Nothing unacknowledged is shown: the get answers only once the write's answer is taken, and
//! a connection sends its answers in order. Other connections' gets are not held back: between
//! connections there is no order until a write is acknowledged. One case reads a value older
//! than the newest acknowledged one: when the write's answer has arrived but is not yet taken,
//! and another connection's write of the same key was acknowledged after it and before the get
//! came, the get answers with this connection's write, not the other's.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use bytes::Bytes;

use crate::engine::shard::OpResult;
use crate::KvsError;

/// One source's writes whose answers it has not taken yet.
#[derive(Default)]
pub struct OwnWrites {
    unanswered: RefCell<VecDeque<Unanswered>>,
    /// One bit per write in the list, chosen by its key's hash: a get whose bit is clear has
    /// no write to look for, and is not slowed by the list at all.
    summary: Cell<u64>,
}

/// A key's bit in [`OwnWrites::summary`], from its crc32c (the high bits: the low ones pick
/// the partition).
fn bit(hash: u32) -> u64 {
    1 << (hash >> 26)
}

struct Unanswered {
    hash: u32,
    key: KeyCopy,
    outcome: Rc<Outcome>,
}

/// A key as the list keeps it: a copy in place when short (no allocation), else shared.
enum KeyCopy {
    Inline {
        len: u8,
        bytes: [u8; KEY_INLINE_MAX],
    },
    Shared(Bytes),
}

const KEY_INLINE_MAX: usize = 30;

impl KeyCopy {
    fn of(key: &Bytes) -> KeyCopy {
        if key.len() <= KEY_INLINE_MAX {
            let mut bytes = [0; KEY_INLINE_MAX];
            bytes[..key.len()].copy_from_slice(key);
            KeyCopy::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            KeyCopy::Shared(key.clone())
        }
    }

    fn is(&self, key: &[u8]) -> bool {
        match self {
            KeyCopy::Inline { len, bytes } => &bytes[..usize::from(*len)] == key,
            KeyCopy::Shared(k) => k == key,
        }
    }
}

/// The newest write of a key whose answer is not taken yet.
pub struct Earlier {
    outcome: Rc<Outcome>,
}

impl OwnWrites {
    /// Records a write of `key` (whose crc32c is `hash`); a remove if `remove`. Its answer
    /// settles the returned mark.
    pub fn record(&self, hash: u32, key: &Bytes, remove: bool) -> WriteMark {
        let outcome = Rc::new(Outcome::default());
        let mut unanswered = self.unanswered.borrow_mut();
        self.prune(&mut unanswered);
        unanswered.push_back(Unanswered {
            hash,
            key: KeyCopy::of(key),
            outcome: outcome.clone(),
        });
        self.summary.set(self.summary.get() | bit(hash));
        WriteMark { outcome, remove }
    }

    /// The newest write of `key` (whose crc32c is `hash`) by this source, if its answer is
    /// not taken yet.
    #[inline]
    pub fn of(&self, hash: u32, key: &[u8]) -> Option<Earlier> {
        if self.summary.get() & bit(hash) == 0 {
            return None;
        }
        self.newest_untaken(hash, key)
    }

    fn newest_untaken(&self, hash: u32, key: &[u8]) -> Option<Earlier> {
        let mut unanswered = self.unanswered.borrow_mut();
        self.prune(&mut unanswered);
        let newest = unanswered
            .iter()
            .rev()
            .find(|w| w.hash == hash && w.key.is(key))?;
        // Taken means acknowledged or failed: the store holds its effect, if it had one.
        if newest.outcome.is_settled() {
            return None;
        }
        newest.outcome.wanted.set(true);
        Some(Earlier {
            outcome: newest.outcome.clone(),
        })
    }

    /// Drops the settled writes at the front, and sums up the rest. Answers are taken in
    /// request order, so the list holds at most the connection's requests in flight.
    fn prune(&self, unanswered: &mut VecDeque<Unanswered>) {
        let before = unanswered.len();
        while unanswered.front().is_some_and(|w| w.outcome.is_settled()) {
            unanswered.pop_front();
        }
        if unanswered.len() != before {
            self.summary
                .set(unanswered.iter().fold(0, |sum, w| sum | bit(w.hash)));
        }
    }
}

/// Whether a write took effect, once its answer is taken.
#[derive(Default)]
pub struct Outcome {
    /// `Some(true)`: applied; `Some(false)`: failed, or its answer was dropped untaken.
    settled: Cell<Option<bool>>,
    /// A get waits for this write: keep what it left when it is answered.
    wanted: Cell<bool>,
    /// What the write left, kept only when `wanted`: the value of a put (its acknowledgement
    /// hands it back), `None` after a remove.
    left: RefCell<Option<Bytes>>,
    waiters: RefCell<Vec<Waker>>,
}

impl Outcome {
    fn is_settled(&self) -> bool {
        self.settled.get().is_some()
    }

    /// The first call decides.
    fn settle(&self, applied: bool) {
        if self.settled.get().is_none() {
            self.settled.set(Some(applied));
            for w in self.waiters.take() {
                w.wake();
            }
        }
    }

    /// Waits until the write's answer is taken; whether it took effect.
    async fn applied(&self) -> bool {
        poll_fn(|cx| match self.settled.get() {
            Some(applied) => Poll::Ready(applied),
            None => {
                let mut waiters = self.waiters.borrow_mut();
                if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    waiters.push(cx.waker().clone());
                }
                Poll::Pending
            }
        })
        .await
    }
}

/// Carried by a write's answer: settles the write's [`Outcome`] when the answer is taken, or,
/// dropped untaken, as failed.
pub struct WriteMark {
    outcome: Rc<Outcome>,
    remove: bool,
}

impl WriteMark {
    pub fn settle(self, result: &OpResult) {
        let applied = match result {
            Ok(value) => {
                if self.outcome.wanted.get() {
                    *self.outcome.left.borrow_mut() = value.clone();
                }
                true
            }
            // Removing an absent key leaves it absent, as a remove that succeeds does.
            Err(KvsError::KeyNotFound) => self.remove,
            Err(_) => false,
        };
        self.outcome.settle(applied);
    }
}

impl Drop for WriteMark {
    fn drop(&mut self) {
        self.outcome.settle(false);
    }
}

/// A get's answer after `earlier`, the newest write of its key whose answer was not taken:
/// what that write left, or, if it failed, what `read` finds.
pub async fn get_after<F>(earlier: Earlier, read: impl FnOnce() -> F) -> OpResult
where
    F: std::future::Future<Output = OpResult>,
{
    if earlier.outcome.applied().await {
        // Several gets may wait for the same write: each answers with it.
        return Ok(earlier.outcome.left.borrow().clone());
    }
    read().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tests::run_local as block_on;

    fn h(s: &str) -> u32 {
        crc32c::crc32c(s.as_bytes())
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    async fn store() -> OpResult {
        Ok(Some(b("store")))
    }

    /// A put's acknowledgement, which hands its value back.
    fn acked(v: &str) -> OpResult {
        Ok(Some(b(v)))
    }

    #[test]
    fn a_get_answers_with_what_the_newest_write_of_its_key_left() {
        let own = OwnWrites::default();
        let first = own.record(h("k"), &b("k"), false);
        let other = own.record(h("j"), &b("j"), false);
        let second = own.record(h("k"), &b("k"), false);
        assert!(own.of(h("absent"), b"absent").is_none());
        let earlier = own
            .of(h("k"), b"k")
            .expect("the newest write of k is outstanding");
        first.settle(&acked("1"));
        other.settle(&acked("x"));
        second.settle(&acked("2"));
        assert_eq!(block_on(get_after(earlier, store)).unwrap(), Some(b("2")));
        // Every answer taken: the list empties and gets go straight to the store.
        assert!(own.of(h("k"), b"k").is_none());
        assert!(own.unanswered.borrow().is_empty());
        assert_eq!(own.summary.get(), 0);
    }

    #[test]
    fn a_hash_shared_by_two_keys_is_told_apart_by_the_key() {
        let own = OwnWrites::default();
        let long = Bytes::from(vec![b'k'; 100]);
        let _set = own.record(7, &long, false);
        let _short = own.record(7, &b("k"), false);
        assert!(own.of(7, b"other").is_none());
        assert!(own.of(7, &long).is_some());
        assert!(own.of(7, b"k").is_some());
    }

    #[test]
    fn a_newer_write_taken_first_sends_the_get_to_the_store() {
        // A DEL answered inside its own task, before the session took an earlier SET's
        // answer: the store holds both, and whatever other connections wrote after them.
        let own = OwnWrites::default();
        let _set = own.record(h("k"), &b("k"), false);
        own.record(h("k"), &b("k"), true).settle(&Ok(None));
        assert!(own.of(h("k"), b"k").is_none());
    }

    #[test]
    fn failures_fall_through_to_the_store_and_removes_leave_the_key_absent() {
        let own = OwnWrites::default();
        let set = own.record(h("k"), &b("k"), false);
        let earlier = own.of(h("k"), b"k").unwrap();
        set.settle(&Err(KvsError::DiskFull));
        assert_eq!(
            block_on(get_after(earlier, store)).unwrap(),
            Some(b("store"))
        );

        let remove = own.record(h("k"), &b("k"), true);
        let earlier = own.of(h("k"), b"k").unwrap();
        remove.settle(&Err(KvsError::KeyNotFound));
        assert_eq!(block_on(get_after(earlier, store)).unwrap(), None);

        let set = own.record(h("k"), &b("k"), false);
        let earlier = own.of(h("k"), b"k").unwrap();
        drop(set); // its answer dropped untaken: the connection went away
        assert_eq!(
            block_on(get_after(earlier, store)).unwrap(),
            Some(b("store"))
        );
    }

    #[test]
    fn a_get_waits_until_the_answer_is_taken() {
        block_on(async {
            let own = OwnWrites::default();
            let set = own.record(h("k"), &b("k"), false);
            let earlier = own.of(h("k"), b"k").unwrap();
            let get = tokio::task::spawn_local(get_after(earlier, || async {
                panic!("the set was applied; the store is not asked")
            }));
            tokio::task::yield_now().await;
            assert!(!get.is_finished());
            set.settle(&acked("v"));
            assert_eq!(get.await.unwrap().unwrap(), Some(b("v")));
        });
    }
}
