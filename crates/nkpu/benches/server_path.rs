//! The unlock provider's per-request path, measured piece by piece and whole: decode the
//! request, RSA-decrypt the key protector (aws-lc-rs), seal the reply, encode it.
//!
//! `cargo xtask bench` runs this beside `openssl speed rsa2048` and writes BENCHMARKS.md; the
//! target is at least 90% of OpenSSL's private-key operations per second on one core.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nkpu::{
    ClientKey, KeyProtector, KeyProtectorReply, Message, ProviderKey, SessionKey, Thumbprint, v4,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rsa::pkcs8::DecodePrivateKey;

fn request_bytes(public: &rsa::RsaPublicKey) -> Vec<u8> {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let kp = KeyProtector::encrypt(
        public,
        &ClientKey::random(&mut rng),
        &SessionKey::random(&mut rng),
        &mut rng,
    )
    .expect("RSA-2048 key");
    v4::Request::after_lease(
        1,
        [2, 0, 0, 0, 0, 1],
        Ipv4Addr::new(10, 0, 4, 110),
        Ipv4Addr::new(10, 0, 4, 97),
        vec![],
        Thumbprint::from_bytes([0x4a; 20]),
        kp,
    )
    .encode()
}

/// The whole server path for one request; returns the reply bytes.
fn serve(provider: &ProviderKey, request: &[u8]) -> Vec<u8> {
    let Ok(Message::V4Request(req)) = v4::decode(request) else {
        panic!("bench request decodes")
    };
    let (ck, sk) = provider.decrypt(&req.key_protector).expect("decrypts");
    v4::Reply::answering(&req, KeyProtectorReply::seal(&sk, &ck)).encode()
}

fn bench(c: &mut Criterion) {
    let der = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/keys/test-a-rsa2048.pk8"
    ))
    .expect("test key fixture");
    let provider = ProviderKey::from_pkcs8_der(&der).expect("provider key");
    let public = rsa::RsaPrivateKey::from_pkcs8_der(&der)
        .expect("test key")
        .to_public_key();
    let request = request_bytes(&public);
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
