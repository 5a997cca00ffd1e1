//! Open time and resident memory per key of a kvs store, printed as JSON.
//!
//! For each key count, in a fresh process: load that many live keys (16-byte keys, `--value-bytes` values) into a
//! fresh store and read the resident-memory growth from the empty open; close; then open the
//! store in fresh child processes, alternately with its hint files and without them (moved
//! aside), timing `KvStore::open_with` and its resident-memory growth. Medians are reported.
//!
//! `cargo bench --bench open_memory -- --keys 600000,1000000,1500000`
//!
//! Under `cargo test` (no `--bench` argument) it runs once on a few thousand keys as a smoke
//! test, and ignores any arguments.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::future::join_all;
use kvs::engine::{FsyncPolicy, StoreOptions};
use kvs::io_backend::IoChoice;
use kvs::{KvStore, KvsEngine};

mod support;

#[derive(Parser, Debug)]
#[command(about = "kvs open time and resident memory per key")]
struct Args {
    /// Set by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
    /// Live keys to load; a comma-separated list measures one store per count.
    #[arg(long, value_delimiter = ',', default_value = "1000000")]
    keys: Vec<u64>,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// I/O backend: uring or blocking.
    #[arg(long, default_value = "uring")]
    io: IoChoice,
    /// Partitions of the store.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Bytes of the value cache (default: `StoreOptions`'s). Loading fills the cache with the
    /// newest values up to this bound, whatever the key count; 0 measures what the keys
    /// themselves cost.
    #[arg(long)]
    cache_bytes: Option<usize>,
    /// Opens of each kind (with hints, without) per key count, alternated.
    #[arg(long, default_value_t = 3)]
    opens: usize,
    /// Runs in a child process: open the store in this directory, report, exit.
    #[arg(long, hide = true)]
    child_open: Option<PathBuf>,
    /// Runs in a child process: measure the first `--keys` count and print its JSON object.
    #[arg(long, hide = true)]
    child_measure: bool,
    /// Only load the first `--keys` count into this (new) directory and exit, leaving a
    /// store to profile opens on: `valgrind --tool=callgrind BENCH --bench --child-open DIR`.
    #[arg(long)]
    load_only: Option<PathBuf>,
    /// A benchmark filter from `cargo bench -- FILTER`; this target runs only if it matches.
    filter: Option<String>,
}

/// Concurrent sets while loading: large batches keep the writer loop's batches full.
const LOAD_IN_FLIGHT: usize = 1024;
const SEED: u64 = 0x6b76_735f_6f70_656e;

fn main() {
    if !support::bench_mode() {
        smoke_test();
        return;
    }
    let args = Args::parse();
    if let Some(dir) = &args.child_open {
        child_open(dir, &args);
        return;
    }
    if let Some(dir) = &args.load_only {
        let store = KvStore::open_with(dir, options(&args)).expect("open");
        runtime().block_on(load(&store, args.keys[0], args.value_bytes));
        return;
    }
    if let Some(f) = &args.filter {
        if !"open_memory".contains(f.as_str()) {
            return;
        }
    }
    if args.child_measure {
        println!("{}", measure(args.keys[0], &args));
        return;
    }
    let env = support::environment();
    let mut runs = Vec::new();
    for &n in &args.keys {
        eprintln!("open_memory: {n} keys");
        runs.push(measure_in_child(n, &args));
    }
    println!(
        "{{\"bench\":\"open_memory\",\"cpu\":\"{}\",\"cores\":{},\"kernel\":\"{}\",\"commit\":\"{}\",\
         \"io\":\"{:?}\",\"partitions\":{},\"cache_bytes\":{},\"key_bytes\":{},\"value_bytes\":{},\"runs\":[{}]}}",
        env.cpu,
        env.cores,
        env.kernel,
        env.commit,
        args.io,
        args.partitions,
        options(&args).cache_bytes,
        support::KEY_BYTES,
        args.value_bytes,
        runs.join(",")
    );
}

fn options(args: &Args) -> StoreOptions {
    let default = StoreOptions::default();
    StoreOptions {
        io: Some(args.io),
        partitions: args.partitions,
        cache_bytes: args.cache_bytes.unwrap_or(default.cache_bytes),
        // Loading is not what is measured; the store is closed (and synced) before the opens.
        fsync: FsyncPolicy::Never,
        ..default
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn load(store: &KvStore, n: u64, value_bytes: usize) {
    let value = support::value(value_bytes, SEED);
    let mut i = 0;
    while i < n {
        let end = (i + LOAD_IN_FLIGHT as u64).min(n);
        let sets = (i..end).map(|k| store.set(support::key(k), value.clone()));
        for r in join_all(sets).await {
            r.expect("set while loading");
        }
        i = end;
    }
}

/// What the store's statistics say about its size.
struct Counts {
    keys: u64,
    segments: u32,
    index_bytes: u64,
}

async fn counts(store: &KvStore) -> Counts {
    let stats = store.stats().await.expect("stats");
    Counts {
        keys: stats.iter().map(|s| s.keys).sum(),
        segments: stats.iter().map(|s| s.segments).sum(),
        index_bytes: stats.iter().map(|s| s.index_bytes).sum(),
    }
}

/// [`measure`] in a fresh process, so that memory one key count freed does not hide the
/// growth of the next.
fn measure_in_child(n: u64, args: &Args) -> String {
    let out = std::process::Command::new(std::env::current_exe().expect("current exe"))
        .args(["--bench", "--child-measure"])
        .args(["--keys", &n.to_string()])
        .args(["--value-bytes", &args.value_bytes.to_string()])
        .args(["--io", &format!("{:?}", args.io).to_lowercase()])
        .args(["--partitions", &args.partitions.to_string()])
        .args(["--opens", &args.opens.to_string()])
        .args(cache_arg(args))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run the child");
    assert!(out.status.success(), "measuring {n} keys failed");
    String::from_utf8(out.stdout)
        .expect("JSON is UTF-8")
        .trim()
        .to_owned()
}

/// Loads `n` keys, then times the opens; returns one JSON object.
fn measure(n: u64, args: &Args) -> String {
    let dir = tempfile::tempdir().expect("temporary directory");
    let rt = runtime();
    let store = KvStore::open_with(dir.path(), options(args)).expect("open");
    let rss_empty = support::rss_bytes();
    let started = Instant::now();
    rt.block_on(load(&store, n, args.value_bytes));
    let load_s = started.elapsed().as_secs_f64();
    let rss_loaded = support::rss_bytes();
    let loaded = rt.block_on(counts(&store));
    assert_eq!(loaded.keys, n, "every loaded key is live");
    drop(store);

    let hints = hint_files(dir.path());
    let aside = tempfile::tempdir().expect("temporary directory");
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..args.opens {
        with.push(open_in_child(dir.path(), args, n));
        move_files(&hints, dir.path(), aside.path());
        without.push(open_in_child(dir.path(), args, n));
        move_files(&hints, aside.path(), dir.path());
    }
    format!(
        "{{\"keys\":{n},\"segments\":{},\"hint_files\":{},\"load_s\":{load_s:.2},\
         \"index_bytes_per_key\":{:.1},\"live_rss_bytes_per_key\":{:.1},\
         \"open_with_hints\":{},\"open_without_hints\":{}}}",
        loaded.segments,
        hints.len(),
        loaded.index_bytes as f64 / n as f64,
        (rss_loaded as f64 - rss_empty as f64) / n as f64,
        Opened::summary(&with, n),
        Opened::summary(&without, n),
    )
}

/// What one open in a child process measured.
struct Opened {
    wall_ms: f64,
    /// CPU time of every thread of the child during the open: steadier than wall time on a
    /// machine that other work shares.
    cpu_ms: f64,
    rss_growth: f64,
}

impl Opened {
    /// Medians as JSON, with every wall time listed.
    fn summary(runs: &[Opened], keys: u64) -> String {
        let med =
            |f: fn(&Opened) -> f64| support::median(&mut runs.iter().map(f).collect::<Vec<_>>());
        let all: Vec<String> = runs.iter().map(|r| format!("{:.1}", r.wall_ms)).collect();
        format!(
            "{{\"wall_ms\":{:.1},\"cpu_ms\":{:.1},\"rss_bytes_per_key\":{:.1},\"all_wall_ms\":[{}]}}",
            med(|r| r.wall_ms),
            med(|r| r.cpu_ms),
            med(|r| r.rss_growth) / keys as f64,
            all.join(",")
        )
    }
}

/// The hint files of every partition, relative to the store directory.
fn hint_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for part in std::fs::read_dir(dir).expect("read store directory") {
        let part = part.expect("directory entry").path();
        if !part.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&part).expect("read partition directory") {
            let f = f.expect("directory entry").path();
            if f.extension().is_some_and(|e| e == "hint") {
                out.push(f.strip_prefix(dir).expect("inside the store").to_owned());
            }
        }
    }
    out
}

fn move_files(files: &[PathBuf], from: &Path, to: &Path) {
    for f in files {
        let target = to.join(f);
        std::fs::create_dir_all(target.parent().expect("a parent")).expect("create directory");
        std::fs::rename(from.join(f), target).expect("move a hint file");
    }
}

/// `--cache-bytes` for a child process, when it was given.
fn cache_arg(args: &Args) -> Vec<String> {
    args.cache_bytes
        .map(|b| vec!["--cache-bytes".to_owned(), b.to_string()])
        .unwrap_or_default()
}

/// Opens the store in a fresh process.
fn open_in_child(dir: &Path, args: &Args, n: u64) -> Opened {
    let out = std::process::Command::new(std::env::current_exe().expect("current exe"))
        .arg("--bench")
        .arg("--child-open")
        .arg(dir)
        .args(["--io", &format!("{:?}", args.io).to_lowercase()])
        .args(cache_arg(args))
        .output()
        .expect("run the child");
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> f64 {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("child output lacks {name}: {text}"))
    };
    assert_eq!(field("keys=") as u64, n, "the reopened store has every key");
    Opened {
        wall_ms: field("open_ms="),
        cpu_ms: field("cpu_ms="),
        rss_growth: field("rss_growth="),
    }
}

fn child_open(dir: &Path, args: &Args) {
    let rt = runtime();
    let rss_before = support::rss_bytes();
    let cpu_before = support::cpu_ns();
    let started = Instant::now();
    let store = KvStore::open_with(dir, options(args)).expect("reopen");
    let open = started.elapsed();
    let cpu = support::cpu_ns() - cpu_before;
    let rss_after = support::rss_bytes();
    let keys = rt.block_on(counts(&store)).keys;
    println!(
        "open_ms={:.3} cpu_ms={:.3} rss_growth={} keys={keys}",
        open.as_secs_f64() * 1e3,
        cpu as f64 / 1e6,
        rss_after.saturating_sub(rss_before)
    );
}

/// A few thousand keys through the same steps, in-process, so `cargo test` stays fast.
fn smoke_test() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let rt = runtime();
    let opts = StoreOptions {
        segment_bytes: 64 * 1024,
        io: Some(IoChoice::Blocking),
        partitions: 1,
        fsync: FsyncPolicy::Never,
        ..StoreOptions::default()
    };
    let store = KvStore::open_with(dir.path(), opts.clone()).expect("open");
    rt.block_on(load(&store, 3_000, 100));
    drop(store);
    let hints = hint_files(dir.path());
    assert!(!hints.is_empty(), "sealed segments have hints");
    for f in &hints {
        std::fs::remove_file(dir.path().join(f)).expect("remove a hint");
    }
    let started = Instant::now();
    let store = KvStore::open_with(dir.path(), opts).expect("reopen without hints");
    assert!(started.elapsed() < Duration::from_secs(30));
    let reopened = rt.block_on(counts(&store));
    assert_eq!(reopened.keys, 3_000);
    assert!(reopened.index_bytes > 0);
    println!("open_memory: smoke test passed (run with `cargo bench --bench open_memory`)");
}
