//! A new thread for every job.

use std::thread;

use super::{check_threads, ThreadPool};
use crate::Result;

/// Spawns a detached thread per job; `threads` is only validated. A panicking job ends its
/// own thread and nothing else. Dropping the pool does not wait for running jobs.
#[derive(Debug)]
pub struct NaiveThreadPool {
    _private: (),
}

impl ThreadPool for NaiveThreadPool {
    fn new(threads: u32) -> Result<Self> {
        check_threads(threads)?;
        Ok(NaiveThreadPool { _private: () })
    }

    fn spawn<F>(&self, job: F)
    where
        F: FnOnce() + Send + 'static,
    {
        // `thread::spawn` would panic in the caller when the OS refuses a thread; dropping
        // the job instead keeps the module's promise (its channels close, nobody hangs).
        if let Err(e) = thread::Builder::new().name("kvs-naive".into()).spawn(job) {
            tracing::error!("cannot start a thread for a job, dropping it: {e}");
        }
    }
}
