//! What the server's side of each protocol costs per request: decoding a request (native
//! postcard frame, RESP multibulk) and encoding its response, at 100-byte and 4 KiB values.
//! `cargo bench --bench protocol`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kvs::protocol::{decode_request, encode_request, encode_response, resp, Request, Response};

const KEY: &[u8] = b"k000000000012345";
const SIZES: [usize; 2] = [100, 4096];

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("server decodes a SET");
    for size in SIZES {
        let value = vec![b'v'; size];
        let mut native = Vec::new();
        let set = Request::Set {
            key: Bytes::from_static(KEY),
            value: Bytes::from(value.clone()),
        };
        encode_request(&set, &mut native).expect("within limits");
        let mut respcmd = Vec::new();
        resp::encode_command(&[b"SET", KEY, &value], &mut respcmd);
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("native", size), &native, |b, frame| {
            b.iter(|| black_box(decode_request(black_box(frame)).expect("valid")))
        });
        group.bench_with_input(BenchmarkId::new("resp", size), &respcmd, |b, cmd| {
            b.iter(|| black_box(resp::parse_command(black_box(cmd)).expect("valid")))
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("server encodes a GET reply");
    let mut out = Vec::with_capacity(8192);
    for size in SIZES {
        let value = Bytes::from(vec![b'v'; size]);
        let reply = Response::Value(Some(value.clone()));
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("native", size), &reply, |b, r| {
            b.iter(|| {
                out.clear();
                encode_response(black_box(r), &mut out).expect("within limits");
                black_box(out.len())
            })
        });
        group.bench_with_input(BenchmarkId::new("resp", size), &value, |b, v| {
            b.iter(|| {
                out.clear();
                resp::bulk(black_box(v), &mut out);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
