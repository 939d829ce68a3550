//! Requests per second of the unlock provider's whole per-request path (decode, RSA-2048
//! decrypt with aws-lc-rs, seal, encode) on one core, for `cargo xtask bench`, which runs this
//! interleaved with `openssl speed rsa2048` and keeps the best run of each, so that a busy
//! machine does not favour one side. Usage: `server_rate SECONDS`; prints one number.
//!
//! Like `openssl speed` (which counts the process's CPU time unless given `-elapsed`), the rate
//! is requests per second of CPU time this process used: on a machine shared with other jobs,
//! wall-clock time would count the time the scheduler gave to them.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use nkpu::{
    ClientKey, KeyProtector, KeyProtectorReply, Message, ProviderKey, SessionKey, Thumbprint, v4,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rsa::pkcs8::DecodePrivateKey;

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let der = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/keys/test-a-rsa2048.pk8"
    ))
    .expect("test key fixture");
    let provider = ProviderKey::from_pkcs8_der(&der).expect("provider key");
    let public = rsa::RsaPrivateKey::from_pkcs8_der(&der)
        .expect("test key")
        .to_public_key();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let kp = KeyProtector::encrypt(
        &public,
        &ClientKey::random(&mut rng),
        &SessionKey::random(&mut rng),
        &mut rng,
    )
    .expect("RSA-2048 key");
    let request = v4::Request::after_lease(
        1,
        [2, 0, 0, 0, 0, 1],
        Ipv4Addr::new(10, 0, 4, 110),
        Ipv4Addr::new(10, 0, 4, 97),
        vec![],
        Thumbprint::from_bytes([0x4a; 20]),
        kp,
    )
    .encode();
    let budget = Duration::from_secs_f64(seconds);
    let start = cpu_time();
    let mut served = 0u64;
    while cpu_time().saturating_sub(start) < budget {
        let Ok(Message::V4Request(req)) = v4::decode(&request) else {
            panic!("the request decodes")
        };
        let (ck, sk) = provider.decrypt(&req.key_protector).expect("decrypts");
        let reply = v4::Reply::answering(&req, KeyProtectorReply::seal(&sk, &ck)).encode();
        std::hint::black_box(reply);
        served += 1;
    }
    println!(
        "{:.1}",
        served as f64 / cpu_time().saturating_sub(start).as_secs_f64()
    );
}

/// The CPU time this process has used: the first field of `/proc/self/schedstat` (nanoseconds
/// on a CPU), or wall-clock time where that file does not exist.
fn cpu_time() -> Duration {
    static WALL_START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    std::fs::read_to_string("/proc/self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_else(|| WALL_START.get_or_init(Instant::now).elapsed())
}
