//! One suite, two backends: every scenario runs against [`UringDisk`] inside a tokio-uring
//! runtime and against [`BlockingDisk`] inside a tokio current-thread runtime. Where io_uring
//! is unavailable the uring half prints why and skips.

use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use super::blocking::BlockingDisk;
use super::uring::{self, UringDisk};
use super::{Disk, DiskFile};

/// A scenario that takes longer than this has hung (a lost job, a lost wakeup).
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn run_on_uring<F, Fut>(scenario: F)
where
    F: FnOnce(UringDisk, PathBuf) -> Fut,
    Fut: Future<Output = ()>,
{
    let rt = match uring::probe().and_then(|()| uring::runtime()) {
        Ok(rt) => rt,
        Err(e) => {
            {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "skipped: io_uring is unavailable here: {e}"
                );
            };
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    rt.block_on(async move {
        tokio::time::timeout(SCENARIO_TIMEOUT, scenario(UringDisk, path))
            .await
            .expect("scenario hung");
    });
}

pub(crate) fn run_on_blocking<F, Fut>(scenario: F)
where
    F: FnOnce(BlockingDisk, PathBuf) -> Fut,
    Fut: Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let disk = BlockingDisk::with_threads(2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    // A LocalSet, as on a partition's owner thread (partitions spawn local tasks).
    tokio::task::LocalSet::new().block_on(&rt, async move {
        tokio::time::timeout(SCENARIO_TIMEOUT, scenario(disk, path))
            .await
            .expect("scenario hung");
    });
}

/// Declares each scenario once and a test per backend for it.
macro_rules! backend_tests {
    ($($(#[$meta:meta])* async fn $name:ident($disk:ident, $dir:ident) $body:block)*) => {
        $(
            $(#[$meta])*
            async fn $name<D: Disk>($disk: D, $dir: PathBuf) $body
        )*

        mod on_uring {
            $(
                $(#[$meta])*
                #[test]
                fn $name() {
                    super::run_on_uring(super::$name::<super::UringDisk>);
                }
            )*
        }

        mod on_blocking {
            $(
                $(#[$meta])*
                #[test]
                fn $name() {
                    super::run_on_blocking(super::$name::<super::BlockingDisk>);
                }
            )*
        }
    };
}

async fn write<F: DiskFile>(file: &F, data: &[u8], pos: u64) {
    let (result, _) = file.write_all_at(data.to_vec(), pos).await;
    result.unwrap();
}

async fn read<F: DiskFile>(file: &F, capacity: usize, pos: u64) -> Vec<u8> {
    let (result, buf) = file.read_at(Vec::with_capacity(capacity), pos).await;
    let n = result.unwrap();
    assert_eq!(
        n,
        buf.len(),
        "the returned count and the buffer length disagree"
    );
    buf
}

/// The kind of error opening `path` without `create` fails with.
async fn open_error<D: Disk>(disk: &D, path: &std::path::Path) -> io::ErrorKind {
    match disk.open(path, false).await {
        Ok(_) => panic!("{} opened, but it should not exist", path.display()),
        Err(e) => e.kind(),
    }
}

backend_tests! {
    /// Guards against writes landing at the wrong offset or reads returning other bytes.
    async fn write_then_read_back_at_offsets(disk, dir) {
        let file = disk.open(&dir.join("f"), true).await.unwrap();
        write(&file, b"hello", 0).await;
        write(&file, b"world", 100).await;
        assert_eq!(file.len().unwrap(), 105);
        assert_eq!(read(&file, 5, 0).await, b"hello");
        assert_eq!(read(&file, 5, 100).await, b"world");
        // The hole between the two writes reads as zeros.
        let mut expected = vec![0u8; 5];
        expected.extend_from_slice(b"world");
        assert_eq!(read(&file, 10, 95).await, expected);
    }

    /// Guards against O_APPEND (which makes the kernel ignore write offsets).
    async fn writes_overwrite_in_place(disk, dir) {
        let file = disk.open(&dir.join("f"), true).await.unwrap();
        write(&file, b"aaaa", 0).await;
        write(&file, b"bb", 1).await;
        assert_eq!(read(&file, 16, 0).await, b"abba");
        assert_eq!(file.len().unwrap(), 4);
    }

    /// Guards against reads past the end of file failing or returning stale bytes.
    async fn read_past_end_of_file_is_short(disk, dir) {
        let file = disk.open(&dir.join("f"), true).await.unwrap();
        write(&file, b"0123456789", 0).await;
        assert_eq!(read(&file, 16, 4).await, b"456789");
        assert!(read(&file, 16, 10).await.is_empty());
        assert!(read(&file, 16, 1 << 40).await.is_empty());
        // Whatever the buffer held before is discarded, not appended to.
        let mut old = Vec::with_capacity(16);
        old.extend_from_slice(b"stale stale");
        let (result, buf) = file.read_at(old, 8).await;
        assert_eq!(result.unwrap(), 2);
        assert_eq!(buf, b"89");
        // A buffer without capacity reads nothing and is not an error.
        assert!(read(&file, 0, 0).await.is_empty());
    }

    /// Guards against a read that stops at the first short transfer of a large buffer.
    async fn read_fills_a_large_buffer(disk, dir) {
        let file = disk.open(&dir.join("f"), true).await.unwrap();
        let data: Vec<u8> = (0..3 * 1024 * 1024 + 7).map(|i: u32| (i % 251) as u8).collect();
        write(&file, &data, 0).await;
        assert_eq!(read(&file, data.len(), 0).await, data);
        assert_eq!(read(&file, data.len() + 4096, 0).await, data);
    }

    /// Guards against writes in flight at once interfering with each other.
    async fn concurrent_writes_at_distinct_offsets(disk, dir) {
        let file = disk.open(&dir.join("f"), true).await.unwrap();
        let (a, b, c) = tokio::join!(
            file.write_all_at(vec![b'a'; 4096], 0),
            file.write_all_at(vec![b'b'; 4096], 4096),
            file.write_all_at(vec![b'c'; 4096], 8192),
        );
        a.0.unwrap();
        b.0.unwrap();
        c.0.unwrap();
        let back = read(&file, 3 * 4096, 0).await;
        assert!(back[..4096].iter().all(|&x| x == b'a'));
        assert!(back[4096..8192].iter().all(|&x| x == b'b'));
        assert!(back[8192..].iter().all(|&x| x == b'c'));
    }

    /// Guards against set_len failing to cut a torn tail or to preallocate with zeros.
    async fn set_len_truncates_and_extends(disk, dir) {
        let file = disk.open(&dir.join("f"), true).await.unwrap();
        write(&file, b"0123456789", 0).await;
        file.set_len(4).await.unwrap();
        assert_eq!(file.len().unwrap(), 4);
        assert_eq!(read(&file, 16, 0).await, b"0123");
        file.set_len(8).await.unwrap();
        assert_eq!(file.len().unwrap(), 8);
        assert_eq!(read(&file, 16, 0).await, b"0123\0\0\0\0");
    }

    /// Guards against sync_data failing, and against reopening truncating the file.
    async fn sync_data_then_reopen_keeps_the_data(disk, dir) {
        let path = dir.join("f");
        let file = disk.open(&path, true).await.unwrap();
        write(&file, b"durable", 0).await;
        file.sync_data().await.unwrap();
        drop(file);
        let again = disk.open(&path, false).await.unwrap();
        assert_eq!(read(&again, 16, 0).await, b"durable");
        // `create` on an existing file opens it as it is.
        let created = disk.open(&path, true).await.unwrap();
        assert_eq!(created.len().unwrap(), 7);
    }

    /// Guards against rename losing the file or its contents.
    async fn rename_moves_the_file(disk, dir) {
        let (from, to) = (dir.join("from"), dir.join("to"));
        let file = disk.open(&from, true).await.unwrap();
        write(&file, b"moved", 0).await;
        disk.rename(&from, &to).await.unwrap();
        disk.sync_dir(&dir).await.unwrap();
        let kind = open_error(&disk, &from).await;
        assert_eq!(kind, io::ErrorKind::NotFound);
        assert_eq!(read(&disk.open(&to, false).await.unwrap(), 16, 0).await, b"moved");
        // The open handle follows the file to its new name.
        assert_eq!(read(&file, 16, 0).await, b"moved");
        let missing = disk.rename(&from, &dir.join("other")).await.unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    /// Guards against remove leaving the file behind or succeeding on nothing.
    async fn remove_deletes_the_file(disk, dir) {
        let path = dir.join("f");
        drop(disk.open(&path, true).await.unwrap());
        disk.remove(&path).await.unwrap();
        disk.sync_dir(&dir).await.unwrap();
        let kind = open_error(&disk, &path).await;
        assert_eq!(kind, io::ErrorKind::NotFound);
        let kind = disk.remove(&path).await.unwrap_err().kind();
        assert_eq!(kind, io::ErrorKind::NotFound);
    }

    /// Guards against sync_dir failing on a directory or succeeding on a missing one.
    async fn sync_dir_syncs_a_directory(disk, dir) {
        drop(disk.open(&dir.join("new"), true).await.unwrap());
        disk.sync_dir(&dir).await.unwrap();
        let kind = disk.sync_dir(&dir.join("missing")).await.unwrap_err().kind();
        assert_eq!(kind, io::ErrorKind::NotFound);
    }

    /// Guards against open without `create` creating a file.
    async fn open_missing_without_create_is_not_found(disk, dir) {
        let path = dir.join("missing");
        let kind = open_error(&disk, &path).await;
        assert_eq!(kind, io::ErrorKind::NotFound);
        assert!(!path.exists());
    }

    /// Guards against data files readable by other users.
    async fn created_files_have_mode_0600(disk, dir) {
        let path = dir.join("f");
        drop(disk.open(&path, true).await.unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode is {mode:o}");
    }
}
