//! rayon's work-stealing pool behind [`ThreadPool`].

use super::{check_threads, ThreadPool};
use crate::Result;

/// A rayon pool. A panicking job is logged by a panic handler (rayon's default would abort
/// the process). Dropping the pool lets its threads finish queued jobs and exit in the
/// background; it does not join them.
pub struct RayonThreadPool {
    pool: rayon::ThreadPool,
}

impl ThreadPool for RayonThreadPool {
    fn new(threads: u32) -> Result<Self> {
        check_threads(threads)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads as usize)
            .thread_name(|index| format!("kvs-rayon-{index}"))
            .panic_handler(|_| tracing::error!("a rayon job panicked; the thread carries on"))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(RayonThreadPool { pool })
    }

    fn spawn<F>(&self, job: F)
    where
        F: FnOnce() + Send + 'static,
    {
        self.pool.spawn(job);
    }
}
