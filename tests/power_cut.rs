//! Power cuts under the real `kvs-server`: its data directory is on an ext4 filesystem in a
//! loop-mounted image; while writers with a ledger run, the filesystem is shut down without
//! flushing its journal (`EXT4_IOC_SHUTDOWN`, `EXT4_GOING_FLAGS_NOLOGFLUSH`), which is what
//! the disk holds after a power cut. Then the server is killed, the filesystem unmounted and
//! mounted again (the journal replays), the server restarted and the ledger checked.
//!
//! - `--fsync always`: no acknowledged write may be missing.
//! - `--fsync 50ms`: only the newest writes may be missing, those acknowledged within the
//!   interval before the cut, and never with a hole: what survives of each writer's
//!   operations is a prefix of them (each writer's keys live in one partition, one log).
//!
//! The normal suite runs a few cuts of each; `ci/power-cut.sh --cuts 100` runs the long one:
//! `KVS_POWER_CUTS=100 cargo test --test power_cut power_cut_long -- --ignored --nocapture`.
//! They need root, mount, mkfs.ext4 and loop devices, and say so where they cannot run.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::fs::{cannot_mount_here, skip, Ext4};
use support::ledger::{mix, read_all, Model, Workload, WriterLog, Writers};
use support::server::{io_backends, ServerBuilder};

const SEED: u64 = 0x6b76_735f_706f_7772;
const PARTITIONS: u32 = 4;
const SEGMENT_BYTES: u64 = 64 * 1024;
const IMAGE_MIB: u64 = 128;
/// The interval policy under test.
const INTERVAL: Duration = Duration::from_millis(50);
/// Beyond the interval, how much older than the cut a lost write may be: the sync runs when
/// the writer loop is idle, takes its own time, and the machine is shared.
const INTERVAL_SLACK: Duration = Duration::from_secs(1);
const QUIET: Duration = Duration::from_secs(20);

fn workload(seed: u64) -> Workload {
    Workload {
        writers: 4,
        keys_per_writer: 24,
        partitions: PARTITIONS,
        value_bytes_max: 2048,
        seed,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Policy {
    Always,
    Interval,
}

impl Policy {
    fn flag(self) -> String {
        match self {
            Policy::Always => "always".into(),
            Policy::Interval => format!("{}ms", INTERVAL.as_millis()),
        }
    }
}

#[derive(Default, Debug)]
struct Figures {
    cuts: u64,
    acked: u64,
    /// Acknowledgements that arrived before the cut began.
    acked_before_cut: u64,
    lost: u64,
    /// Under `always`: lost writes whose acknowledgement came while the cut was under way.
    lost_racing_the_cut: u64,
    unacked_landed: u64,
    /// Cuts after which at least one writer had been refused with ReadOnly.
    refused_read_only: u64,
    lost_oldest: Option<Duration>,
    /// Segments that open found under a pending name (a background seal cut short) and kept,
    /// or dropped because the segment before them had lost its end.
    pending_kept: u64,
    pending_dropped: u64,
}

fn power_cuts(cuts: u64, policy: Policy, seed: u64) -> Option<Figures> {
    if let Some(reason) = cannot_mount_here() {
        skip(&format!("power cuts: {reason}"));
        return None;
    }
    let started = Instant::now();
    let base = tempfile::tempdir().unwrap();
    let mut fs = match Ext4::create(
        &base.path().join("disk.img"),
        IMAGE_MIB,
        &base.path().join("mnt"),
    ) {
        Ok(fs) => fs,
        Err(e) => {
            skip(&format!(
                "power cuts: cannot make an ext4 image on a loop device: {e}"
            ));
            return None;
        }
    };
    let store = fs.mount.at.join("store");
    let backends = io_backends();
    let load = workload(seed);
    let mut model = Model::new(&load);
    let mut fig = Figures::default();
    let mut rng = seed;
    let mut pending: Option<(String, Vec<WriterLog>, Instant)> = None;
    for cut in 0..=cuts {
        let io = backends[cut as usize % backends.len()];
        let server = builder(&store, io, policy).start();
        if let Some((what, logs, at)) = pending.take() {
            let found = read_all(server.addr, &load)
                .unwrap_or_else(|e| panic!("after {what}: {e}\nlog:\n{}", server.log()));
            let c = model
                .check_prefix(&logs, &found, at)
                .unwrap_or_else(|e| panic!("after {what}: {e}\nlog:\n{}", server.log()));
            fig.acked += c.acked;
            fig.acked_before_cut += logs
                .iter()
                .map(|l| l.acked.iter().filter(|(.., t)| *t < at).count() as u64)
                .sum::<u64>();
            fig.lost += c.lost;
            fig.unacked_landed += c.unacked_landed;
            let log = server.log();
            fig.pending_kept += log.matches("joins the log").count() as u64;
            fig.pending_dropped += log.matches("lost records from its end").count() as u64;
            if policy == Policy::Always {
                assert_eq!(
                    c.lost_acked_before_fault,
                    0,
                    "after {what}: {} writes acknowledged before the cut were lost\nlog:\n{}",
                    c.lost_acked_before_fault,
                    server.log()
                );
                fig.lost_racing_the_cut += c.lost;
            } else if let Some(age) = c.lost_oldest_before_fault {
                assert!(
                    age <= INTERVAL + INTERVAL_SLACK,
                    "after {what}: a write acknowledged {age:?} before the cut was lost"
                );
                fig.lost_oldest = Some(fig.lost_oldest.map_or(age, |a| a.max(age)));
            }
        }
        if cut == cuts {
            break;
        }
        rng = mix(rng);
        let cut_after = match policy {
            Policy::Always => 1 + (rng >> 16) % 150,
            Policy::Interval => 20 + (rng >> 16) % 600,
        };
        let what = format!(
            "cut {cut} ({io}, --fsync {}, after {cut_after} acks)",
            policy.flag()
        );
        let mut writers = Writers::start(server.addr, &load, &model.next);
        let reached = writers.wait_acks(cut_after, QUIET);
        let at = Instant::now();
        fs.cut_power().unwrap_or_else(|e| panic!("{what}: {e}"));
        // Let the writers meet the dead disk; the server answers, refusing writes.
        writers.wait_stopped(Duration::from_secs(5));
        let log = server.log();
        server.kill9();
        let logs = writers.finish();
        assert!(
            reached,
            "{what}: the writers stopped before the cut\nlog:\n{log}"
        );
        if logs
            .iter()
            .any(|l| matches!(&l.refused, Some((kvs::protocol::ErrorKind::ReadOnly, _))))
        {
            fig.refused_read_only += 1;
        }
        fs.unmount().unwrap_or_else(|e| panic!("{what}: {e}"));
        fs.mount()
            .unwrap_or_else(|e| panic!("{what}: remount: {e}"));
        fig.cuts += 1;
        pending = Some((what, logs, at));
    }
    let lost = match policy {
        Policy::Always => format!(
            "{} acknowledged before the cut began lost; {} acknowledged while it was under way \
             not found",
            fig.lost - fig.lost_racing_the_cut,
            fig.lost_racing_the_cut
        ),
        Policy::Interval => format!(
            "{} lost{}",
            fig.lost,
            fig.lost_oldest
                .map(|a| format!(", the oldest acknowledged {a:.0?} before its cut"))
                .unwrap_or_default()
        ),
    };
    println!(
        "power cuts (--fsync {}): {} cuts, {} acknowledged operations checked ({} of them \
         before the cut began), {lost}, {} unacknowledged found done, {} cuts answered with \
         ReadOnly before the kill, segments left under a pending name: {} kept, {} dropped; \
         backends {backends:?}, seed {seed:#x}, {:.1?}",
        policy.flag(),
        fig.cuts,
        fig.acked,
        fig.acked_before_cut,
        fig.unacked_landed,
        fig.refused_read_only,
        fig.pending_kept,
        fig.pending_dropped,
        started.elapsed()
    );
    Some(fig)
}

fn builder(store: &Path, io: &str, policy: Policy) -> ServerBuilder {
    ServerBuilder::new(store)
        .io(io)
        .args(["--fsync", &policy.flag(), "--cores", "2", "--no-pin"])
        .args(["--partitions", &PARTITIONS.to_string()])
        .args(["--segment-bytes", &SEGMENT_BYTES.to_string()])
        .args(["--cache-bytes", "65536"])
}

#[test]
fn power_cut_with_fsync_always_loses_no_acknowledged_write() {
    // Guards against an acknowledged write that lived only in the page cache, or a store that
    // does not reopen after what a power cut leaves on disk.
    power_cuts(5, Policy::Always, SEED);
}

#[test]
fn power_cut_with_fsync_interval_loses_only_the_newest_writes() {
    // Guards against the interval policy losing older writes than its interval, or leaving a
    // hole (an older write missing where a newer one of the same writer survived).
    power_cuts(6, Policy::Interval, SEED ^ 1);
}

#[test]
#[ignore = "the long run (minutes): ci/power-cut.sh"]
fn power_cut_long() {
    // Guards against rare cut moments that the short runs do not reach.
    let cuts: u64 = std::env::var("KVS_POWER_CUTS").map_or(100, |v| v.parse().unwrap());
    let seed: u64 = std::env::var("KVS_POWER_CUT_SEED").map_or(SEED, |v| v.parse().unwrap());
    let policies = match std::env::var("KVS_POWER_CUT_FSYNC").as_deref() {
        Ok("always") => vec![Policy::Always],
        Ok("interval") => vec![Policy::Interval],
        _ => vec![Policy::Always, Policy::Interval],
    };
    for p in policies {
        power_cuts(cuts, p, seed);
    }
}
