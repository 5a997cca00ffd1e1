//! Thread pools: the talent-plan [`ThreadPool`] trait and three implementations.
//!
//! - [`SharedQueueThreadPool`]: a fixed set of threads fed by one crossbeam channel. A job
//!   that panics does not take its thread with it, and dropping the pool runs every queued
//!   job, then joins the threads. The blocking file-I/O backend runs on it.
//! - [`NaiveThreadPool`]: a new thread per job; a baseline for benchmarks.
//! - [`RayonThreadPool`]: rayon's work-stealing pool.
//!
//! A pool never runs a job twice and never loses one silently: a job the pool cannot run
//! (the threads are gone) is dropped, so whatever it owns (say, the sending half of a
//! channel) is dropped too and the waiting side sees a closed channel instead of hanging.

use crate::Result;

mod naive;
mod rayon_pool;
mod shared_queue;

pub use naive::NaiveThreadPool;
pub use rayon_pool::RayonThreadPool;
pub use shared_queue::SharedQueueThreadPool;

/// A pool of threads that runs jobs.
pub trait ThreadPool {
    /// Creates a pool of `threads` threads (at least one).
    fn new(threads: u32) -> Result<Self>
    where
        Self: Sized;

    /// Queues `job` to run on one of the pool's threads. A panic in `job` is contained: it
    /// is logged and the pool keeps its size.
    fn spawn<F>(&self, job: F)
    where
        F: FnOnce() + Send + 'static;
}

/// Rejects a pool of zero threads, which would accept jobs and never run them.
fn check_threads(threads: u32) -> Result<()> {
    if threads == 0 {
        return Err(crate::KvsError::Config(
            "a thread pool needs at least one thread".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
