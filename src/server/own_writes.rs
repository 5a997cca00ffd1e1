//! A client's gets see its own earlier writes, as the commands one Redis client pipelines do.
//!
//! A write changes the index and the cache only when the writer acknowledges it, and a get is
//! answered at once from them. So in one pipeline, `SET k v` then `GET k` would read `k` as it
//! was before the set. Each source (a connection) therefore keeps its writes whose answers it
//! has not taken yet. A get looks at the newest of them for its key:
//! - none, or its answer has arrived (acknowledged or failed): the store has every effect of
//!   the source's writes of the key, and the get reads it as usual;
//! - its answer has not arrived: the get waits for it, then answers with what the write left
//!   (the value set, or none after a remove), or, if the write failed, reads the store.
//!
//! The write a get waits for is acknowledged after the get arrived, so the answer is the
//! key's value at a moment between the get's arrival and its answer. Nothing unacknowledged is
//! shown: the get answers only once the write's answer is in, and a connection sends its
//! answers in order. Other connections' gets are not held back: between connections there is
//! no order until a write is acknowledged.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::sync::oneshot;

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
    write: Rc<PendingWrite>,
}

/// The newest write of a key whose answer has not arrived, and what it leaves.
pub struct Earlier {
    value: Option<Bytes>,
    write: Rc<PendingWrite>,
}

impl Earlier {
    /// The bytes its answer holds.
    pub fn value_len(&self) -> usize {
        self.value.as_ref().map_or(0, Bytes::len)
    }
}

impl OwnWrites {
    /// Records a write of `key` (a set of `value`, or a remove: `None`) whose answer arrives
    /// on `rx`; returns the answer for the session to take.
    pub fn record(
        &self,
        key: Bytes,
        value: Option<Bytes>,
        rx: oneshot::Receiver<OpResult>,
    ) -> WriteAnswer {
        let write = Rc::new(PendingWrite {
            rx: RefCell::new(Some(rx)),
            arrived: RefCell::new(None),
            applied: Cell::new(None),
            waiters: RefCell::new(Vec::new()),
            remove: value.is_none(),
        });
        let mut unanswered = self.unanswered.borrow_mut();
        prune(&mut unanswered);
        unanswered.push_back(Unanswered {
            key,
            value,
            write: write.clone(),
        });
        WriteAnswer(write)
    }

    /// The newest write of `key` whose answer has not arrived, if it is the newest of the key
    /// this source made. With no writes outstanding (a connection that only reads, or whose
    /// writes are answered) this costs one look at the front of the list.
    pub fn of(&self, key: &[u8]) -> Option<Earlier> {
        let mut unanswered = self.unanswered.borrow_mut();
        prune(&mut unanswered);
        let newest = unanswered.iter().rev().find(|w| w.key == key)?;
        // An answer already in means the store holds the write's effect, if it had one.
        if newest.write.poll_arrival(None) {
            return None;
        }
        Some(Earlier {
            value: newest.value.clone(),
            write: newest.write.clone(),
        })
    }
}

/// Drops the settled writes at the front. Answers are taken in request order, so the list
/// holds at most the connection's requests in flight.
fn prune(unanswered: &mut VecDeque<Unanswered>) {
    while unanswered
        .front()
        .is_some_and(|w| w.write.applied.get().is_some())
    {
        unanswered.pop_front();
    }
}

/// A write's answer, shared by the session (which takes it) and the gets that wait for it.
pub struct PendingWrite {
    rx: RefCell<Option<oneshot::Receiver<OpResult>>>,
    /// The answer, when it arrived before the session took it (a get's check received it).
    arrived: RefCell<Option<OpResult>>,
    /// Once the answer is in: whether the write took effect. Its answer dropped untaken counts
    /// as failed.
    applied: Cell<Option<bool>>,
    waiters: RefCell<Vec<Waker>>,
    remove: bool,
}

impl PendingWrite {
    /// Whether the write's answer is in, receiving it if it has arrived. Given a context, its
    /// task is woken when it arrives: whichever waiter the channel wakes (it keeps only the
    /// last one's waker) receives the answer and wakes the others.
    fn poll_arrival(&self, cx: Option<&mut Context<'_>>) -> bool {
        if self.applied.get().is_some() {
            return true;
        }
        let polled = {
            let mut rx = self.rx.borrow_mut();
            let Some(rx) = rx.as_mut() else {
                return true;
            };
            match &cx {
                Some(cx) => match Pin::new(rx).poll(&mut Context::from_waker(cx.waker())) {
                    Poll::Ready(r) => Some(r.unwrap_or(Err(KvsError::Closed))),
                    Poll::Pending => None,
                },
                None => match rx.try_recv() {
                    Ok(r) => Some(r),
                    Err(oneshot::error::TryRecvError::Closed) => Some(Err(KvsError::Closed)),
                    Err(oneshot::error::TryRecvError::Empty) => None,
                },
            }
        };
        if let Some(result) = polled {
            self.arrive(result);
            return true;
        }
        if let Some(cx) = cx {
            let mut waiters = self.waiters.borrow_mut();
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
        }
        false
    }

    fn arrive(&self, result: OpResult) {
        self.rx.borrow_mut().take();
        let applied = match &result {
            Ok(_) => true,
            // Removing an absent key leaves it absent, as a remove that succeeds does.
            Err(KvsError::KeyNotFound) => self.remove,
            Err(_) => false,
        };
        *self.arrived.borrow_mut() = Some(result);
        self.settle(applied);
    }

    /// The first call decides.
    fn settle(&self, applied: bool) {
        if self.applied.get().is_none() {
            self.applied.set(Some(applied));
            for w in self.waiters.take() {
                w.wake();
            }
        }
    }

    /// The answer, for the session to take (once).
    fn poll_take(&self, cx: Option<&mut Context<'_>>) -> Poll<OpResult> {
        if !self.poll_arrival(cx) {
            return Poll::Pending;
        }
        // Taken twice is not a state the session reaches.
        Poll::Ready(
            self.arrived
                .borrow_mut()
                .take()
                .unwrap_or(Err(KvsError::Closed)),
        )
    }

    /// Waits until the answer is in; whether the write took effect.
    async fn applied(&self) -> bool {
        poll_fn(|cx| match self.poll_arrival(Some(cx)) {
            true => Poll::Ready(self.applied.get() == Some(true)),
            false => Poll::Pending,
        })
        .await
    }
}

/// A write's answer as the session takes it. Dropped untaken (the connection went away), the
/// write counts as failed for the gets waiting on it.
pub struct WriteAnswer(Rc<PendingWrite>);

impl WriteAnswer {
    /// The answer, if it has arrived.
    pub fn try_take(&mut self) -> Option<OpResult> {
        match self.0.poll_take(None) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        }
    }

    pub fn poll_take(&mut self, cx: &mut Context<'_>) -> Poll<OpResult> {
        self.0.poll_take(Some(cx))
    }
}

impl Drop for WriteAnswer {
    fn drop(&mut self) {
        self.0.settle(false);
    }
}

/// A get's answer after `earlier`, the newest write of its key whose answer had not arrived:
/// what that write left, or, if it failed, what `read` finds.
pub async fn get_after<F>(earlier: Earlier, read: impl FnOnce() -> F) -> OpResult
where
    F: Future<Output = OpResult>,
{
    if earlier.write.applied().await {
        return Ok(earlier.value);
    }
    read().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    async fn store() -> OpResult {
        Ok(Some(b("store")))
    }

    #[test]
    fn a_get_waits_for_the_newest_write_of_its_key_and_answers_what_it_wrote() {
        let own = OwnWrites::default();
        let (tx1, rx1) = oneshot::channel();
        let (_tx_other, rx_other) = oneshot::channel();
        let (tx2, rx2) = oneshot::channel();
        let _first = own.record(b("k"), Some(b("1")), rx1);
        let _other = own.record(b("j"), Some(b("x")), rx_other);
        let mut second = own.record(b("k"), Some(b("2")), rx2);
        assert!(own.of(b"absent").is_none());
        let earlier = own.of(b"k").expect("the newest write of k is outstanding");
        assert_eq!(earlier.value_len(), 1);
        tx1.send(Ok(None)).unwrap();
        tx2.send(Ok(None)).unwrap();
        let got = block_on(get_after(earlier, store));
        assert_eq!(got.unwrap(), Some(b("2")));
        // The get's wait received the answer; the session still takes it.
        assert_eq!(second.try_take().unwrap().unwrap(), None);
    }

    #[test]
    fn an_answer_already_in_sends_the_get_to_the_store() {
        // The store holds the write's effect, and whatever other connections wrote after it.
        let own = OwnWrites::default();
        let (tx1, rx1) = oneshot::channel();
        let (tx2, rx2) = oneshot::channel();
        let _set = own.record(b("k"), Some(b("1")), rx1);
        let _remove = own.record(b("k"), None, rx2);
        tx2.send(Err(KvsError::KeyNotFound)).unwrap();
        assert!(own.of(b"k").is_none(), "the newest write's answer is in");
        drop(tx1);
    }

    #[test]
    fn a_failed_write_sends_the_get_to_the_store() {
        let own = OwnWrites::default();
        let (tx, rx) = oneshot::channel();
        let mut set = own.record(b("k"), Some(b("v")), rx);
        let earlier = own.of(b"k").unwrap();
        tx.send(Err(KvsError::DiskFull)).unwrap();
        assert!(matches!(set.try_take(), Some(Err(KvsError::DiskFull))));
        let got = block_on(get_after(earlier, store));
        assert_eq!(got.unwrap(), Some(b("store")));
        // Every answer taken: the list empties.
        assert!(own.of(b"k").is_none());
        assert!(own.unanswered.borrow().is_empty());
    }

    #[test]
    fn a_remove_leaves_the_key_absent_and_a_dropped_answer_counts_as_failed() {
        let own = OwnWrites::default();
        let (tx, rx) = oneshot::channel();
        let _remove = own.record(b("k"), None, rx);
        let earlier = own.of(b"k").unwrap();
        tx.send(Err(KvsError::KeyNotFound)).unwrap();
        assert_eq!(block_on(get_after(earlier, store)).unwrap(), None);

        let (_tx, rx) = oneshot::channel();
        let set = own.record(b("k2"), Some(b("v")), rx);
        let earlier = own.of(b"k2").unwrap();
        drop(set); // the connection went away
        assert_eq!(
            block_on(get_after(earlier, store)).unwrap(),
            Some(b("store"))
        );
    }

    #[test]
    fn a_get_waits_for_the_answer_and_the_session_still_takes_it() {
        block_on(async {
            let own = OwnWrites::default();
            let (tx, rx) = oneshot::channel();
            let mut set = own.record(b("k"), Some(b("v")), rx);
            let earlier = own.of(b"k").unwrap();
            let local = tokio::task::LocalSet::new();
            local
                .run_until(async move {
                    let get = tokio::task::spawn_local(get_after(earlier, || async {
                        panic!("the set was applied; the store is not asked")
                    }));
                    tokio::task::yield_now().await;
                    assert!(!get.is_finished());
                    tx.send(Ok(None)).unwrap();
                    assert_eq!(get.await.unwrap().unwrap(), Some(b("v")));
                    // The get received the answer from the channel; it waits for the session.
                    assert_eq!(set.try_take().unwrap().unwrap(), None);
                })
                .await;
        });
    }
}
