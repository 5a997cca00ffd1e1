//! `kvs-client` against a real `kvs-server`, with the outputs and exit codes talent-plan's
//! kvs users know, under both I/O backends and both engines.

mod support;

use std::process::{Command, Output};

use support::server::{io_backends, Server, ServerBuilder};

const CLIENT_BIN: &str = env!("CARGO_BIN_EXE_kvs-client");

fn client(server: &Server, args: &[&str]) -> Output {
    Command::new(CLIENT_BIN)
        .args(args)
        .arg("--addr")
        .arg(server.addr.to_string())
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn cli_set_get_rm_round_trip() {
    // Guards against the command line drifting from the conventions users script against.
    for io in io_backends() {
        for engine in ["kvs", "sled"] {
            let dir = tempfile::tempdir().unwrap();
            let server = ServerBuilder::new(dir.path())
                .io(io)
                .arg("--engine")
                .arg(engine)
                .start();
            let o = client(&server, &["set", "key1", "value1"]);
            assert!(
                o.status.success() && o.stdout.is_empty(),
                "{io}/{engine}: set prints nothing"
            );
            let o = client(&server, &["get", "key1"]);
            assert!(o.status.success());
            assert_eq!(stdout(&o), "value1\n");
            let o = client(&server, &["get", "missing"]);
            assert!(o.status.success(), "get of a missing key exits 0");
            assert_eq!(stdout(&o), "Key not found\n");
            let o = client(&server, &["rm", "key1"]);
            assert!(o.status.success() && o.stdout.is_empty());
            let o = client(&server, &["rm", "key1"]);
            assert!(!o.status.success(), "rm of a missing key fails");
            assert!(String::from_utf8_lossy(&o.stderr).contains("Key not found"));
            assert_eq!(
                stdout(&client(&server, &["get", "key1"])),
                "Key not found\n"
            );
            // Restart: values persist.
            client(&server, &["set", "key2", "value2"]);
            server.kill9();
            let server = ServerBuilder::new(dir.path()).io(io).start();
            assert_eq!(
                stdout(&client(&server, &["get", "key2"])),
                "value2\n",
                "{io}/{engine}"
            );
        }
    }
}

#[test]
fn cli_unreachable_server_exits_nonzero() {
    // Guards against a client that silently succeeds with no server.
    let addr = support::server::free_addr().to_string();
    let o = Command::new(CLIENT_BIN)
        .args(["get", "k", "--addr", &addr])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(!o.stderr.is_empty());
}

#[test]
fn compaction_through_the_server_bounds_disk_use() {
    // Guards against overwrites growing the data directory without bound.
    let dir = tempfile::tempdir().unwrap();
    let server = ServerBuilder::new(dir.path())
        .io("blocking")
        .arg("--segment-bytes")
        .arg("65536")
        .arg("--partitions")
        .arg("1")
        .start();
    let mut c = support::native::NativeConn::connect(server.addr);
    let value = "v".repeat(1000);
    for round in 0..40 {
        for k in 0..50 {
            c.set(&format!("key{k}"), &format!("{round}-{value}"));
        }
    }
    // 2,000 writes of ~1 KiB over 50 live keys (~50 KiB live): without compaction ~2 MiB.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let size = loop {
        let size: u64 = walk_size(dir.path());
        if size < 600 * 1024 || std::time::Instant::now() > deadline {
            break size;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(size < 600 * 1024, "data directory is {size} bytes");
    match c.call(kvs::protocol::Request::Stats) {
        kvs::protocol::Response::Stats(s) => assert!(s.partitions[0].compactions > 0, "{s:?}"),
        other => panic!("{other:?}"),
    }
    for k in 0..50 {
        assert_eq!(c.get(&format!("key{k}")), Some(format!("39-{value}")));
    }
}

fn walk_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk_size(&e.path())
            } else {
                e.metadata().unwrap().len()
            }
        })
        .sum()
}
