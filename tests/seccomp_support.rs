//! Proves that `support::seccomp::deny_io_uring` really takes io_uring away from a child
//! process, and that nothing else does: the same child, spawned without the filter, sets up a
//! ring. Tests that run the fallback backend rely on both halves.
//!
//! The child is this test binary run again with `CHILD_ENV` set, which makes the ignored test
//! `child_reports_io_uring_setup` try to set up a ring and exit with a code that says how it
//! went.

mod support;

use std::io::Write;
use std::process::{Command, Output};

/// Set in the child's environment to make `child_reports_io_uring_setup` do its work.
const CHILD_ENV: &str = "KVS_TEST_SECCOMP_CHILD";
const CHILD_TEST: &str = "child_reports_io_uring_setup";

// Exit codes of the child, away from 0 (no test ran), 1 and 101 (panics, harness errors).
const EXIT_RING_OK: i32 = 40;
const EXIT_EPERM: i32 = 41;
const EXIT_ENOSYS: i32 = 42;
const EXIT_ENOMEM: i32 = 43;
const EXIT_OTHER_ERROR: i32 = 44;

/// The child side. Ignored in a normal run; the parent tests run it with `--ignored`.
#[test]
#[ignore = "runs only as the child process of the other tests in this file"]
fn child_reports_io_uring_setup() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    // The parent reads this line (libtest may print its own text before it on the same line).
    println!("child: {}", seccomp_status());
    let code = match io_uring::IoUring::new(8) {
        Ok(_) => EXIT_RING_OK,
        Err(e) => {
            println!("child: io_uring_setup failed: {e}");
            match e.raw_os_error() {
                Some(libc::EPERM) => EXIT_EPERM,
                Some(libc::ENOSYS) => EXIT_ENOSYS,
                Some(libc::ENOMEM) => EXIT_ENOMEM,
                _ => EXIT_OTHER_ERROR,
            }
        }
    };
    std::io::stdout().flush().ok();
    std::process::exit(code);
}

#[test]
fn deny_io_uring_makes_ring_setup_fail_with_eperm() {
    // Guards against a filter that installs but matches nothing (wrong offset, arch or number).
    let mut cmd = child_command();
    support::seccomp::deny_io_uring(&mut cmd);
    let out = cmd.output().expect("spawn the test binary as a child");
    assert_eq!(
        out.status.code(),
        Some(EXIT_EPERM),
        "the filtered child should see EPERM from io_uring_setup\n{}",
        describe(&out)
    );
    // EPERM alone could come from the machine itself (a container profile or the
    // kernel.io_uring_disabled sysctl); one more filter than this process has shows it was ours.
    let Some(parent) = seccomp_filter_count() else {
        skip("the kernel (before 5.9) does not report Seccomp_filters; count not checked");
        return;
    };
    let child = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| line.split_once("child: Seccomp_filters=").map(|(_, n)| n))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or_else(|| panic!("the child did not report its filters\n{}", describe(&out)));
    assert_eq!(
        child,
        parent + 1,
        "the child should run under exactly one more filter"
    );
}

#[test]
fn child_without_the_filter_sets_up_a_ring() {
    // Guards against the EPERM above coming from something other than the filter.
    if let Err(e) = io_uring::IoUring::new(8) {
        skip(&format!(
            "this machine refuses io_uring ({e}), so there is no unfiltered control to compare"
        ));
        return;
    }
    let out = child_command()
        .output()
        .expect("spawn the test binary as a child");
    assert_eq!(
        out.status.code(),
        Some(EXIT_RING_OK),
        "the unfiltered child should set up a ring\n{}",
        describe(&out)
    );
}

#[test]
fn filter_leaves_other_system_calls_alone() {
    // Guards against a filter that denies more than io_uring_setup: a child under it must
    // still start, read files, and exit normally.
    let mut cmd = Command::new("/bin/cat");
    cmd.arg("/proc/self/status");
    support::seccomp::deny_io_uring(&mut cmd);
    let out = cmd.output().expect("spawn cat under the filter");
    assert!(
        out.status.success(),
        "cat failed under the filter\n{}",
        describe(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Seccomp:\t2"));
}

/// This test binary, told to run only the child test.
fn child_command() -> Command {
    let exe = std::env::current_exe().expect("path of the running test binary");
    let mut cmd = Command::new(exe);
    cmd.args([
        CHILD_TEST,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, "1");
    cmd
}

/// `Seccomp_filters=N` for this process, or a note that the kernel does not say.
fn seccomp_status() -> String {
    match seccomp_filter_count() {
        Some(n) => format!("Seccomp_filters={n}"),
        None => "Seccomp_filters unknown".to_owned(),
    }
}

/// The number of seccomp filters on this process (`/proc/self/status`, Linux 5.9 and later).
fn seccomp_filter_count() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Seccomp_filters:"))
        .and_then(|n| n.trim().parse().ok())
}

fn describe(out: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Says why a test did not run, on the real stderr: libtest captures `eprintln!` but not a
/// direct write, so the reason shows in a passing run too.
fn skip(reason: &str) {
    let _ = writeln!(std::io::stderr(), "skipped: {reason}");
}
