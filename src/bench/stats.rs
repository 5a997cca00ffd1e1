//! What the load generator counts: latency histograms per phase, operation and error
//! counters, and the CPU time a process has used, read from `/proc`.
//!
//! Each generator thread owns one [`ThreadStats`]; the coordinator merges them. Latencies
//! are recorded in nanoseconds with three significant digits, from 1 ns to a minute
//! (anything longer is recorded as a minute).

use std::time::Instant;

use hdrhistogram::Histogram;

/// Longest latency a histogram tells apart, in nanoseconds.
const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Error messages kept, per thread and in the report, to show what went wrong.
pub const ERROR_SAMPLES_MAX: usize = 5;
/// Clock ticks per second in `/proc/PID/stat`: USER_HZ, which Linux fixes at 100 on every
/// architecture kvs builds for (x86_64 and aarch64), whatever the kernel's HZ.
const USER_HZ: f64 = 100.0;

/// A request the generator sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Get,
    Set,
}

/// Which part of a run a request belongs to, by its intended send time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Writing every key once before warm-up (`--prefill`, `--verify`).
    Prefill,
    Warmup,
    Measured,
}

/// An empty latency histogram.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("constant bounds are valid")
}

/// Operation and error counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Measured GETs and SETs answered.
    pub gets: u64,
    pub sets: u64,
    /// Measured GETs answered "no such key".
    pub get_misses: u64,
    /// GETs (any phase) whose value `--verify` checked and found right.
    pub verified_gets: u64,
    /// Error replies from the server (any phase).
    pub server_errors: u64,
    /// Replies that answer neither a GET nor a SET.
    pub unexpected: u64,
    /// GETs whose value was not what was written.
    pub mismatches: u64,
    /// Connections that failed: refused, reset, closed early, or sent bytes that are not a
    /// valid reply.
    pub connection_errors: u64,
    /// The first few error messages.
    pub samples: Vec<String>,
}

impl Counts {
    pub fn errors(&self) -> u64 {
        self.server_errors + self.unexpected + self.mismatches + self.connection_errors
    }

    pub fn add(&mut self, other: &Counts) {
        self.gets += other.gets;
        self.sets += other.sets;
        self.get_misses += other.get_misses;
        self.verified_gets += other.verified_gets;
        self.server_errors += other.server_errors;
        self.unexpected += other.unexpected;
        self.mismatches += other.mismatches;
        self.connection_errors += other.connection_errors;
        for sample in &other.samples {
            self.sample(sample.clone());
        }
    }

    pub fn sample(&mut self, message: String) {
        if self.samples.len() < ERROR_SAMPLES_MAX {
            self.samples.push(message);
        }
    }
}

/// One generator thread's counters.
pub struct ThreadStats {
    /// Replies of every phase, for the progress line.
    pub completed: u64,
    pub warmup: Histogram<u64>,
    pub measured: Histogram<u64>,
    pub counts: Counts,
    /// When the last measured reply arrived.
    pub last_measured: Option<Instant>,
    /// How late measured requests were queued after their scheduled time (open loop; in a
    /// closed loop a request is queued the moment it is decided, so this stays empty).
    pub send_lag: Histogram<u64>,
}

impl Default for ThreadStats {
    fn default() -> ThreadStats {
        ThreadStats {
            completed: 0,
            warmup: histogram(),
            measured: histogram(),
            counts: Counts::default(),
            last_measured: None,
            send_lag: histogram(),
        }
    }
}

impl ThreadStats {
    /// Records a reply to a request meant to be sent at `stamp`, arriving at `now`.
    pub fn record(&mut self, phase: Phase, op: Op, stamp: Instant, now: Instant) {
        self.completed += 1;
        let ns = now.saturating_duration_since(stamp).as_nanos();
        let ns = u64::try_from(ns)
            .unwrap_or(u64::MAX)
            .clamp(1, LATENCY_NS_MAX);
        match phase {
            Phase::Prefill => {}
            Phase::Warmup => self.warmup.saturating_record(ns),
            Phase::Measured => {
                self.measured.saturating_record(ns);
                match op {
                    Op::Get => self.counts.gets += 1,
                    Op::Set => self.counts.sets += 1,
                }
                self.last_measured = Some(self.last_measured.map_or(now, |t| t.max(now)));
            }
        }
    }

    pub fn sent_late(&mut self, lag: std::time::Duration) {
        let ns = u64::try_from(lag.as_nanos()).unwrap_or(u64::MAX);
        self.send_lag.saturating_record(ns.clamp(1, LATENCY_NS_MAX));
    }

    pub fn get_reply(&mut self, phase: Phase, found: bool) {
        if phase == Phase::Measured && !found {
            self.counts.get_misses += 1;
        }
    }

    pub fn verified(&mut self, _phase: Phase) {
        self.counts.verified_gets += 1;
    }

    pub fn mismatch(&mut self, message: String) {
        self.counts.mismatches += 1;
        self.counts.sample(format!("verify: {message}"));
    }

    pub fn server_error(&mut self, message: String) {
        self.counts.server_errors += 1;
        self.counts.sample(format!("server: {message}"));
    }

    pub fn unexpected(&mut self, message: String) {
        self.counts.unexpected += 1;
        self.counts.sample(format!("unexpected reply: {message}"));
    }

    pub fn connection_failed(&mut self, message: String) {
        self.counts.connection_errors += 1;
        self.counts.sample(format!("connection: {message}"));
    }
}

/// User plus system CPU time a process has used, in seconds, from `/proc/PID/stat`
/// (`/proc/self/stat` for `None`). Includes every thread, live or exited.
pub fn process_cpu_seconds(pid: Option<u32>) -> std::io::Result<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(&path)?;
    parse_cpu_seconds(&stat).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{path} does not have the layout proc(5) describes"),
        )
    })
}

/// utime (field 14) plus stime (field 15) of a `/proc/PID/stat` line, in seconds. The
/// command name (field 2) may hold spaces and parentheses, so fields are counted from the
/// last `)`.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_ascii_whitespace();
    // Field 3 (state) is the first after the name; utime is 11 fields later.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn proc_stat_cpu_fields_are_found_past_a_tricky_command_name() {
        // Guards against miscounting fields when a process name contains spaces or ')'.
        let line = "1234 (kvs worker) 0)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 \
                    3 0 12345 1000000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0";
        assert_eq!(parse_cpu_seconds(line), Some(3.25));
        assert_eq!(parse_cpu_seconds("garbage"), None);
    }

    #[test]
    fn own_cpu_time_is_readable_and_grows() {
        // Guards against a /proc reader that silently reports zero.
        let before = process_cpu_seconds(None).expect("readable");
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(60) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let after = process_cpu_seconds(None).expect("readable");
        assert!(after > before, "{before} -> {after}");
    }

    #[test]
    fn only_measured_replies_count_as_operations() {
        // Guards against warm-up or prefill replies inflating the measured throughput.
        let mut stats = ThreadStats::default();
        let t = Instant::now();
        stats.record(Phase::Prefill, Op::Set, t, t);
        stats.record(Phase::Warmup, Op::Get, t, t);
        stats.record(Phase::Measured, Op::Get, t, t + Duration::from_micros(30));
        stats.record(Phase::Measured, Op::Set, t, t + Duration::from_micros(50));
        assert_eq!(stats.completed, 4);
        assert_eq!((stats.counts.gets, stats.counts.sets), (1, 1));
        assert_eq!(stats.measured.len(), 2);
        assert_eq!(stats.warmup.len(), 1);
        assert!(stats.measured.max() >= 49_000);
    }
}
