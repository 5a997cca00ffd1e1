//! Denies io_uring to a child process, the way Docker's default seccomp profile does, so tests
//! can run the epoll + blocking-pool fallback on a machine whose kernel allows io_uring.
//!
//! [`deny_io_uring`] installs, between `fork` and `exec`, a seccomp-BPF filter that makes
//! `io_uring_setup` fail with EPERM and allows every other system call. Without a ring file
//! descriptor `io_uring_enter` and `io_uring_register` have nothing to act on, so denying
//! setup denies io_uring as a whole.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// `io_uring_setup` in the generic system call table, which x86_64 and aarch64 share.
const NR_IO_URING_SETUP: u32 = 425;
/// The same call through the x32 ABI, which reports itself as x86_64.
const NR_IO_URING_SETUP_X32: u32 = 0x4000_0000 | NR_IO_URING_SETUP;
/// `AUDIT_ARCH_X86_64` from `linux/audit.h`: `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// `AUDIT_ARCH_AARCH64` from `linux/audit.h`: `EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;

const ARCH_OFFSET: u32 = std::mem::offset_of!(libc::seccomp_data, arch) as u32;
const NR_OFFSET: u32 = std::mem::offset_of!(libc::seccomp_data, nr) as u32;

/// Number of instructions in [`filter`].
const FILTER_LEN: usize = 8;

/// Makes `io_uring_setup` fail with EPERM in the process `cmd` spawns; every other system call,
/// and every call made through an ABI other than x86_64 (and x32) or aarch64, is allowed.
///
/// The filter is inherited by the child's own children and cannot be removed.
pub fn deny_io_uring(cmd: &mut Command) {
    // Built here, before the fork: the closure below runs in the forked child, where only
    // async-signal-safe work (no allocation, no locks) is allowed. It owns this array and
    // only makes two system calls.
    let mut program = filter();
    let hook = move || {
        let prog = libc::sock_fprog {
            len: FILTER_LEN as libc::c_ushort,
            filter: program.as_mut_ptr(),
        };
        // SAFETY: prctl is a plain system call, async-signal-safe, and so allowed between fork
        // and exec. PR_SET_NO_NEW_PRIVS takes an integer argument and touches no memory of
        // ours; it is required before an unprivileged process may install a filter.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `prog` points at `program`, FILTER_LEN valid instructions that outlive the
        // call; the kernel copies the program before prctl returns and keeps no pointer to it.
        let installed = unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            )
        };
        if installed != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: `pre_exec` requires the hook to be safe to run in a forked child of a possibly
    // multi-threaded process. It only builds a struct on the stack and calls prctl twice;
    // `io::Error::last_os_error` reads errno and does not allocate.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// The BPF program, in the order the kernel runs it.
fn filter() -> [libc::sock_filter; FILTER_LEN] {
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    const DENY: u32 = libc::SECCOMP_RET_ERRNO | (libc::EPERM as u32 & libc::SECCOMP_RET_DATA);
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

    // `jt` and `jf` count the instructions to skip after this one.
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    [
        /* 0 */ op(LD_W_ABS, 0, 0, ARCH_OFFSET),
        /* 1 */ op(JEQ_K, 1, 0, AUDIT_ARCH_X86_64), // to 3
        /* 2 */ op(JEQ_K, 0, 4, AUDIT_ARCH_AARCH64), // to 3, else to 7 (allow)
        /* 3 */ op(LD_W_ABS, 0, 0, NR_OFFSET),
        /* 4 */ op(JEQ_K, 1, 0, NR_IO_URING_SETUP), // to 6 (deny)
        /* 5 */ op(JEQ_K, 0, 1, NR_IO_URING_SETUP_X32), // to 6, else to 7
        /* 6 */ op(RET_K, 0, 0, DENY),
        /* 7 */ op(RET_K, 0, 0, ALLOW),
    ]
}
