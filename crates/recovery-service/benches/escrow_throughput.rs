//! Durable escrows per second over real TLS on loopback, and their latency: the target
//! is at least 2,000 per second sustained on 2 cores with p99 under 50 ms.
//!
//! One process, one tokio runtime with two worker threads (server and clients share the two
//! cores, so the clients' TLS costs count against the figure), the store on disk in WAL mode
//! with `synchronous=FULL` and group commit. Each client is an enrolled device with its own
//! keep-alive HTTPS connection, escrowing one new recovery password per request and waiting
//! for the acknowledgement (sent only after the commit). `NULAB_BENCH_SECS` (default 10) and
//! `NULAB_BENCH_CLIENTS` (default 64) tune the run; `NULAB_BENCH_UNENCRYPTED=1` turns
//! encryption at rest off for comparison.
//!
//! `NULAB_BENCH_PRELOAD=N` (issue 20) first fills the database with N records (random key IDs,
//! four records per device) through the store's own escrow API in large transactions, not over
//! HTTPS, then measures the same escrows on it, and afterwards the helpdesk look-up (a key ID's
//! first eight characters, on a read connection: the index range query, before any audit
//! write) for random stored keys, quiet and, sampled during the escrow window, under load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use recovery_service::agent::ManagementPoint;
use recovery_service::agent::shell::{EscrowConnection, TcpDialer, client_tls};
use recovery_service::record::KeyIdQuery;
use recovery_service::record::{DeviceId, EscrowRecord, KeyId, MaterialKind, RecordId, VolumeId};
use recovery_service::seal::{AtRestKey, Sealer};
use recovery_service::server::{ServiceConfig, start};
use recovery_service::store::{EscrowRequest, HelpdeskRequest, HelpdeskRole, Store, StoreReader};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Records per transaction while preloading.
const PRELOAD_GROUP: usize = 25_000;
/// Records per preloaded device (a password and a key package on two volumes).
const PER_DEVICE: usize = 4;

fn random_key_id(rng: &mut ChaCha20Rng) -> KeyId {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    let h = hex::encode(b);
    KeyId::new(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
    .expect("key id")
}

/// Fills the database with `n` records through `Store::escrow_group`, in transactions of
/// `PRELOAD_GROUP` records; returns one key ID in a hundred (for the look-ups) and the time.
fn preload(db: &std::path::Path, sealer: Sealer, n: u64) -> (Vec<KeyId>, Duration) {
    let t0 = Instant::now();
    let mut store =
        Store::open(db, sealer, Box::new(ChaCha20Rng::seed_from_u64(7))).expect("store");
    let mut rng = ChaCha20Rng::seed_from_u64(20);
    let material = b"123456-234567-345678-456789-567890-678901-789012-890123".to_vec();
    let mut sample = Vec::new();
    let mut done: u64 = 0;
    let mut device_no: u64 = 0;
    while done < n {
        let mut group = Vec::new();
        let mut in_group = 0;
        while in_group < PRELOAD_GROUP && done < n {
            let device = DeviceId::new(format!("BULK{device_no:07}")).expect("device");
            device_no += 1;
            let mut records = Vec::new();
            for volume in ["C", "D"] {
                let key_id = random_key_id(&mut rng);
                if device_no.is_multiple_of(50) {
                    sample.push(key_id.clone());
                }
                for kind in [MaterialKind::RecoveryPassword, MaterialKind::KeyPackage] {
                    records.push(EscrowRecord {
                        id: RecordId {
                            device: device.clone(),
                            volume: VolumeId::new(volume).expect("volume"),
                            key_id: key_id.clone(),
                            kind,
                        },
                        version: 1,
                        material: material.clone(),
                        replaces: None,
                    });
                }
            }
            let take = (PER_DEVICE as u64).min(n - done) as usize;
            records.truncate(take);
            done += take as u64;
            in_group += take;
            group.push(EscrowRequest { device, records });
        }
        for r in store
            .escrow_group(&group, 1_700_000_000_000)
            .expect("commit")
        {
            r.expect("preloaded record");
        }
    }
    (sample, t0.elapsed())
}

fn helpdesk_query(key_id: &KeyId) -> HelpdeskRequest {
    HelpdeskRequest {
        operator: "CONTOSO\\helpdesk1".into(),
        role: HelpdeskRole::Helpdesk,
        query: KeyIdQuery::new(key_id.short()).expect("query"),
        kind: MaterialKind::RecoveryPassword,
        reason: "benchmark".into(),
        device: None,
        volume: None,
    }
}

/// Times `count` look-ups of random sampled keys (microseconds), `pause` apart.
fn lookups(
    reader: &StoreReader,
    sample: &[KeyId],
    count: usize,
    pause: Duration,
    seed: u64,
) -> Vec<u32> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let key = &sample[(rng.next_u64() % sample.len() as u64) as usize];
        let q = helpdesk_query(key);
        let t0 = Instant::now();
        let found = reader.lookup(&q).expect("look-up");
        out.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
        assert!(
            !matches!(found, recovery_service::store::Lookup::NotFound),
            "{key} not found"
        );
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    out
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1);
    sorted.get(i).copied().unwrap_or(0) as f64 / 1000.0
}

fn main() {
    let secs = env_u64("NULAB_BENCH_SECS", 10);
    let clients = env_u64("NULAB_BENCH_CLIENTS", 64) as u32;
    let encrypted = std::env::var("NULAB_BENCH_UNENCRYPTED").is_err();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(
        secs,
        clients,
        encrypted,
        env_u64("NULAB_BENCH_PRELOAD", 0),
    ));
}

async fn run(secs: u64, clients: u32, encrypted: bool, preloaded: u64) {
    // On the build's own disk (not tmpfs), so that fsync costs what it costs.
    let base = std::env::var_os("CARGO_TARGET_TMPDIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let key_file = dir.path().join("recovery.key");
    AtRestKey::from_bytes([1u8; 32])
        .save_new(&key_file)
        .expect("key");

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("k")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &*ca)
        .expect("cert");

    let db = dir.path().join("escrow.sqlite");
    let (mut sample, load_time) = if preloaded > 0 {
        let sealer = if encrypted {
            Sealer::encrypted(&AtRestKey::load(&key_file).expect("key"))
        } else {
            Sealer::Plaintext
        };
        let db = db.clone();
        tokio::task::spawn_blocking(move || preload(&db, sealer, preloaded))
            .await
            .expect("preload")
    } else {
        (Vec::new(), Duration::ZERO)
    };
    if preloaded > 0 {
        eprintln!(
            "preloaded {preloaded} records in {:.1} s ({:.0} per second)",
            load_time.as_secs_f64(),
            preloaded as f64 / load_time.as_secs_f64()
        );
    }
    let running = start(ServiceConfig {
        database: db.clone(),
        key_file: encrypted.then_some(key_file),
        cert_chain: vec![cert.der().clone()],
        cert_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        https: "127.0.0.1:0".parse().expect("addr"),
        http: None,
        limits: Default::default(),
    })
    .await
    .expect("start");
    let mp =
        ManagementPoint::parse(&format!("https://localhost:{}", running.https.port())).expect("mp");
    let tls = client_tls(std::slice::from_ref(ca.der())).expect("tls");

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let device = DeviceId::new(format!("PC{c:05}")).expect("device");
        let token = running.service.enrol(device.clone()).await.expect("enrol");
        let mut conn = EscrowConnection::connect(&TcpDialer::default(), &mp, tls.clone())
            .await
            .expect("connect");
        let (measuring, stop) = (measuring.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies_us: Vec<u32> = Vec::new();
            let mut i: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let record = EscrowRecord {
                    id: RecordId {
                        device: device.clone(),
                        volume: VolumeId::new("C").expect("volume"),
                        key_id: KeyId::new(format!("{c:08X}-0000-0000-0000-{i:012X}"))
                            .expect("key id"),
                        kind: MaterialKind::RecoveryPassword,
                    },
                    version: 1,
                    material: b"123456-234567-345678-456789-567890-678901-789012-890123".to_vec(),
                    replaces: None,
                };
                let t0 = Instant::now();
                conn.escrow(&token, &[record])
                    .await
                    .expect("escrow acknowledged");
                if measuring.load(Ordering::Relaxed) {
                    latencies_us.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
            }
            latencies_us
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // warm-up
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    // Helpdesk look-ups sampled during the escrow window, on their own thread.
    let under_load = (!sample.is_empty()).then(|| {
        let (db, sample) = (db.clone(), sample.clone());
        let measuring = measuring.clone();
        std::thread::spawn(move || {
            let reader = StoreReader::open(&db).expect("reader");
            let mut all = Vec::new();
            while measuring.load(Ordering::Relaxed) {
                all.extend(lookups(
                    &reader,
                    &sample,
                    50,
                    Duration::from_millis(2),
                    all.len() as u64,
                ));
            }
            all
        })
    });
    tokio::time::sleep(Duration::from_secs(secs)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    all.sort_unstable();
    let mut loaded_lookups = under_load
        .map(|h| h.join().expect("look-up thread"))
        .unwrap_or_default();
    loaded_lookups.sort_unstable();
    // Quiet look-ups after the run (the escrowed records are in the sample's key space too).
    let mut quiet = Vec::new();
    if !sample.is_empty() {
        sample.truncate(100_000);
        let reader = StoreReader::open(&db).expect("reader");
        lookups(&reader, &sample, 500, Duration::ZERO, 1); // warm the page cache
        quiet = lookups(&reader, &sample, 5_000, Duration::ZERO, 2);
        quiet.sort_unstable();
    }
    let pct = |p: f64| {
        let i = ((all.len() as f64 * p).ceil() as usize).saturating_sub(1);
        all.get(i).copied().unwrap_or(0) as f64 / 1000.0
    };
    let rate = all.len() as f64 / elapsed;
    println!(
        "escrow over TLS, {} at rest, {clients} clients, {:.1} s: {} escrows, {rate:.0}/s, \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target >= 2000/s, p99 < 50 ms: {})",
        if encrypted {
            "AES-256-GCM"
        } else {
            "plaintext"
        },
        elapsed,
        all.len(),
        pct(0.50),
        pct(0.99),
        pct(1.0),
        if rate >= 2000.0 && pct(0.99) < 50.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    if preloaded > 0 {
        println!(
            "helpdesk look-up at {preloaded} preloaded records: quiet p50 {:.3} ms, p99 {:.3} ms \
             ({} look-ups); during the escrow window p99 {:.3} ms ({} look-ups)",
            percentile(&quiet, 0.50),
            percentile(&quiet, 0.99),
            quiet.len(),
            percentile(&loaded_lookups, 0.99),
            loaded_lookups.len()
        );
    }
    // For `cargo xtask escrow`, which writes BENCHMARKS.md from it.
    println!(
        "fields: escrows={} seconds={elapsed:.3} rate={rate:.1} p50_ms={:.3} p99_ms={:.3} \
         max_ms={:.3} preloaded={preloaded} load_s={:.3} lookup_p50_ms={:.4} \
         lookup_p99_ms={:.4} lookups={} lookup_loaded_p99_ms={:.4} lookups_loaded={}",
        all.len(),
        pct(0.50),
        pct(0.99),
        pct(1.0),
        load_time.as_secs_f64(),
        percentile(&quiet, 0.50),
        percentile(&quiet, 0.99),
        quiet.len(),
        percentile(&loaded_lookups, 0.99),
        loaded_lookups.len(),
    );
}
