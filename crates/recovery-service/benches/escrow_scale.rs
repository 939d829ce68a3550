//! Escrow and helpdesk look-ups at scale (issue 20): the same escrows over real TLS on a
//! database of 10,000 and of 1,000,000 records, side by side, and the helpdesk look-up's
//! latency on each.
//!
//! Each database is first filled through the store's own escrow API (`Store::escrow_group`)
//! in transactions of `PRELOAD_GROUP` records, not over HTTPS: random key IDs, a recovery
//! password and its key package on two volumes per device. Both services then run in this
//! process (one tokio runtime, two worker threads, so the clients' TLS shares the two cores),
//! and the escrow windows alternate between them, `NULAB_BENCH_ROUNDS` (default 3) rounds of
//! `NULAB_BENCH_SECS` (default 5) seconds each after a second of warm-up, so that the load
//! the machine carries meanwhile falls on both alike. `NULAB_BENCH_CLIENTS` (default 64)
//! enrolled devices per service escrow one new recovery password per request on keep-alive
//! connections; `NULAB_BENCH_SIZES` (default `10000,1000000`) lists the databases.
//!
//! The helpdesk look-up is what the service runs on a read connection for a key ID's first
//! eight characters (`StoreReader::lookup`: the range on the key-ID index), before the audit
//! write: quiet, 5,000 look-ups of random stored keys after the windows; under load, one every
//! 2 ms on a thread of its own during each window.

mod common;
use common::MATERIAL;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use recovery_service::agent::ManagementPoint;
use recovery_service::agent::shell::{EscrowConnection, TcpDialer, client_tls};
use recovery_service::record::{
    DeviceId, EscrowRecord, KeyId, KeyIdQuery, MaterialKind, RecordId, VolumeId,
};
use recovery_service::seal::{AtRestKey, Sealer};
use recovery_service::server::{RunningService, ServiceConfig, start};
use recovery_service::store::{
    DeviceToken, EscrowRequest, HelpdeskRequest, HelpdeskRole, Lookup, Store, StoreReader,
};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// Records per transaction while preloading.
const PRELOAD_GROUP: usize = 25_000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let secs = env_u64("NULAB_BENCH_SECS", 5);
    let rounds = env_u64("NULAB_BENCH_ROUNDS", 3);
    let clients = env_u64("NULAB_BENCH_CLIENTS", 64) as u32;
    let sizes: Vec<u64> = std::env::var("NULAB_BENCH_SIZES")
        .unwrap_or_else(|_| "10000,1000000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("NULAB_BENCH_SIZES: numbers"))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(secs, rounds, clients, sizes));
}

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

/// Fills the database with `n` records; returns one stored key ID in a hundred.
fn preload(db: &Path, sealer: Sealer, n: u64) -> Vec<KeyId> {
    let mut store =
        Store::open(db, sealer, Box::new(ChaCha20Rng::seed_from_u64(7))).expect("store");
    let mut rng = ChaCha20Rng::seed_from_u64(20);
    let mut sample = Vec::new();
    let (mut done, mut device_no) = (0u64, 0u64);
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
                        material: MATERIAL.to_vec(),
                        replaces: None,
                    });
                }
            }
            let take = (records.len() as u64).min(n - done) as usize;
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
    if sample.is_empty() {
        sample.push(random_key_id(&mut ChaCha20Rng::seed_from_u64(20)));
    }
    sample
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
        let q = HelpdeskRequest {
            operator: "CONTOSO\\helpdesk1".into(),
            role: HelpdeskRole::Helpdesk,
            query: KeyIdQuery::new(key.short()).expect("query"),
            kind: MaterialKind::RecoveryPassword,
            reason: "benchmark".into(),
            device: None,
            volume: None,
        };
        let t0 = Instant::now();
        let found = reader.lookup(&q).expect("look-up");
        out.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
        assert!(!matches!(found, Lookup::NotFound), "{key} not found");
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

/// One database under test and what was measured on it.
struct Case {
    records: u64,
    db: PathBuf,
    load_s: f64,
    sample: Vec<KeyId>,
    running: RunningService,
    devices: Vec<(DeviceId, DeviceToken)>,
    escrows_us: Vec<u32>,
    seconds: f64,
    lookups_loaded_us: Vec<u32>,
}

async fn run(secs: u64, rounds: u64, clients: u32, sizes: Vec<u64>) {
    let common::BenchDir { dir, key_file } = common::bench_dir();
    let common::LocalhostPki { ca_der, cert, key } = common::localhost_pki();
    let tls = client_tls(std::slice::from_ref(&ca_der)).expect("tls");

    let mut cases = Vec::new();
    for (i, &records) in sizes.iter().enumerate() {
        let db = dir.path().join(format!("escrow-{i}.sqlite"));
        let t0 = Instant::now();
        let sealer = Sealer::encrypted(&AtRestKey::load(&key_file).expect("key"));
        let path = db.clone();
        let sample = tokio::task::spawn_blocking(move || preload(&path, sealer, records))
            .await
            .expect("preload");
        let load_s = t0.elapsed().as_secs_f64();
        eprintln!(
            "preloaded {records} records in {load_s:.1} s ({:.0} per second)",
            records as f64 / load_s
        );
        let running = start(ServiceConfig {
            database: db.clone(),
            key_file: Some(key_file.clone()),
            cert_chain: vec![cert.der().clone()],
            cert_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            https: "127.0.0.1:0".parse().expect("addr"),
            http: None,
            limits: Default::default(),
        })
        .await
        .expect("start");
        let mut devices = Vec::new();
        for c in 0..clients {
            let device = DeviceId::new(format!("PC{c:05}")).expect("device");
            let token = running.service.enrol(device.clone()).await.expect("enrol");
            devices.push((device, token));
        }
        cases.push(Case {
            records,
            db,
            load_s,
            sample,
            running,
            devices,
            escrows_us: Vec::new(),
            seconds: 0.0,
            lookups_loaded_us: Vec::new(),
        });
    }

    for round in 0..rounds {
        for case in &mut cases {
            eprintln!("round {round}: {} records", case.records);
            let (us, seconds, loaded) = window(case, &tls, secs, round).await;
            case.escrows_us.extend(us);
            case.seconds += seconds;
            case.lookups_loaded_us.extend(loaded);
        }
    }

    let mut fields = Vec::new();
    for (i, case) in cases.iter_mut().enumerate() {
        case.escrows_us.sort_unstable();
        case.lookups_loaded_us.sort_unstable();
        let reader = StoreReader::open(&case.db).expect("reader");
        lookups(&reader, &case.sample, 500, Duration::ZERO, 1); // warm the page cache
        let mut quiet = lookups(&reader, &case.sample, 5_000, Duration::ZERO, 2);
        quiet.sort_unstable();
        let rate = case.escrows_us.len() as f64 / case.seconds;
        println!(
            "{} records (preloaded in {:.1} s): {} escrows in {:.1} s, {rate:.0}/s, p50 {:.2} ms, \
             p99 {:.2} ms; helpdesk look-up p50 {:.3} ms, p99 {:.3} ms quiet, p99 {:.3} ms \
             during the escrows",
            case.records,
            case.load_s,
            case.escrows_us.len(),
            case.seconds,
            percentile(&case.escrows_us, 0.50),
            percentile(&case.escrows_us, 0.99),
            percentile(&quiet, 0.50),
            percentile(&quiet, 0.99),
            percentile(&case.lookups_loaded_us, 0.99),
        );
        fields.push(format!(
            "s{i}_records={} s{i}_load_s={:.3} s{i}_escrows={} s{i}_seconds={:.3} s{i}_rate={rate:.1} \
             s{i}_p50_ms={:.3} s{i}_p99_ms={:.3} s{i}_lookup_p50_ms={:.4} s{i}_lookup_p99_ms={:.4} \
             s{i}_lookups={} s{i}_lookup_loaded_p99_ms={:.4} s{i}_lookups_loaded={}",
            case.records,
            case.load_s,
            case.escrows_us.len(),
            case.seconds,
            percentile(&case.escrows_us, 0.50),
            percentile(&case.escrows_us, 0.99),
            percentile(&quiet, 0.50),
            percentile(&quiet, 0.99),
            quiet.len(),
            percentile(&case.lookups_loaded_us, 0.99),
            case.lookups_loaded_us.len(),
        ));
    }
    // For `cargo xtask escrow`, which writes BENCHMARKS.md from it.
    println!(
        "fields: rounds={rounds} secs={secs} clients={clients} {}",
        fields.join(" ")
    );
}

/// One escrow window on `case`'s service: fresh keep-alive connections, a second of warm-up,
/// then `secs` measured; returns the escrow latencies, the window's length and the look-up
/// latencies sampled meanwhile (microseconds).
async fn window(
    case: &Case,
    tls: &Arc<rustls::ClientConfig>,
    secs: u64,
    round: u64,
) -> (Vec<u32>, f64, Vec<u32>) {
    let mp = ManagementPoint::parse(&format!("https://localhost:{}", case.running.https.port()))
        .expect("mp");
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (c, (device, token)) in case.devices.iter().cloned().enumerate() {
        let mut conn = EscrowConnection::connect(&TcpDialer::default(), &mp, tls.clone())
            .await
            .expect("connect");
        let (measuring, stop) = (measuring.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies_us: Vec<u32> = Vec::new();
            let mut i: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let record = common::recovery_password(
                    &device,
                    &format!("{c:06X}{round:02X}-0000-0000-0000-{i:012X}"),
                );
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
    let sampler = {
        let (db, sample, measuring) = (case.db.clone(), case.sample.clone(), measuring.clone());
        std::thread::spawn(move || {
            let reader = StoreReader::open(&db).expect("reader");
            let mut all = Vec::new();
            while measuring.load(Ordering::Relaxed) {
                let seed = all.len() as u64;
                all.extend(lookups(
                    &reader,
                    &sample,
                    50,
                    Duration::from_millis(2),
                    seed,
                ));
            }
            all
        })
    };
    tokio::time::sleep(Duration::from_secs(secs)).await;
    measuring.store(false, Ordering::Relaxed);
    let seconds = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    let loaded = sampler.join().expect("look-up thread");
    (all, seconds, loaded)
}
