//! Writers with an acknowledged-write ledger, and the checks a fault test runs against it.
//!
//! Each writer owns its keys (all in one partition of the store, so that the order of its
//! operations is the order of one log) and runs a seeded, endless sequence of sets and
//! removes against the real server, one request at a time. Every answer is written down: an
//! acknowledged set, an acknowledged remove, a remove answered "not found", or the one
//! operation that got no acknowledgement (the connection died, or the server refused it),
//! which may or may not have landed. Values name the writer and the operation, so a value
//! read back says exactly which operation wrote it.
//!
//! After a fault and a restart, [`Model::check_exact`] demands every acknowledged operation
//! (the unacknowledged one may show either way), and [`Model::check_prefix`] demands that what
//! survived is the effect of a prefix of each writer's operations: nothing older is missing
//! where something newer is present.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kvs::protocol::{ErrorKind, Request, Response};

use super::native::NativeConn;

/// splitmix64: a small, well-mixed, seedable sequence.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// One operation of a writer's sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Set(String, Bytes),
    Remove(String),
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Set(k, _) | Op::Remove(k) => k,
        }
    }
}

/// What the server answered to an operation it acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Set,
    Removed,
    /// A remove answered "not found": the key was absent at that moment.
    Absent,
}

/// The shape of a workload, shared by the writers and the checks.
#[derive(Clone, Debug)]
pub struct Workload {
    pub writers: usize,
    pub keys_per_writer: usize,
    /// The store's partition count; writer `w` uses keys of partition `w % partitions`.
    pub partitions: u32,
    pub value_bytes_max: u64,
    pub seed: u64,
}

impl Workload {
    /// The keys of writer `w`: all in partition `w % partitions` (the store's partition
    /// function is `crc32c(key) % partitions`, docs/format.md).
    pub fn keys(&self, w: usize) -> Vec<String> {
        let want = w as u32 % self.partitions;
        (0u64..)
            .map(|j| format!("w{w}-k{j}"))
            .filter(|k| crc32c::crc32c(k.as_bytes()) % self.partitions == want)
            .take(self.keys_per_writer)
            .collect()
    }

    /// Operation `i` of writer `w`.
    pub fn op(&self, keys: &[String], w: usize, i: u64) -> Op {
        let h = mix(self.seed ^ mix(w as u64) ^ i.wrapping_mul(0x2545_f491_4f6c_dd1d));
        let key = keys[(h % keys.len() as u64) as usize].clone();
        if (h >> 20).is_multiple_of(5) {
            return Op::Remove(key);
        }
        let len = ((h >> 32) % self.value_bytes_max.max(1)) as usize;
        let mut value = format!("w{w}-op{i}:").into_bytes();
        // Never a zero byte, so a value never ends like preallocated space.
        value.extend((0..len).map(|j| 1 + ((i as usize + j * 7) % 250) as u8));
        Op::Set(key, Bytes::from(value))
    }
}

/// What one writer saw in one run.
#[derive(Debug, Default)]
pub struct WriterLog {
    /// Acknowledged operations, in order, with when the acknowledgement arrived.
    pub acked: Vec<(u64, Outcome, Instant)>,
    /// The operation sent last and not acknowledged, if any: it may or may not have landed.
    pub unacked: Option<u64>,
    /// The error response that stopped the writer, if one did.
    pub refused: Option<(ErrorKind, String)>,
}

/// Writers running against a server; each sends an event per acknowledgement.
pub struct Writers {
    threads: Vec<std::thread::JoinHandle<WriterLog>>,
    acks: mpsc::Receiver<usize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub acked_total: u64,
}

impl Writers {
    /// Starts one thread per writer; writer `w` begins at operation `start[w]`.
    pub fn start(addr: SocketAddr, load: &Workload, start: &[u64]) -> Writers {
        let (tx, acks) = mpsc::channel();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..load.writers)
            .map(|w| {
                let (load, tx, stop, first) = (load.clone(), tx.clone(), stop.clone(), start[w]);
                std::thread::spawn(move || run_writer(addr, &load, w, first, &tx, &stop))
            })
            .collect();
        Writers {
            threads,
            acks,
            stop,
            acked_total: 0,
        }
    }

    /// Waits until `n` operations in all have been acknowledged since the start. `false` if
    /// every writer stopped first; panics if nothing is acknowledged for `quiet` at a time.
    pub fn wait_acks(&mut self, n: u64, quiet: Duration) -> bool {
        while self.acked_total < n {
            match self.acks.recv_timeout(quiet) {
                Ok(_) => self.acked_total += 1,
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "no acknowledgement for {quiet:?} after {}",
                        self.acked_total
                    )
                }
            }
        }
        true
    }

    /// Waits (at most `within`) for every writer to stop by itself; true if they all did.
    pub fn wait_stopped(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.acks.recv_timeout(left) {
                Ok(_) => self.acked_total += 1,
                Err(mpsc::RecvTimeoutError::Disconnected) => return true,
                Err(mpsc::RecvTimeoutError::Timeout) => return false,
            }
        }
    }

    /// Tells the writers to stop after their current operation (used when the server stays
    /// up) and collects their logs. With the server killed they stop on their own.
    pub fn finish(self) -> Vec<WriterLog> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.threads
            .into_iter()
            .map(|t| t.join().expect("writer thread"))
            .collect()
    }
}

fn run_writer(
    addr: SocketAddr,
    load: &Workload,
    w: usize,
    first: u64,
    acks: &mpsc::Sender<usize>,
    stop: &std::sync::atomic::AtomicBool,
) -> WriterLog {
    let keys = load.keys(w);
    let mut log = WriterLog::default();
    let Ok(mut conn) = NativeConn::try_connect(addr) else {
        return log;
    };
    for i in first.. {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        let op = load.op(&keys, w, i);
        let req = match &op {
            Op::Set(k, v) => Request::Set {
                key: Bytes::copy_from_slice(k.as_bytes()),
                value: v.clone(),
            },
            Op::Remove(k) => Request::Remove {
                key: Bytes::copy_from_slice(k.as_bytes()),
            },
        };
        let outcome = match (conn.try_call(&req), &op) {
            (Ok(Response::Ok), Op::Set(..)) => Outcome::Set,
            (Ok(Response::Ok), Op::Remove(_)) => Outcome::Removed,
            (Ok(Response::NotFound), Op::Remove(_)) => Outcome::Absent,
            (Ok(Response::Error { kind, message }), _) => {
                log.unacked = Some(i);
                log.refused = Some((kind, message));
                break;
            }
            (Ok(other), _) => panic!("writer {w} op {i}: unexpected answer {other:?}"),
            (Err(_), _) => {
                log.unacked = Some(i);
                break;
            }
        };
        log.acked.push((i, outcome, Instant::now()));
        let _ = acks.send(w);
    }
    log
}

/// Reads every key of every writer over one connection (pipelined); `Err` names a key whose
/// read failed.
pub fn read_all(addr: SocketAddr, load: &Workload) -> Result<Vec<BTreeMap<String, Bytes>>, String> {
    let mut conn = NativeConn::connect(addr);
    let keys: Vec<Vec<String>> = (0..load.writers).map(|w| load.keys(w)).collect();
    let reqs: Vec<Request> = keys
        .iter()
        .flatten()
        .map(|k| Request::Get {
            key: Bytes::copy_from_slice(k.as_bytes()),
        })
        .collect();
    conn.send(&reqs);
    let mut out = Vec::new();
    for ks in &keys {
        let mut state = BTreeMap::new();
        for k in ks {
            match conn.recv() {
                Some(Response::Value(Some(v))) => {
                    state.insert(k.clone(), v);
                }
                Some(Response::Value(None)) => {}
                other => return Err(format!("get {k}: {other:?}")),
            }
        }
        out.push(state);
    }
    Ok(out)
}

/// What a check found, summed over writers.
#[derive(Debug, Default, Clone, Copy)]
pub struct Checked {
    /// Acknowledged operations checked.
    pub acked: u64,
    /// Unacknowledged operations found done.
    pub unacked_landed: u64,
    /// Acknowledged operations found missing (allowed only by [`Model::check_prefix`]).
    pub lost: u64,
    /// Of the lost ones, those acknowledged before the fault began (the others were
    /// acknowledged while it was under way, racing it).
    pub lost_acked_before_fault: u64,
    /// The oldest acknowledgement, relative to the fault, among the lost operations.
    pub lost_oldest_before_fault: Option<Duration>,
}

/// The expected state of every writer's keys, carried from run to run.
pub struct Model {
    pub load: Workload,
    keys: Vec<Vec<String>>,
    pub state: Vec<BTreeMap<String, Bytes>>,
    /// The next operation of each writer.
    pub next: Vec<u64>,
}

impl Model {
    pub fn new(load: &Workload) -> Model {
        Model {
            keys: (0..load.writers).map(|w| load.keys(w)).collect(),
            state: vec![BTreeMap::new(); load.writers],
            next: vec![0; load.writers],
            load: load.clone(),
        }
    }

    /// Applies writer `w`'s operation `i` with its acknowledged outcome to `state`; `Err` if
    /// the outcome contradicts the state (a remove of a key the model says is absent).
    fn apply(
        &self,
        state: &mut BTreeMap<String, Bytes>,
        w: usize,
        i: u64,
        outcome: Outcome,
    ) -> Result<(), String> {
        match (self.load.op(&self.keys[w], w, i), outcome) {
            (Op::Set(k, v), Outcome::Set) => {
                state.insert(k, v);
            }
            (Op::Remove(k), Outcome::Removed) => {
                if state.remove(&k).is_none() {
                    return Err(format!("writer {w} op {i} removed {k}, which was absent"));
                }
            }
            (Op::Remove(k), Outcome::Absent) => {
                if state.contains_key(&k) {
                    return Err(format!(
                        "writer {w} op {i}: {k} was present but reported absent"
                    ));
                }
            }
            (op, outcome) => {
                return Err(format!("writer {w} op {i} is {op:?}, answered {outcome:?}"))
            }
        }
        Ok(())
    }

    /// The state after the unacknowledged operation `i`, had it landed.
    fn landed(&self, state: &BTreeMap<String, Bytes>, w: usize, i: u64) -> BTreeMap<String, Bytes> {
        let mut s = state.clone();
        match self.load.op(&self.keys[w], w, i) {
            Op::Set(k, v) => {
                s.insert(k, v);
            }
            Op::Remove(k) => {
                s.remove(&k);
            }
        }
        s
    }

    fn check_order(&self, w: usize, log: &WriterLog) -> Result<(), String> {
        for (want, (i, ..)) in (self.next[w]..).zip(&log.acked) {
            if *i != want {
                return Err(format!("writer {w}: ledger jumps from op {want} to {i}"));
            }
        }
        Ok(())
    }

    /// Every acknowledged operation must be there; each writer's unacknowledged one may show
    /// either way. Adopts what was found, and moves each writer past its unacknowledged op.
    pub fn check_exact(
        &mut self,
        logs: &[WriterLog],
        found: &[BTreeMap<String, Bytes>],
        fault: Option<Instant>,
    ) -> Result<Checked, String> {
        let mut c = Checked::default();
        for (w, log) in logs.iter().enumerate() {
            self.check_order(w, log)?;
            let mut want = self.state[w].clone();
            for (i, outcome, _) in &log.acked {
                self.apply(&mut want, w, *i, *outcome)?;
                c.acked += 1;
            }
            if found[w] != want {
                let landed = log.unacked.map(|i| self.landed(&want, w, i));
                if landed.as_ref() != Some(&found[w]) {
                    let mut msg = describe(w, &want, &found[w]);
                    if let (Some(fault), Some((i, _, t))) = (fault, log.acked.last()) {
                        let rel = if *t > fault {
                            format!("{:?} after", *t - fault)
                        } else {
                            format!("{:?} before", fault - *t)
                        };
                        msg.push_str(&format!(
                            " (its last acknowledgement, op {i}, came {rel} the fault)"
                        ));
                    }
                    return Err(msg);
                }
                c.unacked_landed += 1;
            }
            self.advance(w, log, found[w].clone());
        }
        Ok(c)
    }

    /// What was found must be the state after some prefix of each writer's operations (the
    /// unacknowledged one counts as the last); acknowledged operations after the prefix are
    /// counted as lost, with how many of them were acknowledged before `fault` began and how
    /// long before it the oldest was.
    pub fn check_prefix(
        &mut self,
        logs: &[WriterLog],
        found: &[BTreeMap<String, Bytes>],
        fault: Instant,
    ) -> Result<Checked, String> {
        let mut c = Checked::default();
        for (w, log) in logs.iter().enumerate() {
            self.check_order(w, log)?;
            let mut states = vec![self.state[w].clone()];
            for (i, outcome, _) in &log.acked {
                let mut s = states.last().expect("one state at least").clone();
                self.apply(&mut s, w, *i, *outcome)?;
                states.push(s);
                c.acked += 1;
            }
            let all = log.acked.len();
            let kept = if let Some(u) = log.unacked {
                let s = self.landed(&states[all], w, u);
                (found[w] == s).then_some(all + 1)
            } else {
                None
            };
            let kept = kept
                .or_else(|| (0..=all).rev().find(|&k| states[k] == found[w]))
                .ok_or_else(|| {
                    format!(
                        "writer {w}: what survived is no prefix of its operations (a hole); {}",
                        describe(w, &states[all], &found[w])
                    )
                })?;
            if kept > all {
                c.unacked_landed += 1;
            } else if kept < all {
                c.lost += (all - kept) as u64;
                c.lost_acked_before_fault += log.acked[kept..]
                    .iter()
                    .filter(|(.., t)| *t < fault)
                    .count() as u64;
                let first_lost = log.acked[kept].2;
                let age = fault.saturating_duration_since(first_lost);
                c.lost_oldest_before_fault =
                    Some(c.lost_oldest_before_fault.map_or(age, |a| a.max(age)));
            }
            self.advance(w, log, found[w].clone());
        }
        Ok(c)
    }

    /// Checks that every key holds what its writer's acknowledged operations left there, or
    /// what the operation it was refused left (a refused write may have landed). For faults
    /// that strike each writer at its own moment, where there is no single cut to check a
    /// prefix against. Returns the number of acknowledged operations checked.
    pub fn check_each_writer_kept(
        &mut self,
        logs: &[WriterLog],
        found: &[BTreeMap<String, Bytes>],
    ) -> Result<u64, String> {
        let mut acked = 0;
        let mut lost = Vec::new();
        for (w, log) in logs.iter().enumerate() {
            self.check_order(w, log)?;
            let mut want = self.state[w].clone();
            for (i, outcome, _) in &log.acked {
                self.apply(&mut want, w, *i, *outcome)?;
                acked += 1;
            }
            let landed = log.unacked.map(|i| self.landed(&want, w, i));
            for k in &self.keys[w] {
                let got = found[w].get(k);
                if want.get(k) != got && landed.as_ref().is_none_or(|l| l.get(k) != got) {
                    lost.push(format!(
                        "writer {w}: {k} holds {}, acknowledged {}",
                        short(got),
                        short(want.get(k))
                    ));
                }
            }
            self.advance(w, log, found[w].clone());
        }
        if lost.is_empty() {
            Ok(acked)
        } else {
            Err(format!(
                "{} keys do not hold their last acknowledged value: {}",
                lost.len(),
                lost.join("; ")
            ))
        }
    }

    fn advance(&mut self, w: usize, log: &WriterLog, found: BTreeMap<String, Bytes>) {
        self.state[w] = found;
        // Skip the unacknowledged operation: every value then names one operation.
        self.next[w] = match (log.unacked, log.acked.last()) {
            (Some(u), _) => u + 1,
            (None, Some((i, ..))) => i + 1,
            (None, None) => self.next[w],
        };
    }
}

fn short(v: Option<&Bytes>) -> String {
    match v {
        None => "absent".into(),
        Some(v) => {
            let s = String::from_utf8_lossy(&v[..v.len().min(24)]);
            let end = s.find(':').map_or(s.len(), |i| i + 1);
            format!("{:?} ({} bytes)", &s[..end], v.len())
        }
    }
}

fn describe(w: usize, want: &BTreeMap<String, Bytes>, found: &BTreeMap<String, Bytes>) -> String {
    let keys: std::collections::BTreeSet<&String> = want.keys().chain(found.keys()).collect();
    let mut diffs = Vec::new();
    for k in keys {
        if want.get(k) != found.get(k) {
            diffs.push(format!(
                "{k}: acknowledged {}, found {}",
                short(want.get(k)),
                short(found.get(k))
            ));
        }
    }
    format!("writer {w}: {}", diffs.join("; "))
}
