//! The recovery service under attack (issue 20): legitimate devices escrow while unauthenticated
//! clients try to pin the server's memory and sockets, and the figures are compared with the
//! same devices' unattacked figures from the same run, on the same server process.
//!
//! The server is the real `recovery-escrowd` process with its default limits (so its peak RSS
//! is its own: `VmHWM` from `/proc`), its store on the build's disk with encryption at rest.
//! In this process: `NULAB_BENCH_CLIENTS` (default 32) enrolled devices on keep-alive HTTPS
//! connections from 127.0.0.1, each escrowing one new recovery password per request; first
//! `NULAB_BENCH_SECS` (default 10) seconds unattacked, then the attack starts and, after it has
//! ramped up, the same window again. The attackers come from 127.0.1.0/24 (other loopback
//! addresses, under the per-address limit) and are never authenticated:
//!
//! - slow: a request head trickled one byte a second (closed at the header time-out);
//! - idle: a completed TLS handshake, then nothing (closed at the idle time-out);
//! - oversized: a wrong token with `Content-Length: 1000000`, then up to 1 MB of body, then
//!   a stall (answered 401 before the body is read, and closed).
//!
//! Each attacker reconnects one second after the server closes it, so the attack population
//! stays at `NULAB_BENCH_ATTACKERS` (default 500) connections. One process-wide tokio runtime
//! with two worker threads runs the devices and the attackers; the server has its own.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use recovery_service::agent::ManagementPoint;
use recovery_service::agent::shell::{EscrowConnection, TcpDialer, client_tls};
use recovery_service::record::{DeviceId, EscrowRecord, KeyId, MaterialKind, RecordId, VolumeId};
use recovery_service::seal::{AtRestKey, Sealer};
use recovery_service::store::{DeviceToken, Store};
use recovery_service::wire::ESCROW_PATH;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The server process, killed however the benchmark ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Server {
    /// A `/proc/PID/status` figure in KiB (`VmRSS`, `VmHWM`).
    fn status_kib(&self, field: &str) -> u64 {
        let text =
            std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).expect("/proc status");
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("status field")
    }
}

fn main() {
    let secs = env_u64("NULAB_BENCH_SECS", 10);
    let clients = env_u64("NULAB_BENCH_CLIENTS", 32) as u32;
    let attackers = env_u64("NULAB_BENCH_ATTACKERS", 500) as u32;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(secs, clients, attackers));
}

/// Latencies (µs) of the legitimate escrows of one window, and the window's length.
#[derive(Default)]
struct Window {
    latencies_us: Vec<u32>,
    seconds: f64,
}

impl Window {
    fn rate(&self) -> f64 {
        self.latencies_us.len() as f64 / self.seconds
    }
    fn pct(&self, p: f64) -> f64 {
        let i = ((self.latencies_us.len() as f64 * p).ceil() as usize).saturating_sub(1);
        self.latencies_us.get(i).copied().unwrap_or(0) as f64 / 1000.0
    }
}

async fn run(secs: u64, clients: u32, attackers: u32) {
    let base = std::env::var_os("CARGO_TARGET_TMPDIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let db = dir.path().join("escrow.sqlite");
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
    std::fs::write(dir.path().join("cert.pem"), cert.pem()).expect("cert");
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).expect("key");

    let tokens: Vec<(DeviceId, DeviceToken)> = {
        let mut store = Store::open(
            &db,
            Sealer::encrypted(&AtRestKey::load(&key_file).expect("key")),
            Box::new(rand_core::OsRng),
        )
        .expect("store");
        (0..clients)
            .map(|c| {
                let d = DeviceId::new(format!("PC{c:05}")).expect("device");
                let t = store.enrol_device(&d, 0).expect("enrol");
                (d, t)
            })
            .collect()
    };

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_recovery-escrowd"))
        .args(["--db".as_ref(), db.as_os_str()])
        .args(["--key-file".as_ref(), key_file.as_os_str()])
        .args(["--cert".as_ref(), dir.path().join("cert.pem").as_os_str()])
        .args([
            "--cert-key".as_ref(),
            dir.path().join("key.pem").as_os_str(),
        ])
        .args(["--https", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn recovery-escrowd");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server(child);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("read");
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("https=")
        .expect("https= line")
        .parse()
        .expect("addr");
    let rss_idle_kib = server.status_kib("VmRSS");

    let mp = ManagementPoint::parse(&format!("https://localhost:{}", addr.port())).expect("mp");
    let tls = client_tls(std::slice::from_ref(ca.der())).expect("tls");

    // 0: warm-up, 1: unattacked window, 2: ramp-up, 3: attacked window, 4: stop.
    let phase = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (c, (device, token)) in tokens.into_iter().enumerate() {
        let mut conn = EscrowConnection::connect(&TcpDialer::default(), &mp, tls.clone())
            .await
            .expect("connect");
        let phase = phase.clone();
        tasks.push(tokio::spawn(async move {
            let mut windows = [Vec::new(), Vec::new()];
            let mut i: u64 = 0;
            loop {
                let p = phase.load(Ordering::Relaxed);
                if p >= 4 {
                    break;
                }
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
                    .expect("a legitimate escrow is acknowledged under attack");
                let us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
                // Counted only if the whole request fell inside one window.
                if p == phase.load(Ordering::Relaxed) {
                    match p {
                        1 => windows[0].push(us),
                        3 => windows[1].push(us),
                        _ => {}
                    }
                }
            }
            windows
        }));
    }

    let window = |phase: Arc<AtomicU64>, at: u64| async move {
        phase.store(at, Ordering::Relaxed);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        t0.elapsed().as_secs_f64()
    };
    tokio::time::sleep(Duration::from_secs(1)).await; // warm-up
    let quiet_seconds = window(phase.clone(), 1).await;
    let rss_unattacked_kib = server.status_kib("VmRSS");

    phase.store(2, Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(AttackStats::default());
    let mut attack = Vec::new();
    for a in 0..attackers {
        let kind = match a % 5 {
            0 | 1 => Attack::Slow,
            2 | 3 => Attack::Idle,
            _ => Attack::Oversized,
        };
        // 127.0.1.1 to 127.0.1.50: ten connections per address.
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 1, (1 + a / 10) as u8));
        let (tls, stop, stats) = (tls.clone(), stop.clone(), stats.clone());
        attack.push(tokio::spawn(attacker(kind, source, addr, tls, stop, stats)));
        if a % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(100)).await; // ramp up over ~1 s
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let open_at_start = stats.open.load(Ordering::Relaxed);
    let attacked_seconds = window(phase.clone(), 3).await;
    let open_at_end = stats.open.load(Ordering::Relaxed);
    let rss_attacked_kib = server.status_kib("VmRSS");
    phase.store(4, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);

    let mut quiet = Window {
        seconds: quiet_seconds,
        ..Window::default()
    };
    let mut attacked = Window {
        seconds: attacked_seconds,
        ..Window::default()
    };
    for t in tasks {
        let [q, a] = t.await.expect("device task");
        quiet.latencies_us.extend(q);
        attacked.latencies_us.extend(a);
    }
    quiet.latencies_us.sort_unstable();
    attacked.latencies_us.sort_unstable();
    for a in attack {
        a.abort();
    }
    let peak_kib = server.status_kib("VmHWM");
    let ratio = attacked.rate() / quiet.rate();
    let peak_mib = peak_kib as f64 / 1024.0;
    println!(
        "recovery service under attack, {clients} devices, {attackers} unauthenticated \
         connections (slow, idle, oversized): unattacked {:.0}/s p99 {:.2} ms; attacked {:.0}/s \
         p99 {:.2} ms ({:.0}%); attack connections open {open_at_start}..{open_at_end}, \
         {} connects, {} closed by the server; server RSS idle {:.1} MiB, unattacked {:.1} MiB, \
         attacked {:.1} MiB, peak {peak_mib:.1} MiB (goals: >= 80%, peak < 128 MiB: {})",
        quiet.rate(),
        quiet.pct(0.99),
        attacked.rate(),
        attacked.pct(0.99),
        ratio * 100.0,
        stats.connects.load(Ordering::Relaxed),
        stats.closed.load(Ordering::Relaxed),
        rss_idle_kib as f64 / 1024.0,
        rss_unattacked_kib as f64 / 1024.0,
        rss_attacked_kib as f64 / 1024.0,
        if ratio >= 0.8 && peak_mib < 128.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "fields: clients={clients} attackers={attackers} quiet_escrows={} quiet_rate={:.1} \
         quiet_p50_ms={:.3} quiet_p99_ms={:.3} attacked_escrows={} attacked_rate={:.1} \
         attacked_p50_ms={:.3} attacked_p99_ms={:.3} ratio={ratio:.4} \
         open_start={open_at_start} open_end={open_at_end} connects={} closed={} \
         rss_idle_mib={:.2} rss_unattacked_mib={:.2} rss_attacked_mib={:.2} \
         peak_rss_mib={peak_mib:.2}",
        quiet.latencies_us.len(),
        quiet.rate(),
        quiet.pct(0.50),
        quiet.pct(0.99),
        attacked.latencies_us.len(),
        attacked.rate(),
        attacked.pct(0.50),
        attacked.pct(0.99),
        stats.connects.load(Ordering::Relaxed),
        stats.closed.load(Ordering::Relaxed),
        rss_idle_kib as f64 / 1024.0,
        rss_unattacked_kib as f64 / 1024.0,
        rss_attacked_kib as f64 / 1024.0,
    );
    drop(server);
}

#[derive(Debug, Clone, Copy)]
enum Attack {
    Slow,
    Idle,
    Oversized,
}

#[derive(Default)]
struct AttackStats {
    /// Attack connections open now.
    open: AtomicU64,
    connects: AtomicU64,
    /// Closed by the server (EOF or reset seen by the attacker).
    closed: AtomicU64,
}

async fn attacker(
    kind: Attack,
    source: IpAddr,
    server: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    stop: Arc<AtomicBool>,
    stats: Arc<AttackStats>,
) {
    let connector = tokio_rustls::TlsConnector::from(tls);
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    while !stop.load(Ordering::Relaxed) {
        let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
            return;
        };
        if socket.bind(SocketAddr::new(source, 0)).is_err() {
            return;
        }
        let Ok(tcp) = socket.connect(server).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        stats.connects.fetch_add(1, Ordering::Relaxed);
        let Ok(mut s) = connector.connect(name.clone(), tcp).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        stats.open.fetch_add(1, Ordering::Relaxed);
        match kind {
            Attack::Idle => {}
            Attack::Slow => {
                let head = format!("POST {ESCROW_PATH} HTTP/1.1\r\nHost: localhost\r\nX-Slow: ");
                let _ = s.write_all(head.as_bytes()).await;
            }
            Attack::Oversized => {
                let head = format!(
                    "POST {ESCROW_PATH} HTTP/1.1\r\nHost: localhost\r\n\
                     Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
                     Content-Length: 1000000\r\n\r\n",
                    "00".repeat(32)
                );
                let _ = s.write_all(head.as_bytes()).await;
                let chunk = vec![b'x'; 64 * 1024];
                for _ in 0..15 {
                    if s.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
            }
        }
        // Hold the connection (trickling for the slow kind) until the server closes it.
        let mut buf = vec![0u8; 4096];
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(_)) => {} // a refusal: wait for the close
                Err(_) => {
                    if matches!(kind, Attack::Slow) && s.write_all(b"a").await.is_err() {
                        break;
                    }
                }
            }
        }
        stats.open.fetch_sub(1, Ordering::Relaxed);
        stats.closed.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
