//! The recovery service under attack (issue 20): legitimate devices escrow while unauthenticated
//! clients try to pin the server's memory and sockets, and the figures are compared with the
//! same devices' unattacked figures from the same run, on the same server process.
//!
//! The server is the real `recovery-escrowd` process with its default limits (so its peak RSS
//! is its own: `VmHWM` from `/proc`), its store on the build's disk with encryption at rest.
//! In this process: `NULAB_BENCH_CLIENTS` (default 32) enrolled devices on keep-alive HTTPS
//! connections from 127.0.0.1, each escrowing one new recovery password per request, without
//! interruption. `NULAB_BENCH_ROUNDS` (default 5) rounds each measure a window of
//! `NULAB_BENCH_SECS` (default 4) seconds unattacked, then start the attack and, once it has
//! ramped up, measure the same window under it, then stop it: alternating, so that whatever
//! else loads the machine falls on both alike. Each round's attacked rate over its unattacked
//! rate is a paired ratio; the goal (at least 80%) is judged on their median, which a burst of
//! someone else's load in one window cannot move alone. The attackers come from 127.0.1.0/24 (other
//! loopback addresses, under the per-address limit) and are never authenticated:
//!
//! - slow: a request head trickled one byte every half second (closed at the header time-out);
//! - idle: a completed TLS handshake, then nothing (closed at the idle time-out);
//! - oversized: a wrong token with `Content-Length: 1000000`, then up to 1 MB of body, then
//!   a stall (answered 401 before the body is read, and closed).
//!
//! Each attacker reconnects one second after the server closes it, so the attack population
//! stays near `NULAB_BENCH_ATTACKERS` (default 500) connections while it lasts. One process-wide tokio runtime
//! with two worker threads runs the devices and the attackers; the server has its own.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use recovery_service::agent::ManagementPoint;
use recovery_service::agent::shell::{EscrowConnection, TcpDialer, client_tls};
use recovery_service::record::DeviceId;
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
    let secs = env_u64("NULAB_BENCH_SECS", 4);
    let rounds = env_u64("NULAB_BENCH_ROUNDS", 5).max(1);
    let clients = env_u64("NULAB_BENCH_CLIENTS", 32) as u32;
    let attackers = env_u64("NULAB_BENCH_ATTACKERS", 500) as u32;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(secs, rounds, clients, attackers));
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

async fn run(secs: u64, rounds: u64, clients: u32, attackers: u32) {
    let common::BenchDir { dir, key_file } = common::bench_dir();
    let db = dir.path().join("escrow.sqlite");
    let common::LocalhostPki { ca_der, cert, key } = common::localhost_pki();
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
    let tls = client_tls(std::slice::from_ref(&ca_der)).expect("tls");

    // round * 10 + 0: settling, + 1: unattacked window, + 3: attacked window; STOP ends.
    const STOP: u64 = u64::MAX;
    let phase = Arc::new(AtomicU64::new(0));
    // Escrows counted in a window so far (for each window's own rate).
    let counted = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (c, (device, token)) in tokens.into_iter().enumerate() {
        let mut conn = EscrowConnection::connect(&TcpDialer::default(), &mp, tls.clone())
            .await
            .expect("connect");
        let (phase, counted) = (phase.clone(), counted.clone());
        tasks.push(tokio::spawn(async move {
            let mut windows = [Vec::new(), Vec::new()];
            let mut i: u64 = 0;
            loop {
                let p = phase.load(Ordering::Relaxed);
                if p == STOP {
                    break;
                }
                i += 1;
                let record =
                    common::recovery_password(&device, &format!("{c:08X}-0000-0000-0000-{i:012X}"));
                let t0 = Instant::now();
                conn.escrow(&token, &[record])
                    .await
                    .expect("a legitimate escrow is acknowledged under attack");
                let us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
                // Counted only if the whole request fell inside one window.
                if p == phase.load(Ordering::Relaxed) && matches!(p % 10, 1 | 3) {
                    windows[usize::from(p % 10 == 3)].push(us);
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            }
            windows
        }));
    }

    let attacking = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(AttackStats::default());
    let mut attack = Vec::new();
    for a in 0..attackers {
        let kind = match a % 5 {
            0 | 1 => Attack::Slow,
            2 | 3 => Attack::Idle,
            _ => Attack::Oversized,
        };
        // 127.0.1.1 to 127.0.1.50: ten connections per address; started over about a second.
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 1, (1 + a / 10) as u8));
        let ramp = Duration::from_micros(u64::from(a) * 1_000_000 / u64::from(attackers.max(1)));
        let flags = (attacking.clone(), stop.clone(), stats.clone());
        attack.push(tokio::spawn(attacker(
            kind,
            source,
            addr,
            tls.clone(),
            ramp,
            flags,
        )));
    }

    // A window's length and its escrows per second.
    let window = |at: u64| {
        let (phase, counted) = (phase.clone(), counted.clone());
        async move {
            let before = counted.load(Ordering::Relaxed);
            phase.store(at, Ordering::Relaxed);
            let t0 = Instant::now();
            tokio::time::sleep(Duration::from_secs(secs)).await;
            phase.store(at - at % 10, Ordering::Relaxed);
            let seconds = t0.elapsed().as_secs_f64();
            // Requests in flight at the end are counted when they complete: wait for them.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let n = counted.load(Ordering::Relaxed) - before;
            (seconds, n as f64 / seconds)
        }
    };
    tokio::time::sleep(Duration::from_secs(1)).await; // warm-up
    let (mut quiet_seconds, mut attacked_seconds) = (0.0, 0.0);
    let (mut rss_unattacked_kib, mut rss_attacked_kib) = (0, 0);
    let (mut open_at_start, mut open_at_end) = (u64::MAX, 0);
    let mut round_ratios = Vec::new();
    for round in 0..rounds {
        let (seconds, quiet_rate) = window(round * 10 + 1).await;
        quiet_seconds += seconds;
        rss_unattacked_kib = rss_unattacked_kib.max(server.status_kib("VmRSS"));
        phase.store(round * 10, Ordering::Relaxed);
        attacking.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(3)).await; // the attack ramps up
        open_at_start = open_at_start.min(stats.open.load(Ordering::Relaxed));
        let (seconds, attacked_rate) = window(round * 10 + 3).await;
        attacked_seconds += seconds;
        eprintln!("round {round}: {quiet_rate:.0}/s unattacked, {attacked_rate:.0}/s under attack");
        round_ratios.push(attacked_rate / quiet_rate);
        open_at_end = open_at_end.max(stats.open.load(Ordering::Relaxed));
        rss_attacked_kib = rss_attacked_kib.max(server.status_kib("VmRSS"));
        phase.store(round * 10, Ordering::Relaxed);
        attacking.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(2)).await; // the attackers let go
    }
    phase.store(STOP, Ordering::Relaxed);
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
    // VmHWM lags the per-thread RSS counters a little: the larger of it and every sample.
    let peak_kib = server
        .status_kib("VmHWM")
        .max(rss_unattacked_kib)
        .max(rss_attacked_kib);
    let ratio = attacked.rate() / quiet.rate();
    round_ratios.sort_by(f64::total_cmp);
    let median_ratio = round_ratios[round_ratios.len() / 2];
    let ratios = round_ratios
        .iter()
        .map(|r| format!("{:.0}%", r * 100.0))
        .collect::<Vec<_>>()
        .join(",");
    let peak_mib = peak_kib as f64 / 1024.0;
    println!(
        "recovery service under attack, {clients} devices, {attackers} unauthenticated \
         connections (slow, idle, oversized): unattacked {:.0}/s p99 {:.2} ms; attacked {:.0}/s \
         p99 {:.2} ms ({:.0}%; per round {ratios}, median {:.0}%); attack connections open {open_at_start}..{open_at_end}, \
         {} connects, {} closed by the server; server RSS idle {:.1} MiB, unattacked {:.1} MiB, \
         attacked {:.1} MiB, peak {peak_mib:.1} MiB (goals: >= 80%, peak < 128 MiB: {})",
        quiet.rate(),
        quiet.pct(0.99),
        attacked.rate(),
        attacked.pct(0.99),
        ratio * 100.0,
        median_ratio * 100.0,
        stats.connects.load(Ordering::Relaxed),
        stats.closed.load(Ordering::Relaxed),
        rss_idle_kib as f64 / 1024.0,
        rss_unattacked_kib as f64 / 1024.0,
        rss_attacked_kib as f64 / 1024.0,
        if median_ratio >= 0.8 && peak_mib < 128.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "fields: rounds={rounds} secs={secs} clients={clients} attackers={attackers} quiet_escrows={} quiet_rate={:.1} \
         quiet_p50_ms={:.3} quiet_p99_ms={:.3} attacked_escrows={} attacked_rate={:.1} \
         attacked_p50_ms={:.3} attacked_p99_ms={:.3} ratio={ratio:.4} median_round_ratio={median_ratio:.4} \
         min_round_ratio={:.4} max_round_ratio={:.4} \
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
        round_ratios[0],
        round_ratios[round_ratios.len() - 1],
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
    ramp: Duration,
    (attacking, stop, stats): (Arc<AtomicBool>, Arc<AtomicBool>, Arc<AttackStats>),
) {
    let connector = tokio_rustls::TlsConnector::from(tls);
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let mut was_attacking = false;
    while !stop.load(Ordering::Relaxed) {
        if !attacking.load(Ordering::Relaxed) {
            was_attacking = false;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        if !was_attacking {
            was_attacking = true;
            tokio::time::sleep(ramp).await;
        }
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
        // Hold the connection (trickling for the slow kind) until the server closes it, or
        // the attack pauses.
        let mut buf = vec![0u8; 4096];
        let closed_by_server = loop {
            if stop.load(Ordering::Relaxed) || !attacking.load(Ordering::Relaxed) {
                break false;
            }
            match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break true,
                Ok(Ok(_)) => {} // a refusal: wait for the close
                Err(_) => {
                    if matches!(kind, Attack::Slow) && s.write_all(b"a").await.is_err() {
                        break true;
                    }
                }
            }
        };
        stats.open.fetch_sub(1, Ordering::Relaxed);
        if closed_by_server {
            stats.closed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
