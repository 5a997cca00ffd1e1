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
    /// Declared before `device`: unmounted before the device is detached.
    pub mount: Mount,
    /// The loop device while mounted.
    device: Option<LoopDevice>,
}

/// The test images' block size: the page size, so that every I/O to the device is
/// page-aligned (see [`one_page_requests`]).
const BLOCK_BYTES: u64 = 4096;

impl Ext4 {
    /// Makes an ext4 image of `size_mib` MiB at `image` and mounts it at `at`.
    pub fn create(image: &Path, size_mib: u64, at: &Path) -> Result<Ext4, String> {
        let f = std::fs::File::create(image).map_err(|e| format!("create {image:?}: {e}"))?;
        f.set_len(size_mib << 20)
            .map_err(|e| format!("size {image:?}: {e}"))?;
        drop(f);
        // A 4 MiB journal, allocated in the image: on a thin backing store the filesystem's
        // own log then keeps working when its data writes fail.
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", &BLOCK_BYTES.to_string(), "-J", "size=4"])
            .arg(image))?;
        allocate_journal(image)?;
        std::fs::create_dir_all(at).map_err(|e| format!("mkdir {at:?}: {e}"))?;
        let mut fs = Ext4 {
            image: image.to_owned(),
            mount: Mount {
                at: at.to_owned(),
                mounted: false,
            },
            device: None,
        };
        fs.mount()?;
        Ok(fs)
    }

    /// Mounts the image through a loop device of its own, limited to one page per request.
    pub fn mount(&mut self) -> Result<(), String> {
        let device = LoopDevice::attach(&self.image)?;
        one_page_requests(device.name())?;
        run(Command::new("mount")
            .args(["-t", "ext4", &device.path])
            .arg(&self.mount.at))?;
        self.mount.mounted = true;
        self.device = Some(device);
        Ok(())
    }

    /// Unmounts, and detaches the loop device.
    pub fn unmount(&mut self) -> Result<(), String> {
        self.mount.unmount()?;
        self.device = None;
        Ok(())
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

/// Allocates the blocks of the journal of the unmounted ext4 `image` in the image file (mkfs
/// leaves them as holes in a sparse file).
fn allocate_journal(image: &Path) -> Result<(), String> {
    let out = Command::new("debugfs")
        .args(["-R", "stat <8>"])
        .arg(image)
        .output()
        .map_err(|e| format!("cannot run debugfs: {e}"))?;
    let stat = String::from_utf8_lossy(&out.stdout);
    let extents = stat
        .split_once("EXTENTS:")
        .map(|(_, e)| e.trim())
        .ok_or_else(|| format!("no journal extents in debugfs's answer: {stat}"))?;
    // "(0-9):23-32, (10-24):34-48, (25-1023):306-1304": logical, then physical blocks.
    for extent in extents.split(", ") {
        let physical = extent.split_once(':').map_or("", |(_, p)| p);
        let (first, last) = physical.split_once('-').unwrap_or((physical, physical));
        let (Ok(first), Ok(last)) = (first.trim().parse::<u64>(), last.trim().parse::<u64>())
        else {
            return Err(format!("cannot read the journal extent {extent:?}"));
        };
        run(Command::new("fallocate")
            .args(["-o", &(first * BLOCK_BYTES).to_string()])
            .args(["-l", &((last - first + 1) * BLOCK_BYTES).to_string()])
            .arg(image))?;
    }
    Ok(())
}

/// Limits the loop device `dev` (`"loop0"`) to one page per request.
///
/// The loop driver of recent kernels (seen on 6.18) completes a write successfully when its
/// backing file took only part of it: it treats a short transfer as an error for reads only.
/// An image on a backing store that runs out of room then drops the end of a multi-page write
/// and reports it written, and a store on it loses data that fdatasync reported durable.
/// With one page-aligned page per request (a filesystem of 4 KiB blocks) a write either lands
/// whole or fails with ENOSPC, as on a real disk. `tests/disk_faults.rs` checks both.
pub fn one_page_requests(dev: &str) -> Result<(), String> {
    set_max_request_kib(dev, Some(4))
}

/// Sets the largest request the block device `dev` takes; `None` for the most its driver
/// allows (a loop device keeps the setting from its last use).
pub fn set_max_request_kib(dev: &str, kib: Option<u32>) -> Result<(), String> {
    let queue = format!("/sys/block/{dev}/queue");
    let kib = match kib {
        Some(kib) => kib.to_string(),
        None => std::fs::read_to_string(format!("{queue}/max_hw_sectors_kb"))
            .map_err(|e| format!("cannot read {queue}/max_hw_sectors_kb: {e}"))?,
    };
    let knob = format!("{queue}/max_sectors_kb");
    std::fs::write(&knob, kib.trim()).map_err(|e| format!("cannot set {knob}: {e}"))
}

/// A loop device over an image file; detached on drop.
pub struct LoopDevice {
    /// `/dev/loopN`.
    pub path: String,
}

impl LoopDevice {
    pub fn attach(image: &Path) -> Result<LoopDevice, String> {
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(image)
            .output()
            .map_err(|e| format!("cannot run losetup: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "losetup {image:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Ok(LoopDevice { path })
    }

    /// `loopN`.
    pub fn name(&self) -> &str {
        self.path.trim_start_matches("/dev/")
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
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
/// e2fsprogs, util-linux and loop devices.
pub fn cannot_mount_here() -> Option<String> {
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root to mount filesystems".into());
    }
    let tools = [
        "mount",
        "umount",
        "mkfs.ext4",
        "e2fsck",
        "debugfs",
        "fallocate",
        "losetup",
        "dd",
    ];
    for tool in tools {
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
