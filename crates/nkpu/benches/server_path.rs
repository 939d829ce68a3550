//! The unlock provider's per-request path, measured piece by piece and whole: decode the
//! request, RSA-decrypt the key protector (aws-lc-rs), seal the reply, encode it.
//!
//! `cargo xtask bench` runs this beside `openssl speed rsa2048` and writes BENCHMARKS.md; the
//! target is at least 90% of OpenSSL's private-key operations per second on one core.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nkpu::{ClientKey, KeyProtectorReply, Message, SessionKey, v4};

#[path = "support/server_path.rs"]
mod support;

use support::{provider_and_request, serve};

fn bench(c: &mut Criterion) {
    let (provider, request) = provider_and_request();
    let Ok(Message::V4Request(req)) = v4::decode(&request) else {
        panic!("bench request decodes")
    };
    let sk = SessionKey::from_bytes([7; 32]);
    let ck = ClientKey::from_bytes([9; 32]);
    let kpr = KeyProtectorReply::seal(&sk, &ck);
    let reply = v4::Reply::answering(&req, kpr.clone());

    let mut group = c.benchmark_group("server_path");
    group.throughput(Throughput::Elements(1));
    group.bench_function("whole_request", |b| {
        b.iter(|| serve(&provider, black_box(&request)))
    });
    group.bench_function("decode_request_v4", |b| {
        b.iter(|| v4::decode(black_box(&request)))
    });
    group.bench_function("rsa_decrypt_aws_lc", |b| {
        b.iter(|| provider.decrypt(black_box(&req.key_protector)))
    });
    group.bench_function("seal_reply", |b| {
        b.iter(|| KeyProtectorReply::seal(black_box(&sk), black_box(&ck)))
    });
    group.bench_function("encode_reply_v4", |b| b.iter(|| black_box(&reply).encode()));
    group.bench_function("open_reply", |b| b.iter(|| black_box(&kpr).open(&sk)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
