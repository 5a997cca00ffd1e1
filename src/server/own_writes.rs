//! A client's gets see its own earlier writes, as the commands one Redis client pipelines do.
//!
//! A write changes the index and the cache only when the writer acknowledges it, and a get is
//! answered at once from them. So in one pipeline, `SET k v` then `GET k` would read `k` as it
//! was before the set. Each source (a connection) therefore keeps the writes whose answers it
//! has not taken yet. A get of one of their keys waits for the newest of them and answers with
//! what it wrote; if that write failed, with what the one before it wrote, and so on down to the
//! store as it is then.
//!
//! Nothing unacknowledged is shown: the get answers only once the write's answer is taken, and
//! a connection sends its answers in order. Other connections' gets are not held back: between
//! connections there is no order until a write is acknowledged.

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
}

struct Unanswered {
    key: Bytes,
    /// What the write leaves: the value of a set, `None` after a remove.
    value: Option<Bytes>,
    outcome: Rc<Outcome>,
}

/// The writes of one key a get must answer after, oldest first, with what each leaves.
pub type Earlier = Vec<(Option<Bytes>, Rc<Outcome>)>;

impl OwnWrites {
    /// Records a write of `key`: a set of `value`, or a remove (`None`). Its answer settles
    /// the returned mark.
    pub fn record(&self, key: Bytes, value: Option<Bytes>) -> WriteMark {
        let outcome = Rc::new(Outcome::default());
        let remove = value.is_none();
        let mut unanswered = self.unanswered.borrow_mut();
        prune(&mut unanswered);
        unanswered.push_back(Unanswered {
            key,
            value,
            outcome: outcome.clone(),
        });
        WriteMark { outcome, remove }
    }

    /// The writes of `key` whose answers are not taken yet, oldest first, if there are any.
    /// With none outstanding (a connection that only reads, or whose writes are answered), this
    /// costs one look at the front of the list.
    pub fn of(&self, key: &[u8]) -> Option<Earlier> {
        let mut unanswered = self.unanswered.borrow_mut();
        prune(&mut unanswered);
        let earlier: Earlier = unanswered
            .iter()
            .filter(|w| w.key == key && !w.outcome.is_settled())
            .map(|w| (w.value.clone(), w.outcome.clone()))
            .collect();
        (!earlier.is_empty()).then_some(earlier)
    }
}

/// Drops the settled writes at the front. Answers are taken in request order, so the list
/// holds at most the connection's requests in flight.
fn prune(unanswered: &mut VecDeque<Unanswered>) {
    while unanswered.front().is_some_and(|w| w.outcome.is_settled()) {
        unanswered.pop_front();
    }
}

/// Whether a write took effect, once its answer is taken.
#[derive(Default)]
pub struct Outcome {
    /// `Some(true)`: applied; `Some(false)`: failed, or its answer was dropped untaken.
    settled: Cell<Option<bool>>,
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
            Ok(_) => true,
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

/// A get's answer after `earlier` writes of its key: what the newest applied one left, or, if
/// none was applied, what `read` finds.
pub async fn get_after<F>(earlier: Earlier, read: impl FnOnce() -> F) -> OpResult
where
    F: std::future::Future<Output = OpResult>,
{
    for (value, outcome) in earlier.into_iter().rev() {
        if outcome.applied().await {
            return Ok(value);
        }
    }
    read().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn a_get_answers_with_the_newest_applied_write_of_its_key() {
        let own = OwnWrites::default();
        let first = own.record(b("k"), Some(b("1")));
        let other = own.record(b("j"), Some(b("x")));
        let second = own.record(b("k"), Some(b("2")));
        let earlier = own.of(b"k").expect("two writes of k outstanding");
        assert_eq!(earlier.len(), 2);
        assert!(own.of(b"absent").is_none());
        first.settle(&Ok(None));
        other.settle(&Ok(None));
        // The newest failed: the one before it stands.
        second.settle(&Err(KvsError::DiskFull));
        let got = block_on(get_after(earlier, || async { Ok(Some(b("store"))) }));
        assert_eq!(got.unwrap(), Some(b("1")));
        // Every write answered: the list empties and gets go straight to the store.
        assert!(own.of(b"k").is_none());
        assert!(own.unanswered.borrow().is_empty());
    }

    #[test]
    fn removes_and_failures_fall_through_to_what_is_left() {
        let own = OwnWrites::default();
        own.record(b("k"), None).settle(&Err(KvsError::KeyNotFound));
        // Settled before the get came: the store answers.
        assert!(own.of(b"k").is_none());

        let remove = own.record(b("k"), None);
        let earlier = own.of(b"k").unwrap();
        remove.settle(&Err(KvsError::KeyNotFound));
        let got = block_on(get_after(earlier, || async { Ok(Some(b("store"))) }));
        assert_eq!(
            got.unwrap(),
            None,
            "a remove of an absent key leaves it absent"
        );

        let set = own.record(b("k"), Some(b("v")));
        let earlier = own.of(b"k").unwrap();
        drop(set); // its answer dropped untaken: the connection went away
        let got = block_on(get_after(earlier, || async { Ok(Some(b("store"))) }));
        assert_eq!(got.unwrap(), Some(b("store")));
    }

    #[test]
    fn a_get_waits_until_the_answer_is_taken() {
        block_on(async {
            let own = OwnWrites::default();
            let set = own.record(b("k"), Some(b("v")));
            let earlier = own.of(b"k").unwrap();
            let local = tokio::task::LocalSet::new();
            local
                .run_until(async move {
                    let get = tokio::task::spawn_local(get_after(earlier, || async {
                        panic!("the set was applied; the store is not asked")
                    }));
                    tokio::task::yield_now().await;
                    assert!(!get.is_finished());
                    set.settle(&Ok(None));
                    assert_eq!(get.await.unwrap().unwrap(), Some(b("v")));
                })
                .await;
        });
    }
}
