//! Fuzzing on the stable toolchain: a seeded mutation fuzzer over the committed corpus in
//! `fuzz/corpus/<target>/`.
//!
//! Each target replays its corpus, then runs mutated inputs (bit flips, interesting bytes and
//! lengths, insertions, deletions, truncations, splices of two corpus entries) from a fixed
//! seed. A panic anywhere (including on the store's owner thread) fails the test and writes the
//! input to `target/fuzz-crashes/<target>-<n>`.
//!
//! The CI run is bounded (a few seconds). `KVS_FUZZ_ITERS=<n>` runs n mutated inputs per
//! decoder target (and n/100 recovery opens); `KVS_FUZZ_SEED=<n>` changes the seed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

use bytes::Bytes;
use kvs::engine::StoreOptions;
use kvs::io_backend::IoChoice;
use kvs::limits::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
use kvs::protocol::resp::{parse_command, parse_reply, plain_get, plain_set};
use kvs::protocol::{
    decode_client_hello, decode_request, decode_response, decode_server_hello, encode_request,
    encode_response,
};
use kvs::{KvStore, KvsEngine};

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts panics on every thread (the store's owner thread's panics do not reach the test).
fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}

fn iterations(ci: u64) -> u64 {
    std::env::var("KVS_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ci)
}

fn seed() -> u64 {
    std::env::var("KVS_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6b76_735f_6675_7a7a)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[&[u8]] = &[
    &[0xff, 0xff, 0xff, 0xff],
    &[0x00, 0x00, 0x00, 0x80],
    &[0x00, 0x04, 0x80, 0x00],
    &[0xff, 0xff, 0xff, 0xff, 0x0f],
    &[0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
    b"$-1\r\n",
    b"*-1\r\n",
    b"$4294967296\r\n",
    b"*99999999999\r\n",
    b"\r\n",
    b"\"",
    b"\\x",
    &[0xfb, b'K', b'V', b'S'],
];

/// One mutation of `input`, sometimes spliced with `other`.
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(8) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = [0, 0x7f, 0x80, 0xff, b'\r', b'\n', b'$', b'*'][rng.below(8)];
            }
            2 => {
                let i = rng.below(v.len() + 1);
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                v.splice(i..i, piece.iter().copied());
            }
            3 if !v.is_empty() => {
                let i = rng.below(v.len());
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                let end = (i + piece.len()).min(v.len());
                v.splice(i..end, piece.iter().copied());
            }
            4 if !v.is_empty() => {
                let i = rng.below(v.len());
                let n = rng.below(v.len() - i) + 1;
                v.drain(i..i + n.min(v.len() - i));
            }
            5 => v.truncate(rng.below(v.len() + 1)),
            6 if !other.is_empty() => {
                let at = rng.below(v.len() + 1);
                let from = rng.below(other.len());
                v.truncate(at);
                v.extend_from_slice(&other[from..]);
            }
            _ => {
                let i = rng.below(v.len() + 1);
                let n = rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(i..i, bytes);
            }
        }
    }
    v
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let inputs: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!inputs.is_empty(), "the corpus {} is empty", dir.display());
    inputs
}

fn save_crash(target: &str, input: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-crashes");
    std::fs::create_dir_all(&dir).unwrap();
    let n = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    let path = dir.join(format!("{target}-{n}"));
    std::fs::write(&path, input).unwrap();
    path
}

/// Replays the corpus and `iters` mutations of it through `check`, which must not panic.
fn fuzz(target: &str, iters: u64, check: impl Fn(&[u8]) + std::panic::RefUnwindSafe) -> u64 {
    count_panics();
    let inputs = corpus(target);
    let mut rng = Rng(seed() ^ target.len() as u64 ^ (target.as_bytes()[0] as u64) << 32);
    let run = |input: &[u8]| {
        if std::panic::catch_unwind(|| check(input)).is_err() {
            let path = save_crash(target, input);
            panic!(
                "{target}: an input made it panic; saved to {}",
                path.display()
            );
        }
    };
    for input in &inputs {
        run(input);
    }
    for _ in 0..iters {
        let a = &inputs[rng.below(inputs.len())];
        let b = &inputs[rng.below(inputs.len())];
        run(&mutate(&mut rng, a, b));
    }
    println!(
        "fuzz: {target}: {} corpus inputs and {iters} mutations, seed {:#x}, no panic",
        inputs.len(),
        seed()
    );
    inputs.len() as u64 + iters
}

#[test]
fn fuzz_native_request_decoder() {
    // Guards against the server's frame decoder panicking, over-reading, or accepting a request
    // it cannot encode again (a decoded value must be valid).
    fuzz("native_request", iterations(40_000), |input| {
        if let Ok(Some((request, used))) = decode_request(input) {
            assert!(used <= input.len());
            request
                .check_limits()
                .expect("a decoded request is within limits");
            let mut again = Vec::new();
            encode_request(&request, &mut again).expect("a decoded request encodes");
            assert_eq!(decode_request(&again).unwrap().unwrap().0, request);
        }
        let _ = decode_client_hello(input);
    });
}

#[test]
fn fuzz_native_response_decoder() {
    // Guards against the client's frame and hello decoders panicking on a hostile server.
    fuzz("native_response", iterations(40_000), |input| {
        if let Ok(Some((response, used))) = decode_response(input) {
            assert!(used <= input.len());
            let mut again = Vec::new();
            encode_response(&response, &mut again).expect("a decoded response encodes");
            assert_eq!(decode_response(&again).unwrap().unwrap().0, response);
        }
        let _ = decode_server_hello(input);
    });
}

#[test]
fn fuzz_resp_command_parser() {
    // Guards against the RESP command parser panicking or claiming more bytes than it had, and
    // against the server's fast paths for GET and SET reading a command the parser reads
    // otherwise (or refuses).
    fuzz("resp_command", iterations(40_000), |input| {
        let parsed = parse_command(input);
        if let Ok(Some((args, used))) = &parsed {
            assert!(*used <= input.len());
            assert!(args.iter().map(Bytes::len).sum::<usize>() <= *used);
        }
        if let Some((key, used)) = plain_get(input, KEY_BYTES_MAX) {
            let (args, general_used) = parsed.clone().unwrap().unwrap();
            assert_eq!((used, args.len(), &args[1][..]), (general_used, 2, key));
            assert!(args[0].eq_ignore_ascii_case(b"GET"));
        }
        if let Some((key, value, used)) = plain_set(input, KEY_BYTES_MAX, VALUE_BYTES_MAX) {
            let (args, general_used) = parsed.unwrap().unwrap();
            assert_eq!((used, args.len()), (general_used, 3));
            assert_eq!((&args[1][..], &args[2][..]), (key, value));
            assert!(args[0].eq_ignore_ascii_case(b"SET"));
        }
    });
}

#[test]
fn fuzz_resp_reply_parser() {
    // Guards against the client-side RESP reply parser panicking (deep nesting, huge lengths).
    fuzz("resp_reply", iterations(40_000), |input| {
        if let Ok(Some((reply, used))) = parse_reply(input) {
            assert!(used <= input.len());
            // The encoder replaces a bare CR or LF in a simple string or error (which the
            // parser accepts, as hiredis does) with a space, so encoding is a fixed point from
            // its first output on, not an exact round trip.
            let mut once = Vec::new();
            reply.encode(&mut once);
            let mut twice = Vec::new();
            parse_reply(&once).unwrap().unwrap().0.encode(&mut twice);
            assert_eq!(once, twice);
        }
    });
}

fn store_opts() -> StoreOptions {
    StoreOptions {
        partitions: 1,
        io: Some(IoChoice::Blocking),
        segment_bytes: 4096,
        preallocate: false,
        ..StoreOptions::default()
    }
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!("key-{i:02}"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.file_name().is_some_and(|n| n != "LOCK") {
            out.push(p);
        }
    }
    out.sort();
}

#[test]
fn fuzz_recovery_from_mutated_files() {
    // Guards against opening a damaged data directory panicking, and against a damaged record
    // being served as a value: every value read must be one that was written to that key.
    count_panics();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = tempfile::tempdir().unwrap();
    let mut written: Vec<Vec<Bytes>> = vec![Vec::new(); 24];
    {
        let store = KvStore::open_with(base.path(), store_opts()).unwrap();
        rt.block_on(async {
            for round in 0..6 {
                for (i, values) in written.iter_mut().enumerate() {
                    let v = Bytes::from(format!("value {i} round {round} {}", "x".repeat(i * 7)));
                    store.set(key(i), v.clone()).await.unwrap();
                    values.push(v);
                }
                if round == 3 {
                    store.compact().await.unwrap();
                }
            }
        });
    }
    let mut targets = Vec::new();
    files(base.path(), &mut targets);
    let mut rng = Rng(seed());
    let opens = iterations(40_000) / 100;
    let (mut refused, mut served, mut errors) = (0u64, 0u64, 0u64);
    let before = PANICS.load(Ordering::SeqCst);
    for n in 0..opens {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(base.path(), dir.path());
        let mut victims = Vec::new();
        files(dir.path(), &mut victims);
        let victim = &victims[rng.below(victims.len())];
        let bytes = std::fs::read(victim).unwrap();
        let other = std::fs::read(&victims[rng.below(victims.len())]).unwrap();
        let mutated = mutate(&mut rng, &bytes, &other);
        std::fs::write(victim, &mutated).unwrap();
        let opened = KvStore::open_with(dir.path(), store_opts());
        let store = match opened {
            Ok(s) => s,
            Err(_) => {
                refused += 1;
                continue;
            }
        };
        rt.block_on(async {
            for (i, values) in written.iter().enumerate() {
                match store.get(key(i)).await {
                    Ok(Some(v)) => {
                        if !values.contains(&v) {
                            let path = save_crash("recovery", &mutated);
                            panic!(
                                "open {n}: {} mutated ({}): key {i} served {v:?}, never written",
                                victim.display(),
                                path.display()
                            );
                        }
                        served += 1;
                    }
                    Ok(None) => {}
                    Err(_) => errors += 1,
                }
            }
        });
        drop(store);
        assert_eq!(
            PANICS.load(Ordering::SeqCst),
            before,
            "open {n}: a panic while opening or reading after {} was mutated",
            victim.display()
        );
    }
    let _ = targets;
    println!(
        "fuzz: recovery: {opens} opens of mutated directories, seed {:#x}: {refused} refused to open, {served} values served (all written ones), {errors} reads answered with an error, no panic",
        seed()
    );
}
