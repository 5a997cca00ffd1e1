//! A fixed set of threads sharing one unbounded crossbeam channel of jobs.

use std::panic::{self, AssertUnwindSafe};
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};

use super::{check_threads, ThreadPool};
use crate::Result;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Threads that take jobs from a shared queue.
///
/// Invariant: every thread lives until the pool is dropped. A panicking job is caught on the
/// thread that ran it, so the pool never shrinks. Dropping the pool closes the queue; the
/// threads finish every job already queued and exit, and the drop joins them.
pub struct SharedQueueThreadPool {
    // `Some` until drop, which takes it to close the queue before joining.
    sender: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl SharedQueueThreadPool {
    /// Creates a pool whose threads are named `{name}-{index}` (names show in `top -H`,
    /// panics and debuggers).
    pub fn named(threads: u32, name: &str) -> Result<Self> {
        check_threads(threads)?;
        let (sender, receiver) = crossbeam_channel::unbounded::<Job>();
        let mut pool = SharedQueueThreadPool {
            sender: Some(sender),
            threads: Vec::with_capacity(threads as usize),
        };
        for index in 0..threads {
            let receiver = receiver.clone();
            // On failure `pool` is dropped, which closes the queue and joins the threads
            // already started.
            let handle = thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || run_jobs(receiver))?;
            pool.threads.push(handle);
        }
        Ok(pool)
    }

    /// The number of threads in the pool.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }
}

impl ThreadPool for SharedQueueThreadPool {
    fn new(threads: u32) -> Result<Self> {
        SharedQueueThreadPool::named(threads, "kvs-pool")
    }

    fn spawn<F>(&self, job: F)
    where
        F: FnOnce() + Send + 'static,
    {
        if let Some(sender) = &self.sender {
            // Sending fails only when no thread is left to receive; the job is then dropped,
            // which is what the module promises.
            if sender.send(Box::new(job)).is_err() {
                tracing::error!("thread pool has no threads left; a job was dropped");
            }
        }
    }
}

impl Drop for SharedQueueThreadPool {
    fn drop(&mut self) {
        drop(self.sender.take());
        let current = thread::current().id();
        for handle in self.threads.drain(..) {
            // A job may own the last handle to its own pool; joining its own thread would
            // never return, so that one thread is left to exit on its own.
            if handle.thread().id() == current {
                continue;
            }
            // The threads catch job panics, so a join error cannot happen; there is nothing
            // useful to do with one in a destructor anyway.
            let _ = handle.join();
        }
    }
}

/// A pool thread's loop: runs jobs until the queue is closed and empty.
fn run_jobs(receiver: Receiver<Job>) {
    for job in receiver {
        // Unwind safety: the job owns everything it touches and is gone after the call; the
        // loop's own state (the receiver) is not touched by the job.
        if panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
            tracing::error!(
                thread = thread::current().name().unwrap_or("?"),
                "a thread-pool job panicked; the thread carries on"
            );
        }
    }
}
