//! Filesystems for fault tests: tmpfs mounts, ext4 images on loop devices, and the ext4
//! shutdown ioctl that cuts a filesystem off from its disk the way a power cut does. Each
//! needs root; [`skip`] says so on the real stderr when it cannot be done here.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Writes `skipped: <reason>` to the real stderr (libtest does not capture it).
pub fn skip(reason: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "skipped: {reason}");
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A mount this test made; unmounted on drop (lazily if it is busy).
pub struct Mount {
    pub at: PathBuf,
    mounted: bool,
}

impl Mount {
    /// Unmounts, retrying for a while while the filesystem is busy: a killed process's
    /// io_uring instance is torn down after the process is reaped, and holds its files until
    /// then.
    pub fn unmount(&mut self) -> Result<(), String> {
        if !self.mounted {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match run(Command::new("umount").arg(&self.at)) {
                Ok(()) => break,
                Err(e) if e.contains("busy") && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(e),
            }
        }
        self.mounted = false;
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted && self.unmount().is_err() {
            let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        }
    }
}

/// Mounts a tmpfs of `size` (`"4m"`) at `at`, which must exist.
pub fn tmpfs(at: &Path, size: &str) -> Result<Mount, String> {
    run(Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "kvs-test",
        ])
        .arg(at))?;
    Ok(Mount {
        at: at.to_owned(),
        mounted: true,
    })
}

/// Remounts a mount with other options (`"ro"`, `"size=64m"`).
pub fn remount(m: &Mount, opts: &str) -> Result<(), String> {
    run(Command::new("mount")
        .args(["-o", &format!("remount,{opts}")])
        .arg(&m.at))
}

/// An ext4 filesystem in a sparse image file, mounted through a loop device.
pub struct Ext4 {
    pub image: PathBuf,
    pub mount: Mount,
}

impl Ext4 {
    /// Makes an ext4 image of `size_mib` MiB at `image` and mounts it at `at`.
    pub fn create(image: &Path, size_mib: u64, at: &Path) -> Result<Ext4, String> {
        let f = std::fs::File::create(image).map_err(|e| format!("create {image:?}: {e}"))?;
        f.set_len(size_mib << 20)
            .map_err(|e| format!("size {image:?}: {e}"))?;
        drop(f);
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(image))?;
        std::fs::create_dir_all(at).map_err(|e| format!("mkdir {at:?}: {e}"))?;
        let mut fs = Ext4 {
            image: image.to_owned(),
            mount: Mount {
                at: at.to_owned(),
                mounted: false,
            },
        };
        fs.mount()?;
        Ok(fs)
    }

    pub fn mount(&mut self) -> Result<(), String> {
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", "loop"])
            .arg(&self.image)
            .arg(&self.mount.at))?;
        self.mount.mounted = true;
        Ok(())
    }

    pub fn unmount(&mut self) -> Result<(), String> {
        self.mount.unmount()
    }

    /// Checks the unmounted filesystem and repairs what it finds (`e2fsck -fy`); `Err` only
    /// if it could not be repaired.
    pub fn fsck(&self) -> Result<(), String> {
        let out = Command::new("e2fsck")
            .args(["-f", "-y"])
            .arg(&self.image)
            .output()
            .map_err(|e| format!("cannot run e2fsck: {e}"))?;
        // 0: clean, 1: errors corrected.
        match out.status.code() {
            Some(0 | 1) => Ok(()),
            _ => Err(format!(
                "e2fsck failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim()
            )),
        }
    }

    /// Cuts the filesystem off from its disk, without flushing its journal: from now on every
    /// write, fsync and uncached read on it fails with EIO, and what had not reached the disk
    /// is lost when it is mounted again, as after a power cut.
    pub fn cut_power(&self) -> Result<(), String> {
        shutdown_without_log_flush(&self.mount.at)
    }
}

/// `EXT4_IOC_SHUTDOWN`, `_IOR('X', 125, __u32)` in `fs/ext4/ext4.h`.
const EXT4_IOC_SHUTDOWN: u32 = 0x8004_587d;
/// `EXT4_GOING_FLAGS_NOLOGFLUSH`: shut down without flushing the journal.
const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 0x2;

fn shutdown_without_log_flush(mounted_at: &Path) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let dir = std::fs::File::open(mounted_at).map_err(|e| format!("open {mounted_at:?}: {e}"))?;
    let flags: u32 = EXT4_GOING_FLAGS_NOLOGFLUSH;
    // SAFETY: EXT4_IOC_SHUTDOWN reads one u32 (the flags) through its pointer argument and
    // keeps no reference to it; `flags` lives on the stack for the whole call, and `dir` is an
    // open descriptor for the duration of the call. The ioctl touches no other memory of ours.
    let r = unsafe {
        libc::ioctl(
            dir.as_raw_fd(),
            EXT4_IOC_SHUTDOWN as _,
            &flags as *const u32,
        )
    };
    if r != 0 {
        return Err(format!(
            "EXT4_IOC_SHUTDOWN on {mounted_at:?}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Why filesystem tests cannot run here, if they cannot: they need root, `mount`,
/// `mkfs.ext4` and loop devices.
pub fn cannot_mount_here() -> Option<String> {
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root to mount filesystems".into());
    }
    for tool in ["mount", "umount", "mkfs.ext4", "e2fsck"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            return Some(format!("needs {tool}, which is not installed"));
        }
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("needs loop devices (/dev/loop-control is missing)".into());
    }
    None
}

/// Reports segments that compaction wrote in a store's partition directories, and whether a
/// compaction was cut short there (its manifest or a `.hint.tmp` output remains).
pub fn compaction_traces(store: &Path) -> (usize, bool) {
    let (mut outputs, mut interrupted) = (0, false);
    let Ok(parts) = std::fs::read_dir(store) else {
        return (0, false);
    };
    for part in parts.flatten() {
        let part = part.path();
        if !part.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&part).into_iter().flatten().flatten() {
            let f = f.path();
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if name == "compact.manifest" || name.ends_with(".hint.tmp") {
                interrupted = true;
            }
            if f.extension().is_some_and(|x| x == "seg") {
                let mut head = [0u8; 16];
                let read = std::fs::File::open(&f)
                    .and_then(|mut h| std::io::Read::read_exact(&mut h, &mut head));
                // The segment header's origin field: 1 is compaction (docs/format.md).
                if read.is_ok() && head[12..16] == 1u32.to_le_bytes() {
                    outputs += 1;
                }
            }
        }
    }
    (outputs, interrupted)
}
