//! The data directory is the owner's alone: files are created 0600 and directories 0700, and
//! no symbolic link inside it is followed out of it (a link where a partition directory, a
//! segment or `kvs.meta` belongs stops the server with a message naming it).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use support::native::NativeConn;
use support::server::{run_to_exit, ServerBuilder};

fn builder(dir: &Path) -> ServerBuilder {
    ServerBuilder::new(dir)
        .io("blocking")
        .args(["--partitions", "2", "--segment-bytes", "8192"])
}

/// A store with sealed segments, hints and an active segment in each partition.
fn filled_store(dir: &Path) {
    let server = builder(dir).start();
    let mut c = NativeConn::connect(server.addr);
    for i in 0..400 {
        c.set(&format!("key{i}"), &"v".repeat(100));
    }
    server.kill9();
}

fn walk(dir: &Path, out: &mut Vec<(std::path::PathBuf, bool, u32)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let meta = std::fs::symlink_metadata(e.path()).unwrap();
        out.push((e.path(), meta.is_dir(), meta.permissions().mode() & 0o777));
        if meta.is_dir() {
            walk(&e.path(), out);
        }
    }
}

#[test]
fn store_files_are_owner_only() {
    // Guards against other local users reading the data (umask is not trusted).
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    filled_store(&store);
    let mut entries = Vec::new();
    walk(&store, &mut entries);
    assert!(entries
        .iter()
        .any(|(p, ..)| p.extension().is_some_and(|e| e == "hint")));
    for (path, is_dir, mode) in entries {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} has mode {mode:o}", path.display());
    }
}

fn assert_refused(store: &Path, what: &str) {
    let mut cmd = builder(store).command();
    cmd.stderr(std::process::Stdio::piped());
    let (status, err) = run_to_exit(cmd, Duration::from_secs(20));
    assert!(!status.success(), "{what}: the server started");
    assert!(
        err.contains("symbolic link"),
        "{what}: the message says why: {err}"
    );
}

#[test]
fn links_inside_the_data_directory_are_not_followed() {
    // Guards against a planted link making the server read or write outside its directory.
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    filled_store(&store);

    // A partition directory replaced by a link to a copy elsewhere.
    let p0 = store.join("p0000");
    let moved = outside.join("p0000");
    std::fs::rename(&p0, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &p0).unwrap();
    assert_refused(&store, "linked partition directory");
    std::fs::remove_file(&p0).unwrap();
    std::fs::rename(&moved, &p0).unwrap();

    // A segment replaced by a link.
    let seg = std::fs::read_dir(&p0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let target = outside.join("segment");
    std::fs::rename(&seg, &target).unwrap();
    std::os::unix::fs::symlink(&target, &seg).unwrap();
    assert_refused(&store, "linked segment");
    std::fs::remove_file(&seg).unwrap();
    std::fs::rename(&target, &seg).unwrap();

    // kvs.meta replaced by a link.
    let meta = store.join("kvs.meta");
    let target = outside.join("meta");
    std::fs::rename(&meta, &target).unwrap();
    std::os::unix::fs::symlink(&target, &meta).unwrap();
    assert_refused(&store, "linked kvs.meta");
    std::fs::remove_file(&meta).unwrap();
    std::fs::rename(&target, &meta).unwrap();

    // With every link gone, the store opens and holds its data.
    let server = builder(&store).start();
    assert_eq!(
        NativeConn::connect(server.addr).get("key7"),
        Some("v".repeat(100))
    );
}
