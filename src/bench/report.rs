//! What one `kvs-bench` run found, as a value: printed for people, or serialised as one JSON
//! object per run (`--json`) for scripts and for [`super::summary`].

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::{BenchConfig, Protocol, RunLength};

/// The outcome of one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Labels given with `--tag`.
    pub tags: BTreeMap<String, String>,
    pub settings: Settings,
    /// Length of the measured phase, in seconds.
    pub duration_s: f64,
    /// Measured requests answered (GETs plus SETs, errors included).
    pub ops: u64,
    pub gets: u64,
    pub sets: u64,
    /// Measured GETs answered "no such key".
    pub get_misses: u64,
    pub ops_per_sec: f64,
    pub latency_us: Latency,
    /// Open loop only: how late the generator sent requests after their scheduled time.
    /// Latency includes this lag, so a large lag means the generator, not the server, was
    /// behind.
    pub send_lag_us: Option<Latency>,
    pub errors: Errors,
    /// GETs checked by `--verify` and found right (warm-up included).
    pub verified_gets: u64,
    /// The server's CPU use over the measured phase (`--server-pid`).
    pub server_cpu: Option<CpuUse>,
    /// The generator's own CPU use over the measured phase.
    pub client_cpu: Option<CpuUse>,
}

/// The settings a run used, as plain numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub addr: String,
    pub protocol: Protocol,
    pub connections: u32,
    pub pipeline: u32,
    pub threads: u32,
    pub keys: u32,
    pub key_size: usize,
    pub value_size: usize,
    pub read_ratio: f64,
    /// Open-loop rate over all connections; `None` for a closed loop.
    pub rate: Option<f64>,
    /// Set for a timed run.
    pub duration_s: Option<f64>,
    /// Set for a counted run.
    pub requests: Option<u64>,
    pub warmup_s: f64,
    pub seed: u64,
    pub verify: bool,
    pub prefill: bool,
}

impl Settings {
    pub fn of(config: &BenchConfig) -> Settings {
        let (duration_s, requests) = match config.length {
            RunLength::Time(d) => (Some(d.as_secs_f64()), None),
            RunLength::Requests(n) => (None, Some(n)),
        };
        Settings {
            addr: config.addr.to_string(),
            protocol: config.protocol,
            connections: config.connections,
            pipeline: config.pipeline,
            threads: config.threads,
            keys: config.keys,
            key_size: config.key_size,
            value_size: config.value_size,
            read_ratio: config.read_ratio,
            rate: config.rate,
            duration_s,
            requests,
            warmup_s: config.warmup.as_secs_f64(),
            seed: config.seed,
            verify: config.verify,
            prefill: config.prefills(),
        }
    }
}

/// Latency percentiles of the measured phase, in microseconds, from each request's intended
/// send time to its reply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// Reads the percentiles of a histogram of nanoseconds.
    pub fn of(histogram: &Histogram<u64>) -> Latency {
        if histogram.is_empty() {
            return Latency::default();
        }
        let us = |ns: u64| ns as f64 / 1e3;
        Latency {
            p50: us(histogram.value_at_quantile(0.50)),
            p90: us(histogram.value_at_quantile(0.90)),
            p99: us(histogram.value_at_quantile(0.99)),
            p999: us(histogram.value_at_quantile(0.999)),
            max: us(histogram.max()),
            mean: histogram.mean() / 1e3,
        }
    }
}

/// Errors of every phase. Any of them makes the run fail.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Errors {
    pub total: u64,
    /// Error replies from the server.
    pub server: u64,
    /// Replies that answer neither a GET nor a SET.
    pub unexpected: u64,
    /// Connections lost or refused, or that carried bytes that are not a reply.
    pub connection: u64,
    /// GETs that did not return what was written (`--verify`).
    pub mismatches: u64,
    /// The first few messages.
    pub samples: Vec<String>,
}

/// CPU time a process used during the measured phase.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuUse {
    pub pid: Option<u32>,
    /// User plus system time, in seconds.
    pub seconds: f64,
    /// CPU time per measured operation, in microseconds.
    pub us_per_op: f64,
    /// CPU time over wall-clock time (1.0 is one core busy).
    pub utilization: f64,
}

impl Report {
    /// True if the run counts: some operations and no errors of any kind.
    pub fn succeeded(&self) -> bool {
        self.ops > 0 && self.errors.total == 0
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report has only plain fields")
    }
}

/// `1234567.8` as `1,234,568`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Microseconds, shown as µs below a millisecond and as ms above.
pub fn micros(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else if us >= 100.0 {
        format!("{us:.0} µs")
    } else {
        format!("{us:.1} µs")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        let loop_kind = match s.rate {
            Some(rate) => format!("open loop at {} req/s", thousands(rate)),
            None => "closed loop".to_owned(),
        };
        writeln!(
            f,
            "{} {}: {} connection(s) x pipeline {}, {} thread(s), {loop_kind}",
            s.protocol, s.addr, s.connections, s.pipeline, s.threads
        )?;
        writeln!(
            f,
            "workload: GET {:.0}% / SET {:.0}%, {} keys of {} B, values of {} B, seed {}{}",
            s.read_ratio * 100.0,
            (1.0 - s.read_ratio) * 100.0,
            thousands(f64::from(s.keys)),
            s.key_size,
            s.value_size,
            s.seed,
            if s.verify { ", verified" } else { "" }
        )?;
        writeln!(
            f,
            "measured {:.2} s: {} ops ({} GET, {} SET, {} GET misses): {} ops/s",
            self.duration_s,
            thousands(self.ops as f64),
            thousands(self.gets as f64),
            thousands(self.sets as f64),
            thousands(self.get_misses as f64),
            thousands(self.ops_per_sec)
        )?;
        let l = &self.latency_us;
        writeln!(
            f,
            "latency: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}",
            micros(l.p50),
            micros(l.p90),
            micros(l.p99),
            micros(l.p999),
            micros(l.max),
            micros(l.mean)
        )?;
        if let Some(lag) = &self.send_lag_us {
            writeln!(
                f,
                "send lag behind schedule: p50 {}  p99 {}  max {}",
                micros(lag.p50),
                micros(lag.p99),
                micros(lag.max)
            )?;
        }
        let e = &self.errors;
        writeln!(
            f,
            "errors: {} (server {}, unexpected replies {}, connections {}, verify mismatches {}){}",
            e.total,
            e.server,
            e.unexpected,
            e.connection,
            e.mismatches,
            if s.verify {
                format!("; {} GETs verified", thousands(self.verified_gets as f64))
            } else {
                String::new()
            }
        )?;
        for sample in &e.samples {
            writeln!(f, "  {sample}")?;
        }
        if let Some(cpu) = &self.server_cpu {
            writeln!(
                f,
                "server CPU: {:.2} µs/op ({:.2} s over the measured phase, {:.0}% of a core, pid {})",
                cpu.us_per_op,
                cpu.seconds,
                cpu.utilization * 100.0,
                cpu.pid.map_or_else(String::new, |p| p.to_string())
            )?;
        }
        if let Some(cpu) = &self.client_cpu {
            writeln!(
                f,
                "client CPU: {:.2} µs/op ({:.0}% of a core)",
                cpu.us_per_op,
                cpu.utilization * 100.0
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_shown_the_way_people_read_them() {
        // Guards against unreadable output such as 1234567.891 ops/s or 0.031 ms.
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(micros(31.25), "31.2 µs");
        assert_eq!(micros(250.0), "250 µs");
        assert_eq!(micros(1500.0), "1.50 ms");
    }

    #[test]
    fn latency_percentiles_come_out_in_microseconds() {
        // Guards against a unit slip between the nanosecond histogram and the report.
        let mut h = super::super::stats::histogram();
        for ns in 1..=1000u64 {
            h.record(ns * 1000).expect("in range");
        }
        let l = Latency::of(&h);
        assert!((l.p50 - 500.0).abs() < 1.0, "{l:?}");
        assert!((l.p99 - 990.0).abs() < 1.0, "{l:?}");
        assert!((l.max - 1000.0).abs() < 1.0, "{l:?}");
    }
}
