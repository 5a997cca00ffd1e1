//! A whole run: generator threads, the phases, the progress line and the CPU readings.
//!
//! The calling thread coordinates. Each generator thread runs a current-thread tokio runtime
//! with its share of the connections as local tasks, plus a ticker that sends the
//! coordinator a snapshot of its counters once a second. Once every connection has
//! connected (and prefilled), the coordinator fixes the schedule (start, end of warm-up, end
//! of the measured phase) and releases them all at once. It reads the server's and its own
//! CPU time from `/proc` when warm-up ends and again when the last reply has arrived.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio::task::LocalSet;

use super::codec::RequestEncoder;
use super::conn::{Conn, Context, Prefill, Schedule, Workload};
use super::report::{micros, thousands, CpuUse, Errors, Latency, Report, Settings};
use super::stats::{histogram, process_cpu_seconds, Counts, ThreadStats};
use super::workload::{Keyspace, Rng, Stripe, ValueTemplate};
use super::{BenchConfig, RunLength};
use crate::limits::BENCH_STALL_TIMEOUT_MS;
use crate::KvsError;

/// Time between progress lines and counter snapshots.
const TICK: Duration = Duration::from_secs(1);

/// What connections wait for before the workload starts.
#[derive(Clone, Copy, Debug)]
enum Go {
    Wait,
    Start(Schedule),
    Abort,
}

/// What generator threads tell the coordinator.
enum Event {
    /// A connection is open (and prefilled) and waits for the start.
    Ready,
    /// A connection could not connect or prefill; the run cannot go on.
    SetupFailed(String),
    /// A thread's counters at tick `tick`.
    Progress {
        tick: u64,
        completed: u64,
        errors: u64,
        /// Latencies of the current phase so far (warm-up, then measured).
        latencies: Box<Histogram<u64>>,
    },
    /// A thread has finished: every connection is done.
    Finished(Box<ThreadStats>),
}

/// What a generator thread is given.
struct ThreadPlan {
    cpu: Option<usize>,
    /// Connection numbers, `0..connections`.
    conns: Vec<u32>,
    config: Arc<BenchConfig>,
    keys: Arc<Keyspace>,
    values: Arc<ValueTemplate>,
    encoder: RequestEncoder,
    epoch: Instant,
    events: mpsc::Sender<Event>,
    go: watch::Receiver<Go>,
}

/// Runs a benchmark as `config` says and reports what it measured. Prints a progress line to
/// stderr each second if `config.progress`.
///
/// Fails if the settings cannot work, a connection cannot be opened or prefilled, or no
/// reply arrives for [`BENCH_STALL_TIMEOUT_MS`]; in the last case the generator threads are
/// left behind (they end with the process). Errors during the workload (error replies, lost
/// connections, verify mismatches) do not fail the call: they are counted in the report.
pub fn run(config: &BenchConfig) -> Result<Report, KvsError> {
    config.validate()?;
    let keys = Arc::new(Keyspace::new(config.keys, config.key_size)?);
    let values = Arc::new(ValueTemplate::new(config.value_size, config.seed)?);
    let encoder = RequestEncoder::new(config.protocol, config.key_size, config.value_size)?;
    if let Some(pid) = config.server_pid {
        process_cpu_seconds(Some(pid)).map_err(|e| {
            KvsError::Config(format!(
                "cannot read the CPU time of --server-pid {pid}: {e}"
            ))
        })?;
    }
    let available: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    if let Some(cpu) = config.cpus.iter().find(|c| !available.contains(c)) {
        return Err(KvsError::Config(format!(
            "--cpu {cpu}: this process may run on CPUs {available:?} only"
        )));
    }
    if let Some(&cpu) = config.cpus.first() {
        pin(cpu)?;
    }

    let config = Arc::new(config.clone());
    let epoch = Instant::now();
    let (events_tx, events) = mpsc::channel();
    let (go_tx, go_rx) = watch::channel(Go::Wait);
    let mut threads = 0;
    for index in 0..config.threads as usize {
        let conns: Vec<u32> = (index as u32..config.connections)
            .step_by(config.threads as usize)
            .collect();
        if conns.is_empty() {
            continue;
        }
        let plan = ThreadPlan {
            cpu: (!config.cpus.is_empty()).then(|| config.cpus[index % config.cpus.len()]),
            conns,
            config: config.clone(),
            keys: keys.clone(),
            values: values.clone(),
            encoder: encoder.clone(),
            epoch,
            events: events_tx.clone(),
            go: go_rx.clone(),
        };
        std::thread::Builder::new()
            .name(format!("kvs-bench-{index}"))
            .spawn(move || generator_thread(plan))?;
        threads += 1;
    }
    drop(events_tx);
    let mut coordinator = Coordinator::new(&config, threads, epoch);
    let outcome = coordinator.run(&events, &go_tx);
    if outcome.is_err() {
        let _ = go_tx.send(Go::Abort);
    }
    outcome
}

fn pin(cpu: usize) -> Result<(), KvsError> {
    if core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
        Ok(())
    } else {
        Err(KvsError::Config(format!(
            "could not pin a thread to CPU {cpu}"
        )))
    }
}

/// One thread's counters at one tick.
struct Snapshot {
    completed: u64,
    errors: u64,
    latencies: Box<Histogram<u64>>,
}

/// The coordinator's view of a run in progress.
struct Coordinator<'a> {
    config: &'a BenchConfig,
    threads: usize,
    epoch: Instant,
    ready: u32,
    schedule: Option<Schedule>,
    /// (server, client) CPU seconds when the measured phase started.
    cpu_start: Option<(Option<f64>, f64)>,
    finished: Vec<ThreadStats>,
    /// Snapshots of ticks not every thread has reported yet.
    ticks: BTreeMap<u64, Vec<Snapshot>>,
    /// Replies at the last printed tick, and when that tick was.
    last_completed: u64,
    last_tick_at: Instant,
    /// When the reply count last changed.
    last_change: Instant,
    stall_after: Duration,
}

impl<'a> Coordinator<'a> {
    fn new(config: &'a BenchConfig, threads: usize, epoch: Instant) -> Coordinator<'a> {
        let stall_after = Duration::from_millis(BENCH_STALL_TIMEOUT_MS).max(
            // A slow open loop may leave a connection quiet for a few of its intervals.
            config.rate.map_or(Duration::ZERO, |rate| {
                Duration::from_secs_f64(3.0 * f64::from(config.connections) / rate)
            }),
        );
        Coordinator {
            config,
            threads,
            epoch,
            ready: 0,
            schedule: None,
            cpu_start: None,
            finished: Vec::with_capacity(threads),
            ticks: BTreeMap::new(),
            last_completed: 0,
            last_tick_at: epoch,
            last_change: epoch,
            stall_after,
        }
    }

    fn run(
        &mut self,
        events: &mpsc::Receiver<Event>,
        go: &watch::Sender<Go>,
    ) -> Result<Report, KvsError> {
        while self.finished.len() < self.threads {
            let now = Instant::now();
            let mut wait = TICK;
            if let (Some(s), None) = (&self.schedule, &self.cpu_start) {
                wait = wait.min(s.warm_end.saturating_duration_since(now));
            }
            match events.recv_timeout(wait) {
                Ok(Event::Ready) => {
                    self.ready += 1;
                    if self.ready == self.config.connections {
                        self.start(go)?;
                    }
                }
                Ok(Event::SetupFailed(why)) => return Err(KvsError::Protocol(why)),
                Ok(Event::Progress {
                    tick,
                    completed,
                    errors,
                    latencies,
                }) => self.progress(tick, completed, errors, latencies),
                Ok(Event::Finished(stats)) => self.finished.push(*stats),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(KvsError::Protocol(
                        "a generator thread ended without reporting".into(),
                    ))
                }
            }
            let now = Instant::now();
            if let (Some(s), None) = (&self.schedule, &self.cpu_start) {
                if now >= s.warm_end {
                    self.cpu_start = Some(self.read_cpu()?);
                }
            }
            if now.duration_since(self.last_change) > self.stall_after {
                return Err(KvsError::Timeout(format!(
                    "no reply arrived for {} s; the server or the network is stuck",
                    self.stall_after.as_secs()
                )));
            }
        }
        let cpu_end = self.read_cpu()?;
        Ok(self.report(cpu_end))
    }

    fn start(&mut self, go: &watch::Sender<Go>) -> Result<(), KvsError> {
        let start = Instant::now();
        let warm_end = start + self.config.warmup;
        let end = match self.config.length {
            RunLength::Time(d) => Some(warm_end + d),
            RunLength::Requests(_) => None,
        };
        let schedule = Schedule {
            start,
            warm_end,
            end,
        };
        if self.config.warmup.is_zero() {
            self.cpu_start = Some(self.read_cpu()?);
        }
        self.schedule = Some(schedule);
        self.last_change = start;
        let _ = go.send(Go::Start(schedule));
        Ok(())
    }

    fn read_cpu(&self) -> Result<(Option<f64>, f64), KvsError> {
        let server = match self.config.server_pid {
            Some(pid) => Some(process_cpu_seconds(Some(pid)).map_err(|e| {
                KvsError::Protocol(format!("the server (pid {pid}) went away: {e}"))
            })?),
            None => None,
        };
        Ok((server, process_cpu_seconds(None)?))
    }

    fn progress(&mut self, tick: u64, completed: u64, errors: u64, latencies: Box<Histogram<u64>>) {
        let snapshots = self.ticks.entry(tick).or_default();
        snapshots.push(Snapshot {
            completed,
            errors,
            latencies,
        });
        // A thread that has finished sends no more ticks; count only the live ones.
        if snapshots.len() < self.threads - self.finished.len() {
            return;
        }
        let Some(snapshots) = self.ticks.remove(&tick) else {
            return;
        };
        // Ticks older than this one will never complete now.
        self.ticks.retain(|&t, _| t > tick);
        let completed: u64 = snapshots.iter().map(|s| s.completed).sum::<u64>()
            + self.finished.iter().map(|s| s.completed).sum::<u64>();
        let errors: u64 = snapshots.iter().map(|s| s.errors).sum::<u64>()
            + self.finished.iter().map(|s| s.counts.errors()).sum::<u64>();
        let at = self.epoch + TICK * tick as u32;
        if completed != self.last_completed {
            self.last_change = Instant::now();
        }
        if self.config.progress {
            let mut merged = histogram();
            for snapshot in &snapshots {
                let _ = merged.add(&*snapshot.latencies);
            }
            let seconds = at.duration_since(self.last_tick_at).as_secs_f64().max(1e-9);
            let rate = (completed - self.last_completed.min(completed)) as f64 / seconds;
            let phase = match &self.schedule {
                None => "connect/prefill",
                Some(s) if at < s.warm_end => "warm-up",
                Some(_) => "measure",
            };
            let p99 = if merged.is_empty() {
                "-".to_owned()
            } else {
                micros(merged.value_at_quantile(0.99) as f64 / 1e3)
            };
            eprintln!(
                "kvs-bench {:>4}s  {phase:<15} {:>11} ops/s  p99 so far {p99:>9}  errors {errors}",
                tick,
                thousands(rate),
            );
        }
        self.last_completed = completed;
        self.last_tick_at = at;
    }

    fn report(&self, cpu_end: (Option<f64>, f64)) -> Report {
        let mut measured = histogram();
        let mut send_lag = histogram();
        let mut counts = Counts::default();
        let mut last_measured = None::<Instant>;
        for stats in &self.finished {
            let _ = measured.add(&stats.measured);
            let _ = send_lag.add(&stats.send_lag);
            counts.add(&stats.counts);
            last_measured = last_measured.max(stats.last_measured);
        }
        let schedule = self.schedule.expect("every connection started");
        let duration_s = match self.config.length {
            RunLength::Time(d) => d.as_secs_f64(),
            RunLength::Requests(_) => last_measured.map_or(0.0, |t| {
                t.saturating_duration_since(schedule.warm_end).as_secs_f64()
            }),
        };
        let ops = counts.gets + counts.sets;
        let cpu_start = self.cpu_start.unwrap_or(cpu_end);
        let wall = Instant::now()
            .saturating_duration_since(schedule.warm_end)
            .as_secs_f64()
            .max(1e-9);
        let cpu_use = |pid: Option<u32>, start: f64, end: f64| {
            let seconds = (end - start).max(0.0);
            CpuUse {
                pid,
                seconds,
                us_per_op: if ops == 0 {
                    0.0
                } else {
                    seconds * 1e6 / ops as f64
                },
                utilization: seconds / wall,
            }
        };
        let server_cpu = match (cpu_start.0, cpu_end.0) {
            (Some(start), Some(end)) => Some(cpu_use(self.config.server_pid, start, end)),
            _ => None,
        };
        let client_cpu = Some(cpu_use(None, cpu_start.1, cpu_end.1));
        Report {
            tags: self.config.tags.clone(),
            settings: Settings::of(self.config),
            duration_s,
            ops,
            gets: counts.gets,
            sets: counts.sets,
            get_misses: counts.get_misses,
            ops_per_sec: if duration_s > 0.0 {
                ops as f64 / duration_s
            } else {
                0.0
            },
            latency_us: Latency::of(&measured),
            send_lag_us: self.config.rate.map(|_| Latency::of(&send_lag)),
            errors: Errors {
                total: counts.errors(),
                server: counts.server_errors,
                unexpected: counts.unexpected,
                connection: counts.connection_errors,
                mismatches: counts.mismatches,
                samples: counts.samples.clone(),
            },
            verified_gets: counts.verified_gets,
            server_cpu,
            client_cpu,
        }
    }
}

fn generator_thread(plan: ThreadPlan) {
    let events = plan.events.clone();
    let fail = |why: String| {
        for _ in &plan.conns {
            let _ = events.send(Event::SetupFailed(why.clone()));
        }
    };
    if let Some(cpu) = plan.cpu {
        if let Err(e) = pin(cpu) {
            return fail(e.to_string());
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("could not start a runtime: {e}")),
    };
    let stats = LocalSet::new().block_on(&runtime, thread_body(plan));
    let _ = events.send(Event::Finished(Box::new(stats)));
}

async fn thread_body(plan: ThreadPlan) -> ThreadStats {
    let config = plan.config.clone();
    let ctx = Rc::new(Context {
        protocol: config.protocol,
        pipeline: config.pipeline as usize,
        keys: plan.keys.clone(),
        values: plan.values.clone(),
        encoder: plan.encoder.clone(),
        verify: config.verify,
        password: config.password.clone(),
        stats: RefCell::new(ThreadStats::default()),
    });
    let ticker = tokio::task::spawn_local(ticker(
        ctx.clone(),
        plan.epoch,
        plan.events.clone(),
        plan.go.clone(),
    ));
    let tasks: Vec<_> = plan
        .conns
        .iter()
        .map(|&id| {
            tokio::task::spawn_local(connection(
                ctx.clone(),
                config.clone(),
                id,
                plan.events.clone(),
                plan.go.clone(),
            ))
        })
        .collect();
    for task in tasks {
        if let Err(e) = task.await {
            ctx.stats
                .borrow_mut()
                .connection_failed(format!("a connection task failed: {e}"));
        }
    }
    ticker.abort();
    ctx.stats.take()
}

/// Sends the coordinator this thread's counters at every tick of the common clock.
async fn ticker(
    ctx: Rc<Context>,
    epoch: Instant,
    events: mpsc::Sender<Event>,
    go: watch::Receiver<Go>,
) {
    let mut tick = 0u64;
    loop {
        tick += 1;
        tokio::time::sleep_until((epoch + TICK * tick as u32).into()).await;
        let measuring = match *go.borrow() {
            Go::Start(s) => Instant::now() >= s.warm_end,
            Go::Wait | Go::Abort => false,
        };
        let stats = ctx.stats.borrow();
        let latencies = if measuring {
            stats.measured.clone()
        } else {
            stats.warmup.clone()
        };
        let event = Event::Progress {
            tick,
            completed: stats.completed,
            errors: stats.counts.errors(),
            latencies: Box::new(latencies),
        };
        drop(stats);
        if events.send(event).is_err() {
            return;
        }
    }
}

/// One connection through the whole run.
async fn connection(
    ctx: Rc<Context>,
    config: Arc<BenchConfig>,
    id: u32,
    events: mpsc::Sender<Event>,
    mut go: watch::Receiver<Go>,
) {
    let own = Stripe::dealt(config.keys, id, config.connections);
    // Under --verify a connection touches only its own keys; otherwise any key.
    let stripe = if config.verify {
        own
    } else {
        Stripe::all(config.keys)
    };
    let setup = async {
        let mut conn = Conn::open(config.addr, &ctx, stripe).await?;
        if config.prefills() {
            // Each connection writes its own share of the keys, as indices of `stripe`.
            let mut prefill = if config.verify {
                Prefill::new(0, 1, own.len)
            } else {
                Prefill::new(own.first, own.step, own.len)
            };
            conn.pump(&ctx, &mut prefill).await?;
        }
        Ok::<Conn, KvsError>(conn)
    };
    let mut conn = match setup.await {
        Ok(conn) => conn,
        Err(e) => {
            let _ = events.send(Event::SetupFailed(format!("connection {id}: {e}")));
            return;
        }
    };
    let _ = events.send(Event::Ready);
    let schedule = match go.wait_for(|g| !matches!(g, Go::Wait)).await.map(|g| *g) {
        Ok(Go::Start(schedule)) => schedule,
        _ => return,
    };
    let quota = match config.length {
        RunLength::Requests(n) => {
            let conns = u64::from(config.connections);
            Some(n / conns + u64::from(u64::from(id) < n % conns))
        }
        RunLength::Time(_) => None,
    };
    let rate = config.rate.map(|rate| {
        let per_conn = rate / f64::from(config.connections);
        (per_conn, f64::from(id) / f64::from(config.connections))
    });
    let mut workload = Workload::new(
        Rng::new(config.seed, u64::from(id)),
        stripe,
        config.read_ratio,
        schedule,
        quota,
        rate,
    );
    if let Err(e) = conn.pump(&ctx, &mut workload).await {
        ctx.stats
            .borrow_mut()
            .connection_failed(format!("connection {id}: {e}"));
    }
}
