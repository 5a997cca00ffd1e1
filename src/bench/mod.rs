//! The load generator behind `kvs-bench`: drives a kvs server (native protocol or RESP) or a
//! Redis server (RESP) with GETs and SETs and reports throughput, latency percentiles,
//! errors and the server's CPU time per operation.
//!
//! - [`workload`]: the seeded random generator, the pre-generated keys, how keys are dealt
//!   to connections, and the stamped values that make `--verify` exact.
//! - [`codec`]: hand-built GET and SET requests and in-place reply parsing, pinned to the
//!   library codecs byte for byte.
//! - `conn`: one connection's send/receive loop, closed or open loop.
//! - `run`: the threads, the phases (prefill, warm-up, measured), the progress line, and
//!   the CPU readings from `/proc`.
//! - [`report`]: what a run found, as text or JSON.
//! - [`summary`]: medians of many runs side by side, as a Markdown table and an SVG chart
//!   (what `ci/bench.sh` writes into `BENCHMARKS.md`).
//!
//! A run is: connect every connection; write every key once if asked (`prefill`, implied by
//! `verify`); warm up for `warmup`; then measure for a duration or a number of requests.
//! Requests are assigned to a phase by their intended send time, so warm-up traffic never
//! counts, and in a timed run the requests sent before the end are waited for and counted.
//!
//! Invariants:
//! - The generator is cheap per request: no allocation per request or reply (error
//!   messages aside), one `send` per batch of requests and one `recv` per batch of replies.
//! - Under `verify` every connection owns the keys it touches, and every GET is checked
//!   against the writes that connection made.
//! - The same seed and settings produce the same sequence of requests on every connection.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod codec;
mod conn;
pub mod report;
mod run;
mod stats;
pub mod summary;
pub mod workload;

pub use report::Report;
pub use run::run;

use crate::auth::Password;
use crate::limits::{
    BENCH_CONNECTIONS_MAX, BENCH_THREADS_MAX, KEY_BYTES_MAX, REQUESTS_IN_FLIGHT_MAX,
    VALUE_BYTES_MAX,
};
use crate::KvsError;
use workload::STAMP_BYTES;

/// The wire protocol a run speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// kvs's own framed protocol (`docs/protocol.md`).
    Native,
    /// RESP2, which kvs and Redis both speak.
    Resp,
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Protocol, String> {
        match s {
            "native" => Ok(Protocol::Native),
            "resp" => Ok(Protocol::Resp),
            other => Err(format!("unknown protocol '{other}': use native or resp")),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Native => "native",
            Protocol::Resp => "resp",
        })
    }
}

/// How long the measured phase lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunLength {
    Time(Duration),
    /// This many measured requests in all, shared evenly between connections.
    Requests(u64),
}

/// Everything a run needs to know.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub addr: SocketAddr,
    pub protocol: Protocol,
    pub connections: u32,
    /// Requests each connection keeps in flight.
    pub pipeline: u32,
    pub keys: u32,
    pub key_size: usize,
    pub value_size: usize,
    /// Fraction of requests that are GETs, `0.0..=1.0`.
    pub read_ratio: f64,
    pub length: RunLength,
    pub warmup: Duration,
    pub seed: u64,
    /// Open loop: requests per second over all connections. `None`: closed loop.
    pub rate: Option<f64>,
    /// Generator threads; connections are dealt to them round-robin.
    pub threads: u32,
    /// CPUs to pin generator threads to, round-robin; empty: no pinning.
    pub cpus: Vec<usize>,
    /// The server process whose CPU time is reported per operation.
    pub server_pid: Option<u32>,
    /// Check every GET against what was written (implies `prefill`).
    pub verify: bool,
    /// Write every key once before warm-up.
    pub prefill: bool,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// Labels copied into the report (e.g. `workload=W2`, `server=redis`).
    pub tags: BTreeMap<String, String>,
    /// The server's password, sent first on every connection (`Debug` does not show it).
    pub password: Option<Password>,
}

impl BenchConfig {
    /// The defaults of `kvs-bench`, against `addr`.
    pub fn new(addr: SocketAddr) -> BenchConfig {
        BenchConfig {
            addr,
            protocol: Protocol::Native,
            connections: 50,
            pipeline: 1,
            keys: 100_000,
            key_size: 16,
            value_size: 100,
            read_ratio: 0.9,
            length: RunLength::Time(Duration::from_secs(10)),
            warmup: Duration::from_secs(1),
            seed: 1,
            rate: None,
            threads: 1,
            cpus: Vec::new(),
            server_pid: None,
            verify: false,
            prefill: false,
            progress: true,
            tags: BTreeMap::new(),
            password: None,
        }
    }

    /// Refuses settings that cannot work, with a sentence saying why.
    pub fn validate(&self) -> Result<(), KvsError> {
        let bad = |why: String| Err(KvsError::Config(why));
        if self.connections == 0 || self.connections > BENCH_CONNECTIONS_MAX {
            return bad(format!(
                "--connections must be 1 to {BENCH_CONNECTIONS_MAX}"
            ));
        }
        if self.pipeline == 0 || self.pipeline as usize > REQUESTS_IN_FLIGHT_MAX {
            return bad(format!(
                "--pipeline must be 1 to {REQUESTS_IN_FLIGHT_MAX} (the server's in-flight cap)"
            ));
        }
        if self.threads == 0 || self.threads > BENCH_THREADS_MAX {
            return bad(format!("--threads must be 1 to {BENCH_THREADS_MAX}"));
        }
        if self.key_size == 0 || self.key_size > KEY_BYTES_MAX {
            return bad(format!("--key-size must be 1 to {KEY_BYTES_MAX}"));
        }
        if self.value_size > VALUE_BYTES_MAX {
            return bad(format!("--value-size must be at most {VALUE_BYTES_MAX}"));
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return bad("--read-ratio must be between 0 and 1".into());
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return bad("--rate must be a positive number of requests per second".into());
            }
        }
        match self.length {
            RunLength::Time(d) if d.is_zero() => return bad("--duration must be positive".into()),
            RunLength::Requests(0) => return bad("--requests must be at least 1".into()),
            _ => {}
        }
        if self.verify {
            if self.value_size < STAMP_BYTES {
                return bad(format!(
                    "--verify needs --value-size {STAMP_BYTES} or more to tell writes apart"
                ));
            }
            if self.keys < self.connections {
                return bad(format!(
                    "--verify gives each connection keys of its own: --keys ({}) must be at \
                     least --connections ({})",
                    self.keys, self.connections
                ));
            }
        }
        Ok(())
    }

    /// Whether every key is written once before warm-up.
    pub fn prefills(&self) -> bool {
        self.prefill || self.verify
    }
}

/// Parses a duration such as `5`, `2.5s`, `500ms`, `1m` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (try 5, 2.5s, 500ms or 1m)"))?;
    let seconds = value * scale;
    if !(seconds.is_finite() && seconds >= 0.0) {
        return Err(format!("'{text}' is not a duration (it must be 0 or more)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        // Guards against `--duration 5` meaning five milliseconds, or `1m` meaning a millisecond.
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn settings_that_cannot_work_are_refused_with_a_reason() {
        // Guards against a run that silently measures something other than what was asked.
        let addr = "127.0.0.1:1".parse().expect("addr");
        let base = BenchConfig::new(addr);
        assert!(base.validate().is_ok());
        type Breaker = fn(&mut BenchConfig);
        let cases: [(&str, Breaker); 6] = [
            ("pipeline", |c| c.pipeline = 0),
            ("read-ratio", |c| c.read_ratio = 1.5),
            ("rate", |c| c.rate = Some(0.0)),
            ("value-size", |c| {
                c.verify = true;
                c.value_size = 4;
            }),
            ("--keys", |c| {
                c.verify = true;
                c.keys = 10;
            }),
            ("requests", |c| c.length = RunLength::Requests(0)),
        ];
        for (word, break_it) in cases {
            let mut config = base.clone();
            break_it(&mut config);
            let err = config.validate().expect_err(word).to_string();
            assert!(err.contains(word), "{err}");
        }
    }
}
