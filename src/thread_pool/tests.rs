//! The same scenarios against every pool, plus drop behaviour of the shared-queue pool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{NaiveThreadPool, RayonThreadPool, SharedQueueThreadPool, ThreadPool};

/// How long a test waits for jobs before it declares them lost.
const DEADLINE: Duration = Duration::from_secs(10);

/// A barrier that gives up at a deadline, so a pool that cannot run enough jobs at once
/// fails the test instead of hanging it.
struct DeadlineBarrier {
    arrived: Mutex<usize>,
    all_here: Condvar,
    parties: usize,
}

impl DeadlineBarrier {
    fn new(parties: usize) -> Arc<Self> {
        Arc::new(DeadlineBarrier {
            arrived: Mutex::new(0),
            all_here: Condvar::new(),
            parties,
        })
    }

    /// Arrives and waits for the others; `false` if the deadline passed first.
    fn wait(&self, deadline: Instant) -> bool {
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.all_here.notify_all();
        while *arrived < self.parties {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            arrived = self.all_here.wait_timeout(arrived, left).unwrap().0;
        }
        true
    }
}

fn runs_every_job<P: ThreadPool>() {
    let pool = P::new(4).unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    for i in 0..100u32 {
        let tx = tx.clone();
        pool.spawn(move || tx.send(i).unwrap());
    }
    let mut seen: Vec<u32> = (0..100)
        .map(|_| rx.recv_timeout(DEADLINE).expect("a job did not run"))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..100).collect::<Vec<_>>());
}

fn panicking_jobs_do_not_shrink_pool<P: ThreadPool>() {
    const THREADS: usize = 4;
    let pool = P::new(THREADS as u32).unwrap();
    for _ in 0..THREADS {
        pool.spawn(|| panic!("a job panics on purpose"));
    }
    // THREADS jobs that can only finish together: they need every thread at once.
    let barrier = DeadlineBarrier::new(THREADS);
    let deadline = Instant::now() + DEADLINE;
    let (tx, rx) = crossbeam_channel::unbounded();
    for _ in 0..THREADS {
        let barrier = barrier.clone();
        let tx = tx.clone();
        pool.spawn(move || tx.send(barrier.wait(deadline)).unwrap());
    }
    for _ in 0..THREADS {
        let met = rx.recv_timeout(DEADLINE).expect("a job did not run");
        assert!(
            met,
            "jobs could not run concurrently: the pool lost threads"
        );
    }
}

fn zero_threads_is_rejected<P: ThreadPool>() {
    assert!(P::new(0).is_err());
}

macro_rules! pool_tests {
    ($module:ident, $pool:ty) => {
        mod $module {
            use super::*;

            /// Guards against lost jobs.
            #[test]
            fn pool_runs_every_job() {
                runs_every_job::<$pool>();
            }

            /// Guards against a panicking job killing its thread for good.
            #[test]
            fn pool_keeps_its_size_after_panics() {
                panicking_jobs_do_not_shrink_pool::<$pool>();
            }

            /// Guards against a pool that accepts jobs it can never run.
            #[test]
            fn pool_of_zero_threads_is_rejected() {
                zero_threads_is_rejected::<$pool>();
            }
        }
    };
}

pool_tests!(shared_queue, SharedQueueThreadPool);
pool_tests!(naive, NaiveThreadPool);
pool_tests!(rayon, RayonThreadPool);

/// Guards against a drop that returns before queued and running jobs are done.
#[test]
fn shared_queue_drop_runs_queued_jobs_and_joins() {
    const JOBS: usize = 16;
    let pool = SharedQueueThreadPool::new(2).unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let (gate_tx, gate_rx) = crossbeam_channel::unbounded::<()>();
    for _ in 0..JOBS {
        let done = done.clone();
        let gate_rx = gate_rx.clone();
        pool.spawn(move || {
            // Blocks until the gate closes, so the pool is dropped with jobs still pending.
            let _ = gate_rx.recv();
            done.fetch_add(1, Ordering::SeqCst);
        });
    }
    let dropper = std::thread::spawn(move || drop(pool));
    assert_eq!(done.load(Ordering::SeqCst), 0);
    drop(gate_tx);
    dropper.join().unwrap();
    assert_eq!(done.load(Ordering::SeqCst), JOBS);
}

/// Guards against a deadlock when a job drops the last handle to its own pool.
#[test]
fn shared_queue_job_may_drop_the_last_pool_handle() {
    let pool = Arc::new(SharedQueueThreadPool::new(2).unwrap());
    let last = pool.clone();
    let (gate_tx, gate_rx) = crossbeam_channel::bounded::<()>(0);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
    pool.spawn(move || {
        let _ = gate_rx.recv();
        drop(last);
        done_tx.send(()).unwrap();
    });
    drop(pool);
    drop(gate_tx);
    done_rx
        .recv_timeout(DEADLINE)
        .expect("dropping the pool from its own thread hung");
}

/// Guards against the thread count drifting from what was asked.
#[test]
fn shared_queue_has_the_threads_asked_for() {
    let pool = SharedQueueThreadPool::named(3, "kvs-test").unwrap();
    assert_eq!(pool.threads(), 3);
}
