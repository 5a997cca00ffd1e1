//! `kvs-client` as a user runs it: flags, exit statuses and what lands on stdout and stderr.
//! Commands that need a server talk to a fake one in this process (a map behind the native
//! protocol); tests against the real server live with the server.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::thread;

use bytes::Bytes;
use kvs::protocol::{
    decode_client_hello, decode_request, encode_response, encode_server_hello, frame_len_hint,
    HelloStatus, Request, Response, FRAME_HEADER_BYTES, HELLO_BYTES, PROTOCOL_VERSION,
};

fn kvs_client<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_kvs-client"))
        .args(args)
        .output()
        .expect("run kvs-client")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
}

type Store = Arc<Mutex<HashMap<Bytes, Bytes>>>;

/// Starts a fake server holding a map; returns its address. Its threads end with the test
/// process.
fn fake_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let addr = listener.local_addr().expect("bound address");
    let store = Store::default();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                // An error here means the client went away; the client's output tells.
                let _ = serve(stream, &store);
            });
        }
    });
    addr
}

fn serve(mut stream: TcpStream, store: &Store) -> io::Result<()> {
    let mut hello = [0; HELLO_BYTES];
    stream.read_exact(&mut hello)?;
    assert_eq!(decode_client_hello(&hello), Ok(Some(PROTOCOL_VERSION)));
    let mut out = Vec::new();
    encode_server_hello(HelloStatus::Accepted, &mut out);
    stream.write_all(&out)?;
    loop {
        let mut frame = vec![0; FRAME_HEADER_BYTES];
        match stream.read_exact(&mut frame) {
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            other => other?,
        }
        let frame_len = frame_len_hint(&frame)
            .expect("a legal length")
            .expect("a whole header");
        frame.resize(frame_len, 0);
        stream.read_exact(&mut frame[FRAME_HEADER_BYTES..])?;
        let (request, _) = decode_request(&frame)
            .expect("a valid request")
            .expect("a whole frame");
        let mut map = store.lock().expect("store lock");
        let response = match request {
            Request::Get { key } => Response::Value(map.get(&key).cloned()),
            Request::Set { key, value } => {
                map.insert(key, value);
                Response::Ok
            }
            Request::Remove { key } => match map.remove(&key) {
                Some(_) => Response::Ok,
                None => Response::NotFound,
            },
            Request::Ping => Response::Pong,
            Request::Stats => Response::Error {
                kind: kvs::protocol::ErrorKind::Unsupported,
                message: "this fake keeps no stats".to_owned(),
            },
            Request::Auth { .. } => Response::Error {
                kind: kvs::protocol::ErrorKind::Unsupported,
                message: "this fake has no password".to_owned(),
            },
        };
        drop(map);
        out.clear();
        encode_response(&response, &mut out).expect("encodable response");
        stream.write_all(&out)?;
    }
}

#[test]
fn version_flag_prints_name_and_version() {
    // Guards against `-V` being lost or printing something scripts cannot parse.
    let output = kvs_client(["-V"]);
    assert!(output.status.success());
    assert_eq!(
        text(&output.stdout),
        format!("kvs-client {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn usage_errors_exit_nonzero_with_a_message_on_stderr() {
    // Guards against a mistyped command silently doing nothing, or something else.
    let cases: &[(&str, &[&str])] = &[
        ("no command", &[]),
        ("unknown command", &["frob"]),
        ("get without a key", &["get"]),
        ("get with an extra argument", &["get", "k", "extra"]),
        ("set without a value", &["set", "k"]),
        ("set with an extra argument", &["set", "k", "v", "extra"]),
        ("rm without a key", &["rm"]),
        (
            "address that is not IP:PORT",
            &["get", "k", "--addr", "nonsense"],
        ),
        (
            "address without a port",
            &["--addr", "127.0.0.1", "get", "k"],
        ),
    ];
    for (what, args) in cases {
        let output = kvs_client(*args);
        assert!(!output.status.success(), "{what}: exited 0");
        assert!(output.stdout.is_empty(), "{what}: wrote to stdout");
        assert!(!output.stderr.is_empty(), "{what}: said nothing on stderr");
    }
}

#[test]
fn unreachable_server_exits_nonzero_naming_the_address() {
    // Guards against a user being left to guess which address failed.
    let addr = free_addr();
    for args in [
        vec!["get", "k", "--addr", &addr.to_string()],
        vec!["--addr", &addr.to_string(), "set", "k", "v"],
    ] {
        let output = kvs_client(&args);
        assert!(!output.status.success(), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("could not connect") && stderr.contains(&addr.to_string()),
            "{stderr}"
        );
    }
}

#[test]
fn set_then_get_prints_the_value_and_set_and_rm_print_nothing() {
    // Guards against talent-plan's output conventions, and --addr in either position.
    let addr = fake_server().to_string();
    let output = kvs_client(["set", "key1", "value1", "--addr", &addr]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(output.stdout.is_empty() && output.stderr.is_empty());

    let output = kvs_client(["--addr", &addr, "get", "key1"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(output.stdout, b"value1\n");

    let output = kvs_client(["rm", "key1", "--addr", &addr]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(output.stdout.is_empty() && output.stderr.is_empty());
}

#[test]
fn get_of_an_absent_key_prints_key_not_found_and_succeeds() {
    // Guards against talent-plan's convention: a miss is an answer, not an error.
    let addr = fake_server().to_string();
    let output = kvs_client(["get", "absent", "--addr", &addr]);
    assert!(output.status.success());
    assert_eq!(text(&output.stdout), "Key not found\n");
}

#[test]
fn rm_of_an_absent_key_prints_key_not_found_on_stderr_and_fails() {
    // Guards against talent-plan's convention: removing nothing is an error.
    let addr = fake_server().to_string();
    let output = kvs_client(["rm", "absent", "--addr", &addr]);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    assert_eq!(text(&output.stderr), "Key not found\n");
}

#[test]
fn values_that_are_not_utf8_come_back_byte_for_byte() {
    // Guards against lossy UTF-8 conversion of keys or values on the way in or out.
    let addr = fake_server().to_string();
    let key = OsStr::from_bytes(b"k\xff");
    // Arguments cannot hold NUL; every other byte can.
    let value = OsStr::from_bytes(b"\xfe\xff\r\x01v");
    let output = kvs_client([
        OsStr::new("set"),
        key,
        value,
        OsStr::new("--addr"),
        addr.as_ref(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let output = kvs_client([OsStr::new("get"), key, OsStr::new("--addr"), addr.as_ref()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(output.stdout, b"\xfe\xff\r\x01v\n");
}

#[test]
fn ping_reports_the_answer_and_a_server_error_exits_nonzero() {
    // Guards against the extra commands hiding a server's refusal.
    let addr = fake_server().to_string();
    let output = kvs_client(["ping", "--addr", &addr]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).starts_with("PONG"));

    let output = kvs_client(["stats", "--addr", &addr]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("this fake keeps no stats"),
        "{}",
        text(&output.stderr)
    );
}
