//! The engine suite: kvs on the io_uring backend, kvs on the blocking backend, and sled
//! (flushed before each write resolves), side by side in one run.
//!
//! Workloads: set, get of a stored key, get of an absent key, and a 50/50 mix of gets and
//! sets, at 100-byte and 4 KiB values with 16-byte keys drawn uniformly (fixed seeds) from
//! a preloaded set of keys. Each workload runs twice:
//! - `1op`: one operation at a time, awaited from the bench thread: the latency of one call,
//!   including, for kvs, the hop to the store's owner thread and back.
//! - `64ops`: 64 operations spawned as tasks on a two-worker tokio runtime and joined: the
//!   throughput a server with many requests in flight sees. Criterion reports elements/s.
//!
//! Within each group the engines run back to back, so they are compared under the same
//! machine load. kvs uses its defaults (one partition, fdatasync before each write is
//! acknowledged). sled's per-write flush is `sync_file_range`, which neither flushes the
//! device's cache nor the file's size, so set and mix also run `kvs-uring-nosync` (kvs with
//! `FsyncPolicy::Never`: acknowledged once the write reached the kernel) to show what the
//! fdatasync costs.
//!
//! `cargo bench --bench engine` (about 6 minutes); `cargo bench --bench engine -- get_hit`
//! runs a subset. Under `cargo test` every benchmark runs once on a small key set.

use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use futures::future::join_all;
use kvs::engine::{FsyncPolicy, StoreOptions};
use kvs::io_backend::IoChoice;
use kvs::{KvStore, KvsEngine, SledKvsEngine};
use tokio::runtime::Runtime;

mod support;

const VALUE_SIZES: [usize; 2] = [100, 4096];
/// Keys stored before the measurements (and overwritten by the set workloads).
const KEYS_BENCH: u64 = 20_000;
const KEYS_SMOKE: u64 = 200;
const IN_FLIGHT: [usize; 2] = [1, 64];
/// Concurrent sets while preloading.
const PRELOAD_IN_FLIGHT: usize = 256;
const SEED: u64 = 0x6b76_735f_6265_6e63;

#[derive(Clone, Copy, Debug)]
enum Workload {
    Set,
    GetHit,
    GetMiss,
    Mix,
}

impl Workload {
    const ALL: [Workload; 4] = [
        Workload::Set,
        Workload::GetHit,
        Workload::GetMiss,
        Workload::Mix,
    ];

    fn name(self) -> &'static str {
        match self {
            Workload::Set => "set",
            Workload::GetHit => "get_hit",
            Workload::GetMiss => "get_miss",
            Workload::Mix => "mix",
        }
    }
}

enum Op {
    Set(Bytes, Bytes),
    /// A get, and whether the key must be found.
    Get(Bytes, bool),
}

/// Pregenerated keys, so that drawing one in the timed loop is a reference-count increment.
struct Keys {
    stored: Vec<Bytes>,
    missing: Vec<Bytes>,
}

impl Keys {
    fn new(n: u64) -> Keys {
        Keys {
            stored: (0..n).map(support::key).collect(),
            missing: (0..n).map(support::missing_key).collect(),
        }
    }

    fn draw(&self, w: Workload, rng: &mut support::Rng, value: &Bytes) -> Op {
        let n = self.stored.len() as u64;
        let i = rng.below(n) as usize;
        match w {
            Workload::Set => Op::Set(self.stored[i].clone(), value.clone()),
            Workload::GetHit => Op::Get(self.stored[i].clone(), true),
            Workload::GetMiss => Op::Get(self.missing[i].clone(), false),
            Workload::Mix if rng.next() & 1 == 0 => Op::Get(self.stored[i].clone(), true),
            Workload::Mix => Op::Set(self.stored[i].clone(), value.clone()),
        }
    }
}

async fn run_op<E: KvsEngine>(engine: &E, op: Op) {
    match op {
        Op::Set(k, v) => engine.set(k, v).await.expect("set"),
        Op::Get(k, hit) => {
            let got = engine.get(k).await.expect("get");
            assert_eq!(
                got.is_some(),
                hit,
                "a get found what it should not, or missed"
            );
        }
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The engines under test, each in its own temporary directory, preloaded with `keys`.
struct Engines {
    kvs: Vec<(&'static str, KvStore)>,
    sled: SledKvsEngine,
    _dirs: Vec<tempfile::TempDir>,
}

impl Engines {
    fn open(rt: &Runtime, keys: &Keys, value: &Bytes) -> Engines {
        let mut dirs = Vec::new();
        let mut kvs = Vec::new();
        let mut backends = Vec::new();
        match kvs::io_backend::uring::probe() {
            Ok(()) => {
                backends.push(("kvs-uring", IoChoice::Uring, FsyncPolicy::Always));
                backends.push(("kvs-uring-nosync", IoChoice::Uring, FsyncPolicy::Never));
            }
            Err(e) => eprintln!("skipped: kvs-uring: io_uring is unavailable here: {e}"),
        }
        backends.push(("kvs-blocking", IoChoice::Blocking, FsyncPolicy::Always));
        for (name, io, fsync) in backends {
            let dir = tempfile::tempdir().expect("temporary directory");
            let opts = StoreOptions {
                io: Some(io),
                fsync,
                ..StoreOptions::default()
            };
            let store = KvStore::open_with(dir.path(), opts).expect("open kvs");
            rt.block_on(async {
                for chunk in keys.stored.chunks(PRELOAD_IN_FLIGHT) {
                    let sets = chunk.iter().map(|k| store.set(k.clone(), value.clone()));
                    for r in join_all(sets).await {
                        r.expect("preload kvs");
                    }
                }
            });
            dirs.push(dir);
            kvs.push((name, store));
        }
        // sled is loaded directly and flushed once; its engine wrapper flushes every write.
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = sled::open(dir.path()).expect("open sled");
        for k in &keys.stored {
            db.insert(k.as_ref(), value.as_ref()).expect("preload sled");
        }
        db.flush().expect("flush sled");
        dirs.push(dir);
        Engines {
            kvs,
            sled: SledKvsEngine::new(db),
            _dirs: dirs,
        }
    }
}

/// Times `in_flight` operations of workload `w` per iteration.
fn bench_engine<E: KvsEngine>(
    b: &mut criterion::Bencher<'_>,
    rt: &Runtime,
    engine: &E,
    keys: &Keys,
    w: Workload,
    value: &Bytes,
    in_flight: usize,
) {
    let mut rng = support::Rng::new(SEED ^ value.len() as u64 ^ ((in_flight as u64) << 32));
    b.to_async(rt).iter(|| {
        let ops: Vec<Op> = (0..in_flight)
            .map(|_| keys.draw(w, &mut rng, value))
            .collect();
        let engine = engine.clone();
        async move {
            if in_flight == 1 {
                for op in ops {
                    run_op(&engine, op).await;
                }
                return;
            }
            let tasks = ops.into_iter().map(|op| {
                let engine = engine.clone();
                tokio::spawn(async move { run_op(&engine, op).await })
            });
            for t in join_all(tasks.collect::<Vec<_>>()).await {
                t.expect("operation task");
            }
        }
    });
}

fn engine_benches(c: &mut Criterion, key_count: u64) {
    let rt = runtime();
    let keys = Keys::new(key_count);
    for value_len in VALUE_SIZES {
        let value = support::value(value_len, SEED);
        for w in Workload::ALL {
            // Fresh stores for each workload, so that no compaction or segment
            // preparation left running by an earlier workload's writes competes with it.
            let engines = Engines::open(&rt, &keys, &value);
            for in_flight in IN_FLIGHT {
                let mut g = c.benchmark_group(format!("{}/{value_len}B", w.name()));
                g.throughput(Throughput::Elements(in_flight as u64));
                let mode = if in_flight == 1 {
                    "1op".to_owned()
                } else {
                    format!("{in_flight}ops")
                };
                for (name, store) in &engines.kvs {
                    // Without fsync only writes differ; its gets would repeat kvs-uring's.
                    if name.ends_with("nosync") && !matches!(w, Workload::Set | Workload::Mix) {
                        continue;
                    }
                    g.bench_function(BenchmarkId::new(*name, &mode), |b| {
                        bench_engine(b, &rt, store, &keys, w, &value, in_flight)
                    });
                }
                g.bench_function(BenchmarkId::new("sled", &mode), |b| {
                    bench_engine(b, &rt, &engines.sled, &keys, w, &value, in_flight)
                });
                g.finish();
            }
        }
    }
}

fn main() {
    let bench = support::bench_mode();
    if bench {
        let env = support::environment();
        eprintln!(
            "engine bench: cpu \"{}\" ({} cores), kernel {}, commit {}, {} stored keys, \
             {}-byte keys",
            env.cpu,
            env.cores,
            env.kernel,
            env.commit,
            KEYS_BENCH,
            support::KEY_BYTES
        );
    }
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .without_plots()
        .configure_from_args();
    engine_benches(&mut c, if bench { KEYS_BENCH } else { KEYS_SMOKE });
    c.final_summary();
}
