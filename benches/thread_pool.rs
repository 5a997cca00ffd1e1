//! The three `ThreadPool`s side by side: running a batch of small jobs and waiting for all of
//! them. `cargo bench --bench thread_pool`.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crossbeam_channel::bounded;
use kvs::{NaiveThreadPool, RayonThreadPool, SharedQueueThreadPool, ThreadPool};

const JOBS: usize = 1000;

/// Spawns `JOBS` jobs that each do a little arithmetic, and waits for the last one.
fn run_batch<P: ThreadPool>(pool: &P) {
    let done = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = bounded(1);
    for i in 0..JOBS {
        let (done, tx) = (done.clone(), tx.clone());
        pool.spawn(move || {
            black_box((0..64u64).fold(i as u64, |a, x| a.wrapping_mul(31).wrapping_add(x)));
            if done.fetch_add(1, Ordering::AcqRel) + 1 == JOBS {
                let _ = tx.send(());
            }
        });
    }
    rx.recv().expect("the last job reports");
}

fn pools(c: &mut Criterion) {
    let threads = 4;
    let mut group = c.benchmark_group("1000 small jobs");
    group.throughput(Throughput::Elements(JOBS as u64));
    let shared = SharedQueueThreadPool::new(threads).expect("pool");
    group.bench_function(BenchmarkId::new("shared-queue", threads), |b| {
        b.iter(|| run_batch(&shared))
    });
    let rayon = RayonThreadPool::new(threads).expect("pool");
    group.bench_function(BenchmarkId::new("rayon", threads), |b| {
        b.iter(|| run_batch(&rayon))
    });
    let naive = NaiveThreadPool::new(threads).expect("pool");
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("naive (a thread per job)", threads), |b| {
        b.iter(|| run_batch(&naive))
    });
    group.finish();
}

criterion_group!(benches, pools);
criterion_main!(benches);
