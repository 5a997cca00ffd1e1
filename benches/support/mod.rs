//! What the benchmarks share: deterministic keys and values, where a run happened, and
//! whether the binary runs as a benchmark or as a quick smoke test under `cargo test`.

#![expect(
    dead_code,
    reason = "each bench target uses a different part of this module"
)]

use bytes::Bytes;

/// Key length every benchmark uses.
pub const KEY_BYTES: usize = 16;

/// splitmix64's finalizer: a bijection on u64, so distinct inputs give distinct keys.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `i`th key of the stored key set: 16 hex digits, spread over the keyspace.
pub fn key(i: u64) -> Bytes {
    Bytes::from(format!("{:016x}", mix(i)))
}

/// A 16-byte key that is never in the stored key set (the first character is not hex).
pub fn missing_key(i: u64) -> Bytes {
    Bytes::from(format!("m{:015x}", mix(i) >> 4))
}

/// A value of `len` bytes whose content depends on `seed`.
pub fn value(len: usize, seed: u64) -> Bytes {
    let mut v = Vec::with_capacity(len + 8);
    let mut s = seed;
    while v.len() < len {
        s = mix(s);
        v.extend_from_slice(&s.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

/// A small, fixed-seed generator (xorshift64*), so every run draws the same sequence.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(mix(seed) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (the bias is negligible for the sizes used here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// True when cargo runs the binary as a benchmark (`cargo bench` passes `--bench`); under
/// `cargo test` it is a smoke test and must stay fast.
pub fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Where the run happened: CPU model, core count, kernel and commit, as one line of text.
pub fn environment() -> Environment {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| !o.stdout.is_empty());
    Environment {
        cpu,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel,
        commit: if dirty {
            format!("{commit}-dirty")
        } else {
            commit
        },
    }
}

pub struct Environment {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub commit: String,
}

/// Resident memory of this process in bytes (`VmRSS` of `/proc/self/status`).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

/// CPU time used so far by the threads of this process that are still alive, in
/// nanoseconds (the first field of each `/proc/self/task/*/schedstat`).
pub fn cpu_ns() -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").expect("read /proc/self/task") {
        let path = task.expect("task entry").path().join("schedstat");
        // A thread may exit between the listing and the read.
        if let Ok(s) = std::fs::read_to_string(path) {
            total += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

/// The median of `xs` (the mean of the middle two for an even count).
pub fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    assert!(n > 0, "median of nothing");
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}
