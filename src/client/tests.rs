//! [`KvsClient`] against fake servers: tokio tasks that speak `docs/protocol.md`, one
//! faithfully (a map behind the native protocol), the others wrongly on purpose.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::*;
use crate::protocol::{
    decode_client_hello, decode_request, encode_response, encode_server_hello, PartitionStats,
    MAGIC,
};

/// Runs `handler` on every connection accepted by `listener`, each in its own task.
fn serve_with<F, Fut>(listener: TcpListener, handler: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let addr = listener.local_addr().expect("bound listener");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handler(stream));
        }
    });
    addr
}

/// A fake server on 127.0.0.1 and a port of its own; returns its address.
async fn fake_server<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    serve_with(listener, handler)
}

/// Reads the client's hello, checks it, and answers with `status`.
async fn answer_hello(stream: &mut TcpStream, status: HelloStatus) {
    let mut hello = [0; HELLO_BYTES];
    stream.read_exact(&mut hello).await.expect("client hello");
    assert_eq!(decode_client_hello(&hello), Ok(Some(PROTOCOL_VERSION)));
    let mut out = Vec::new();
    encode_server_hello(status, &mut out);
    stream.write_all(&out).await.expect("send server hello");
}

/// The next request from the client, or `None` once it has closed.
async fn next_request(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<Request> {
    loop {
        if let Some((request, used)) = decode_request(buf).expect("the client sends valid frames") {
            buf.advance(used);
            return Some(request);
        }
        if stream.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

async fn send(stream: &mut TcpStream, response: &Response) {
    let mut out = Vec::new();
    encode_response(response, &mut out).expect("encodable response");
    stream.write_all(&out).await.expect("send response");
}

/// Keeps the connection open, discarding whatever arrives, until the client closes it.
async fn hold_open(mut stream: TcpStream) {
    let mut sink = [0; 4096];
    while let Ok(n) = stream.read(&mut sink).await {
        if n == 0 {
            return;
        }
    }
}

fn sample_stats() -> StatsReport {
    StatsReport {
        io_backend: "blocking".to_owned(),
        partitions: vec![
            PartitionStats {
                partition: 0,
                keys: 2,
                live_bytes: 300,
                dead_bytes: 40,
                segments: 1,
                compactions: 0,
            },
            PartitionStats {
                partition: 1,
                keys: 1,
                live_bytes: 12,
                dead_bytes: 0,
                segments: 3,
                compactions: 7,
            },
        ],
    }
}

/// A faithful server: a map behind the native protocol, answering in order.
async fn serve_store(mut stream: TcpStream) {
    answer_hello(&mut stream, HelloStatus::Accepted).await;
    let mut map: BTreeMap<Bytes, Bytes> = BTreeMap::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    while let Some(request) = next_request(&mut stream, &mut buf).await {
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
            Request::Stats => Response::Stats(sample_stats()),
            Request::Auth { .. } => Response::Ok,
        };
        out.clear();
        encode_response(&response, &mut out).expect("encodable response");
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// A server that answers the requests it receives with `replies`, in order, whatever they
/// asked, then holds the connection open.
async fn fake_scripted(replies: Vec<Response>) -> SocketAddr {
    fake_server(move |mut stream| {
        let replies = replies.clone();
        async move {
            answer_hello(&mut stream, HelloStatus::Accepted).await;
            let mut buf = BytesMut::new();
            for reply in &replies {
                if next_request(&mut stream, &mut buf).await.is_none() {
                    return;
                }
                send(&mut stream, reply).await;
            }
            hold_open(stream).await;
        }
    })
    .await
}

/// A server that accepts the hello, reads one request, then sends `bytes` as the start of
/// its answer and either closes or holds the connection open.
async fn fake_answering_raw(bytes: &[u8], then_close: bool) -> SocketAddr {
    let bytes = bytes.to_vec();
    fake_server(move |mut stream| {
        let bytes = bytes.clone();
        async move {
            answer_hello(&mut stream, HelloStatus::Accepted).await;
            let mut buf = BytesMut::new();
            next_request(&mut stream, &mut buf).await;
            stream.write_all(&bytes).await.expect("send raw bytes");
            if !then_close {
                hold_open(stream).await;
            }
        }
    })
    .await
}

/// A server that reads the client's hello and answers with exactly `hello`, then closes.
async fn fake_hello(hello: &'static [u8]) -> SocketAddr {
    fake_server(move |mut stream| async move {
        let mut client_hello = [0; HELLO_BYTES];
        stream
            .read_exact(&mut client_hello)
            .await
            .expect("client hello");
        stream.write_all(hello).await.expect("send hello");
    })
    .await
}

fn quick(request_timeout_ms: u64) -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_millis(request_timeout_ms),
        password: None,
    }
}

fn assert_connection_lost(result: Result<()>, mentioning: &str) {
    match result {
        Err(KvsError::ConnectionLost(reason)) => assert!(
            reason.contains(mentioning),
            "expected the reason to mention {mentioning:?}: {reason}"
        ),
        other => panic!("expected ConnectionLost mentioning {mentioning:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_get_remove_ping_stats_round_trip_from_a_spawned_task() {
    // Guards against a broken round trip, and (through tokio::spawn on a multi-threaded
    // runtime) against client futures that are not Send.
    let addr = fake_server(serve_store).await;
    tokio::spawn(async move {
        let mut client = KvsClient::connect(addr).await.expect("connect");
        assert_eq!(client.peer_addr(), addr);
        assert_eq!(client.get("absent").await.expect("get"), None);
        client.set("key", "value").await.expect("set");
        assert_eq!(
            client.get("key").await.expect("get"),
            Some(Bytes::from_static(b"value"))
        );
        // Binary keys and values, and the empty value, survive unchanged.
        let binary = Bytes::from_static(b"\0\xff\r\n\x01");
        client
            .set(binary.clone(), binary.clone())
            .await
            .expect("set");
        client.set("empty", Bytes::new()).await.expect("set");
        assert_eq!(client.get(binary.clone()).await.expect("get"), Some(binary));
        assert_eq!(client.get("empty").await.expect("get"), Some(Bytes::new()));
        client
            .set("key", String::from("second"))
            .await
            .expect("overwrite");
        assert_eq!(
            client.get("key").await.expect("get").as_deref(),
            Some(&b"second"[..])
        );
        client.remove("key").await.expect("remove");
        assert_eq!(client.get("key").await.expect("get"), None);
        client.ping().await.expect("ping");
        assert_eq!(client.stats().await.expect("stats"), sample_stats());
    })
    .await
    .expect("client task");
}

#[tokio::test]
async fn removing_an_absent_key_is_key_not_found_and_keeps_the_connection() {
    // Guards against NotFound surfacing as a generic error, or retiring the connection.
    let addr = fake_server(serve_store).await;
    let mut client = KvsClient::connect(addr).await.expect("connect");
    assert!(matches!(
        client.remove("never-set").await,
        Err(KvsError::KeyNotFound)
    ));
    client.ping().await.expect("connection still usable");
}

#[tokio::test]
async fn server_refusing_our_version_is_a_version_mismatch() {
    // Guards against a version refusal being reported as a vague protocol error or accepted.
    let addr = fake_hello(&[0xFB, b'K', b'V', b'S', 7, 0, 1, 0]).await;
    match KvsClient::connect(addr).await {
        Err(KvsError::VersionMismatch { ours, theirs }) => {
            assert_eq!((ours, theirs), (PROTOCOL_VERSION, 7));
        }
        other => panic!("expected VersionMismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn server_at_its_connection_cap_is_reported_busy() {
    // Guards against the busy status being mistaken for acceptance or a version problem.
    let addr = fake_hello(&[0xFB, b'K', b'V', b'S', 1, 0, 2, 0]).await;
    let err = KvsClient::connect(addr).await.expect_err("busy");
    assert!(matches!(&err, KvsError::Busy(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&addr.to_string()) && text.contains("busy"),
        "{text}"
    );
}

#[tokio::test]
async fn server_hello_with_unknown_status_is_a_protocol_error() {
    // Guards against an unknown verdict being read as acceptance.
    let addr = fake_hello(&[0xFB, b'K', b'V', b'S', 1, 0, 9, 0]).await;
    let err = KvsClient::connect(addr).await.expect_err("unknown status");
    assert!(
        matches!(&err, KvsError::Protocol(m) if m.contains("status 9")),
        "{err:?}"
    );
}

#[tokio::test]
async fn peer_that_is_not_a_kvs_server_is_a_protocol_error_naming_it() {
    // Guards against connecting to, say, a Redis port and waiting for a hello that never comes.
    let addr = fake_hello(b"-ERR unknown command\r\n").await;
    let err = KvsClient::connect(addr).await.expect_err("bad magic");
    match &err {
        KvsError::Protocol(m) => {
            assert!(m.contains(&addr.to_string()), "{m}");
            assert!(m.contains("does not speak the kvs protocol"), "{m}");
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
}

#[tokio::test]
async fn server_closing_during_the_hello_is_connection_lost() {
    // Guards against a half hello being waited on forever or read as a valid one.
    let addr = fake_hello(&MAGIC).await;
    match KvsClient::connect(addr).await {
        Err(KvsError::ConnectionLost(m)) => assert!(m.contains("4 of 8"), "{m}"),
        other => panic!("expected ConnectionLost, got {other:?}"),
    }
}

#[tokio::test]
async fn connecting_to_a_port_with_no_listener_is_refused_naming_the_address() {
    // Guards against an unreachable server giving an error that does not say where it looked.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let err = KvsClient::connect(addr).await.expect_err("nothing listens");
    match &err {
        KvsError::Connect {
            addr: tried,
            source,
        } => {
            assert_eq!(*tried, addr);
            assert_eq!(source.kind(), io::ErrorKind::ConnectionRefused);
        }
        other => panic!("expected Connect, got {other:?}"),
    }
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[tokio::test]
async fn server_that_never_sends_its_hello_hits_the_connect_timeout() {
    // Guards against connect hanging on a peer that accepts and then says nothing.
    let addr = fake_server(hold_open).await;
    let options = ClientOptions {
        connect_timeout: Duration::from_millis(100),
        ..ClientOptions::default()
    };
    let err = KvsClient::connect_with(addr, options)
        .await
        .expect_err("silent server");
    assert!(
        matches!(&err, KvsError::Timeout(m) if m.contains(&addr.to_string())),
        "{err:?}"
    );
}

#[tokio::test]
async fn oversized_length_prefix_is_rejected_before_the_body_is_awaited_or_allocated() {
    // Guards against a hostile server making the client buffer gigabytes it merely announced.
    let one_past_limit = u32::try_from(FRAME_BYTES_MAX + 1).expect("limit fits u32");
    for (announced, header) in [
        (u32::MAX, u32::MAX.to_le_bytes()),
        (one_past_limit, one_past_limit.to_le_bytes()),
    ] {
        let addr = fake_answering_raw(&header, false).await;
        // A long deadline: only an early rejection can end this request in time.
        let mut client = KvsClient::connect_with(addr, quick(60_000))
            .await
            .expect("connect");
        let err = client.get("k").await.expect_err("oversized frame");
        assert!(
            matches!(&err, KvsError::Protocol(m) if m.contains(&announced.to_string())),
            "{err:?}"
        );
        assert!(
            client.read_buf.capacity() < FRAME_BYTES_MAX,
            "the read buffer grew to {} bytes",
            client.read_buf.capacity()
        );
        assert_connection_lost(client.ping().await, "an earlier request failed");
    }
}

#[tokio::test]
async fn server_closing_partway_through_a_response_is_connection_lost() {
    // Guards against a truncated frame being waited on forever or decoded from what arrived.
    // A Value frame announcing a ten-byte body, of which three bytes arrive.
    let addr = fake_answering_raw(&[10, 0, 0, 0, 1, 1, 5], true).await;
    let mut client = KvsClient::connect(addr).await.expect("connect");
    let result = client.get("k").await.map(drop);
    assert_connection_lost(result, "partway through a response (7 bytes");
    assert_connection_lost(client.ping().await, "connect again");
}

#[tokio::test]
async fn server_closing_before_answering_is_connection_lost() {
    // Guards against an empty read being taken for a response, or hanging.
    let addr = fake_answering_raw(&[], true).await;
    let mut client = KvsClient::connect(addr).await.expect("connect");
    assert_connection_lost(client.ping().await, "before answering");
}

#[tokio::test]
async fn request_without_an_answer_times_out_and_retires_the_connection() {
    // Guards against a request hanging forever, and against a late answer to it being taken
    // for the answer to the next request.
    let addr = fake_answering_raw(&[], false).await;
    let mut client = KvsClient::connect_with(addr, quick(100))
        .await
        .expect("connect");
    let err = client.get("k").await.expect_err("no answer");
    assert!(
        matches!(&err, KvsError::Timeout(m) if m.contains(&addr.to_string())),
        "{err:?}"
    );
    assert_connection_lost(client.ping().await, "timed out");
}

#[tokio::test]
async fn request_future_dropped_before_its_answer_retires_the_connection() {
    // Guards against a cancelled request's late answer being paired with the next request.
    let addr = fake_answering_raw(&[], false).await;
    let mut client = KvsClient::connect(addr).await.expect("connect");
    let cancelled = tokio::time::timeout(Duration::from_millis(50), client.get("k")).await;
    assert!(cancelled.is_err(), "the fake server never answers");
    assert_connection_lost(client.ping().await, "cancelled");
}

#[tokio::test]
async fn error_responses_map_to_specific_kvs_errors() {
    // Guards against code having to parse server sentences to tell a full disk from a bug.
    let error = |kind, message: &str| Response::Error {
        kind,
        message: message.to_owned(),
    };
    let addr = fake_scripted(vec![
        error(ErrorKind::ReadOnly, "the store refuses writes"),
        error(ErrorKind::DiskFull, "no space"),
        error(ErrorKind::Internal, "the owner thread died"),
        error(ErrorKind::Unsupported, ""),
        Response::Pong,
        error(ErrorKind::KeyTooLarge, "key too large"),
    ])
    .await;
    let mut client = KvsClient::connect(addr).await.expect("connect");

    match client.set("k", "v").await {
        Err(KvsError::Poisoned { cause, .. }) => assert_eq!(cause, "the store refuses writes"),
        other => panic!("expected Poisoned, got {other:?}"),
    }
    assert!(matches!(
        client.set("k", "v").await,
        Err(KvsError::DiskFull)
    ));
    assert!(
        matches!(client.get("k").await, Err(KvsError::Server(m)) if m == "the owner thread died")
    );
    // An empty message still says something.
    assert!(matches!(client.stats().await, Err(KvsError::Server(m)) if m == "Unsupported"));
    // None of the above retire the connection.
    client.ping().await.expect("still usable");
    // KeyTooLarge reports our key's length against the limit; the server closes after it.
    match client.get("abc").await {
        Err(KvsError::KeyTooLarge { len, max }) => assert_eq!((len, max), (3, KEY_BYTES_MAX)),
        other => panic!("expected KeyTooLarge, got {other:?}"),
    }
    assert_connection_lost(client.ping().await, "KeyTooLarge");
}

#[tokio::test]
async fn response_that_cannot_answer_its_request_is_a_protocol_error() {
    // Guards against a confused server's Pong being taken as the answer to a Get.
    let addr = fake_scripted(vec![Response::Pong]).await;
    let mut client = KvsClient::connect(addr).await.expect("connect");
    let err = client.get("k").await.expect_err("mismatch");
    assert!(
        matches!(&err, KvsError::Protocol(m) if m.contains("answered Get with Pong")),
        "{err:?}"
    );
    assert_connection_lost(client.ping().await, "answered Get with Pong");

    let addr = fake_scripted(vec![Response::Ok, Response::NotFound]).await;
    let mut client = KvsClient::connect(addr).await.expect("connect");
    let requests = [
        Request::Set {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
        },
        Request::Get {
            key: Bytes::from_static(b"k"),
        },
    ];
    let err = client.batch(&requests).await.expect_err("mismatch");
    assert!(
        matches!(&err, KvsError::Protocol(m) if m.contains("request 2 of 2 (Get) with NotFound")),
        "{err:?}"
    );
}

#[tokio::test]
async fn oversized_key_or_value_is_refused_before_sending_and_keeps_the_connection() {
    // Guards against sending a frame the server would close the connection over.
    let addr = fake_server(serve_store).await;
    let mut client = KvsClient::connect(addr).await.expect("connect");
    let big_key = Bytes::from(vec![b'k'; KEY_BYTES_MAX + 1]);
    assert!(matches!(
        client.get(big_key.clone()).await,
        Err(KvsError::KeyTooLarge { len, max }) if len == KEY_BYTES_MAX + 1 && max == KEY_BYTES_MAX
    ));
    assert!(matches!(
        client.set("k", vec![0; VALUE_BYTES_MAX + 1]).await,
        Err(KvsError::ValueTooLarge { .. })
    ));
    let batch = [Request::Ping, Request::Remove { key: big_key }];
    assert!(matches!(
        client.batch(&batch).await,
        Err(KvsError::KeyTooLarge { .. })
    ));
    client.ping().await.expect("still usable");
    // The largest legal key and value go through.
    let key = Bytes::from(vec![b'k'; KEY_BYTES_MAX]);
    let value = Bytes::from(vec![b'v'; VALUE_BYTES_MAX]);
    client.set(key.clone(), value.clone()).await.expect("set");
    assert_eq!(client.get(key).await.expect("get"), Some(value));
    // A buffer that grew for the 8 MiB value was given back.
    assert!(client.read_buf.capacity() <= BUFFER_BYTES_RETAINED_MAX);
    assert!(client.write_buf.capacity() <= BUFFER_BYTES_RETAINED_MAX);
}

#[tokio::test]
async fn batch_of_1000_requests_is_answered_in_request_order() {
    // Guards against responses being paired with the wrong requests when pipelined.
    let addr = fake_server(serve_store).await;
    let mut client = KvsClient::connect(addr).await.expect("connect");
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for i in 0..250 {
        let key = Bytes::from(format!("key-{i}"));
        let value = Bytes::from(format!("value-{i}"));
        requests.push(Request::Set {
            key: key.clone(),
            value: value.clone(),
        });
        expected.push(Response::Ok);
        requests.push(Request::Get { key: key.clone() });
        expected.push(Response::Value(Some(value)));
        requests.push(Request::Remove { key: key.clone() });
        expected.push(Response::Ok);
        requests.push(Request::Remove { key });
        expected.push(Response::NotFound);
    }
    assert_eq!(requests.len(), 1000);
    assert_eq!(client.batch(&requests).await.expect("batch"), expected);
    assert_eq!(client.batch(&[]).await.expect("empty batch"), Vec::new());
    client.ping().await.expect("usable after a batch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_larger_than_the_socket_buffers_does_not_deadlock() {
    // Guards against a client that writes the whole batch before reading: once the server's
    // responses fill the buffers it stops reading, and such a client blocks forever.
    let socket = TcpSocket::new_v4().expect("socket");
    // Accepted connections inherit these; small buffers make the server push back early.
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.set_send_buffer_size(4096).expect("SO_SNDBUF");
    socket
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let listener = socket.listen(16).expect("listen");
    // The server answers each Get with its key repeated twice, so 8 MiB of requests bring
    // 16 MiB of responses: more than the kernel buffers on both sides can hold.
    let addr = serve_with(listener, |mut stream| async move {
        answer_hello(&mut stream, HelloStatus::Accepted).await;
        let mut buf = BytesMut::new();
        while let Some(request) = next_request(&mut stream, &mut buf).await {
            let Request::Get { key } = request else {
                panic!("this server expects only Get")
            };
            let value = Bytes::from([&key[..], &key[..]].concat());
            send(&mut stream, &Response::Value(Some(value))).await;
        }
    });
    let mut client = KvsClient::connect_with(addr, quick(20_000))
        .await
        .expect("connect");
    let requests: Vec<Request> = (0..1000u32)
        .map(|i| {
            let mut key = vec![b'k'; KEY_BYTES_MAX];
            key[..4].copy_from_slice(&i.to_le_bytes());
            Request::Get {
                key: Bytes::from(key),
            }
        })
        .collect();
    // A deadlocked client blocks in a write, where no request deadline applies.
    let responses = tokio::time::timeout(Duration::from_secs(60), client.batch(&requests))
        .await
        .expect("the batch deadlocked")
        .expect("batch completes");
    assert_eq!(responses.len(), requests.len());
    for (i, response) in (0..1000u32).zip(&responses) {
        match response {
            Response::Value(Some(value)) => {
                assert_eq!(value.len(), 2 * KEY_BYTES_MAX);
                assert_eq!(value[..4], i.to_le_bytes(), "response {i} out of order");
            }
            other => panic!("response {i}: {other:?}"),
        }
    }
}

#[test]
fn stats_table_aligns_columns_and_totals_them() {
    // Guards against an unreadable or wrongly summed stats listing.
    let table = stats_table(&sample_stats());
    let expected = "\
io backend: blocking
partition  keys  live bytes  dead bytes  segments  compactions
        0     2         300          40         1            0
        1     1          12           0         3            7
    total     3         312          40         4            7
";
    assert_eq!(table, expected);
}

#[test]
fn stats_table_saturates_and_escapes_what_the_server_sent() {
    // Guards against a hostile report overflowing the totals or writing escape codes.
    let mut report = sample_stats();
    report.io_backend = "uring\x1b[2J".to_owned();
    report.partitions[0].keys = u64::MAX;
    let table = stats_table(&report);
    assert!(
        table.starts_with("io backend: uring\\u{1b}[2J\n"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .last()
            .expect("a total row")
            .contains(&u64::MAX.to_string()),
        "{table}"
    );
}

#[tokio::test]
async fn a_password_in_the_options_is_sent_first_and_its_refusals_are_specific() {
    // Guards against a password not sent first, or a refusal reported as a vague server error.
    let password = Password::new("s3cret").unwrap();
    let with_password = ClientOptions {
        password: Some(password.clone()),
        ..ClientOptions::default()
    };
    assert!(!format!("{with_password:?}").contains("s3cret"));
    // The server sees Auth with the password before anything else.
    let addr = fake_server(|mut stream| async move {
        answer_hello(&mut stream, HelloStatus::Accepted).await;
        let mut buf = BytesMut::new();
        let first = next_request(&mut stream, &mut buf)
            .await
            .expect("a request");
        assert_eq!(
            first,
            Request::Auth {
                password: Bytes::from_static(b"s3cret")
            }
        );
        send(&mut stream, &Response::Ok).await;
        let second = next_request(&mut stream, &mut buf)
            .await
            .expect("a request");
        assert_eq!(second, Request::Ping);
        send(&mut stream, &Response::Pong).await;
        hold_open(stream).await;
    })
    .await;
    let mut client = KvsClient::connect_with(addr, with_password.clone())
        .await
        .expect("connect and authenticate");
    client.ping().await.expect("ping after Auth");

    let refusal = |kind| Response::Error {
        kind,
        message: "no".to_owned(),
    };
    let addr = fake_scripted(vec![refusal(ErrorKind::WrongPassword)]).await;
    assert!(matches!(
        KvsClient::connect_with(addr, with_password.clone()).await,
        Err(KvsError::WrongPassword)
    ));
    // A server without a password says so; the connection is usable.
    let addr = fake_scripted(vec![refusal(ErrorKind::Unsupported), Response::Pong]).await;
    let mut client = KvsClient::connect_with(addr, with_password.clone())
        .await
        .expect("a server without a password accepts the connection");
    client.ping().await.expect("usable");
    // Without a password, a server that wants one answers AuthRequired; the connection stays
    // usable, and auth() then gets in.
    let addr = fake_scripted(vec![
        refusal(ErrorKind::AuthRequired),
        refusal(ErrorKind::WrongPassword),
        Response::Ok,
        Response::Pong,
    ])
    .await;
    let mut client = KvsClient::connect(addr).await.expect("connect");
    assert!(matches!(client.ping().await, Err(KvsError::AuthRequired)));
    assert!(matches!(
        client.auth(&Password::new("nope").unwrap()).await,
        Err(KvsError::WrongPassword)
    ));
    client.auth(&password).await.expect("the right password");
    client.ping().await.expect("authenticated");
    assert_eq!(
        KvsError::WrongPassword.to_string(),
        "the server refused the password"
    );
}
