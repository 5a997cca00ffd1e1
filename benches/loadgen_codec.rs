//! What a request and a reply cost the load generator: its hand-built GET/SET frames and
//! in-place reply parsing against the library codecs (postcard for the native protocol).
//! `cargo bench --bench loadgen_codec`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use kvs::bench::codec::{parse_reply, RequestEncoder};
use kvs::bench::Protocol;
use kvs::protocol::{decode_response, encode_request, encode_response, resp, Request, Response};

const KEY: &[u8; 16] = b"k000000000012345";

fn encode(c: &mut Criterion) {
    let value = vec![b'v'; 100];
    let mut out = Vec::with_capacity(4096);
    let native = RequestEncoder::new(Protocol::Native, KEY.len(), value.len()).expect("sizes");
    let resp_encoder = RequestEncoder::new(Protocol::Resp, KEY.len(), value.len()).expect("sizes");
    let key_bytes = Bytes::from_static(KEY);
    let value_bytes = Bytes::from(value.clone());

    let mut group = c.benchmark_group("encode SET 16 B key, 100 B value");
    group.bench_function("native, hand-built", |b| {
        b.iter(|| {
            out.clear();
            native.set(black_box(KEY), &mut out, |o| o.extend_from_slice(&value));
            black_box(out.len())
        })
    });
    group.bench_function("native, postcard (Request::Set)", |b| {
        b.iter(|| {
            out.clear();
            let request = Request::Set {
                key: key_bytes.clone(),
                value: value_bytes.clone(),
            };
            encode_request(black_box(&request), &mut out).expect("encodable");
            black_box(out.len())
        })
    });
    group.bench_function("resp, hand-built", |b| {
        b.iter(|| {
            out.clear();
            resp_encoder.set(black_box(KEY), &mut out, |o| o.extend_from_slice(&value));
            black_box(out.len())
        })
    });
    group.bench_function("resp, encode_command", |b| {
        b.iter(|| {
            out.clear();
            resp::encode_command(&[b"SET", black_box(KEY), &value], &mut out);
            black_box(out.len())
        })
    });
    group.finish();

    let mut group = c.benchmark_group("encode GET 16 B key");
    group.bench_function("native, hand-built", |b| {
        b.iter(|| {
            out.clear();
            native.get(black_box(KEY), &mut out);
            black_box(out.len())
        })
    });
    group.bench_function("native, postcard (Request::Get)", |b| {
        b.iter(|| {
            out.clear();
            let request = Request::Get {
                key: key_bytes.clone(),
            };
            encode_request(black_box(&request), &mut out).expect("encodable");
            black_box(out.len())
        })
    });
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut frame = Vec::new();
    encode_response(
        &Response::Value(Some(Bytes::from(vec![b'v'; 100]))),
        &mut frame,
    )
    .expect("encodable");
    let mut bulk = Vec::new();
    resp::bulk(&[b'v'; 100], &mut bulk);

    let mut group = c.benchmark_group("parse a 100 B value reply");
    group.bench_function("native, in place", |b| {
        b.iter(|| parse_reply(Protocol::Native, black_box(&frame)).expect("valid"))
    });
    group.bench_function("native, decode_response", |b| {
        b.iter(|| decode_response(black_box(&frame)).expect("valid"))
    });
    group.bench_function("resp, in place", |b| {
        b.iter(|| parse_reply(Protocol::Resp, black_box(&bulk)).expect("valid"))
    });
    group.bench_function("resp, resp::parse_reply", |b| {
        b.iter(|| resp::parse_reply(black_box(&bulk)).expect("valid"))
    });
    group.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
