//! The real server path under load, for `cargo xtask bench`: `realnet::wds::run_wds` on the
//! loopback interface (real UDP sockets, the receive loop, the bounded queue, N decrypt
//! workers), fed by a load generator on another thread. Needs root (`SO_BINDTODEVICE`).
//!
//! `wds_rate throughput SECONDS WORKERS`: closed loop (a fixed window of requests in flight,
//! a new one sent for each reply), so the workers never wait and nothing is shed; prints
//! `rate=<replies per second of wall-clock time>`.
//!
//! `wds_rate overload SECONDS WORKERS RATE`: open loop at RATE requests per second, whatever
//! comes back; prints `offered=`, `answered=`, `overloaded=`, `received=`, `peak_queue=`,
//! `capacity=`, `workers=`, one per line.
//!
//! The requests are real: 64 clients' DHCPv4 Network Unlock requests to a certificate made and
//! saved as a `.pfx` here, each with its own key protector; `ciaddr` is 127.0.0.1 and the
//! broadcast flag is off, so the provider answers 127.0.0.1:68, where the generator listens.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use certificates::{CertificateRequest, Validity};
use nkpu::{ClientKey, KeyProtector, SessionKey, v4};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use realnet::wds::{CertificateSource, Control, Ports, WdsConfig, run_wds};
use socket2::{Domain, Protocol, Socket, Type};

const SERVER_PORT: u16 = 16767;
const CLIENTS: u32 = 64;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: wds_rate throughput SECONDS WORKERS | overload SECONDS WORKERS RATE";
    let number = |i: usize| -> f64 {
        args.get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{usage}"))
    };
    let mode = args.get(1).cloned().unwrap_or_default();
    let seconds = Duration::from_secs_f64(number(2));
    let workers = number(3) as usize;
    let overload = mode == "overload";
    let rate = if overload { number(4) } else { 0.0 };

    let dir = tempfile::tempdir().expect("temp dir");
    let pfx = dir.path().join("wds.pfx");
    let bundle = CertificateRequest::network_unlock(Validity::fixture())
        .self_signed_from_seed(7)
        .expect("certificate");
    certificates::files::save_pfx(&pfx, &bundle, "bench").expect("pfx written");
    let public = bundle
        .certificate
        .rsa_public_key()
        .expect("an RSA certificate")
        .clone();
    let thumbprint = bundle.certificate.thumbprint();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let requests: Vec<Vec<u8>> = (0..CLIENTS)
        .map(|n| {
            let kp = KeyProtector::encrypt(
                &public,
                &ClientKey::random(&mut rng),
                &SessionKey::random(&mut rng),
                &mut rng,
            )
            .expect("RSA-2048");
            let mut request = v4::Request::after_lease(
                n,
                [2, 0, 0, 0, 0, n as u8],
                Ipv4Addr::LOCALHOST,
                Ipv4Addr::LOCALHOST,
                vec![],
                thumbprint,
                kp,
            );
            request.broadcast = false;
            request.encode()
        })
        .collect();

    let mut config = WdsConfig::new(
        vec!["lo".into()],
        CertificateSource {
            files: vec![pfx],
            dirs: vec![],
            password: Some("bench".into()),
        },
    );
    config.workers = workers.max(1);
    config.queue_capacity = 16 * config.workers;
    config.ipv6 = false;
    config.ports = Ports {
        v4: SERVER_PORT,
        v6: 0,
    };
    let capacity = config.queue_capacity;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (control_tx, control) = tokio::sync::mpsc::channel(4);
    let client = client_socket();
    let server = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, SERVER_PORT));
    let load = std::thread::spawn(move || {
        // Let the server bind before the first request.
        std::thread::sleep(Duration::from_millis(300));
        let result = if overload {
            open_loop(&client, server, &requests, seconds, rate)
        } else {
            closed_loop(&client, server, &requests, seconds, capacity / 2)
        };
        let _ = control_tx.blocking_send(Control::Stop);
        result
    });
    let report = runtime
        .block_on(run_wds(config, control, |_| {}))
        .expect("the server runs (as root)");
    let (sent, answered, elapsed) = load.join().expect("load generator");
    if overload {
        println!("offered={sent}");
        println!("answered={answered}");
        println!("replied={}", report.counter("replied"));
        println!("overloaded={}", report.counter("drop.overloaded"));
        println!("received={}", report.received);
        println!("peak_queue={}", report.peak_queue);
        println!("capacity={}", report.queue_capacity);
        println!("workers={}", report.workers);
        println!("seconds={:.2}", elapsed.as_secs_f64());
    } else {
        println!("rate={:.1}", answered as f64 / elapsed.as_secs_f64());
    }
}

fn client_socket() -> UdpSocket {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    let local = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 68));
    socket.bind(&local.into()).expect("bind 127.0.0.1:68");
    let socket: UdpSocket = socket.into();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    socket
}

/// Keeps `window` requests in flight for `seconds`; counts replies after a short warm-up.
fn closed_loop(
    socket: &UdpSocket,
    server: SocketAddr,
    requests: &[Vec<u8>],
    seconds: Duration,
    window: usize,
) -> (u64, u64, Duration) {
    let mut next = 0usize;
    let mut sent = 0u64;
    let mut send = |sent: &mut u64| {
        let _ = socket.send_to(&requests[next % requests.len()], server);
        next += 1;
        *sent += 1;
    };
    for _ in 0..window.max(1) {
        send(&mut sent);
    }
    let warm_up = Instant::now() + Duration::from_millis(300);
    while Instant::now() < warm_up {
        if socket.recv_from(&mut [0u8; 1024]).is_ok() {
            send(&mut sent);
        }
    }
    let start = Instant::now();
    let mut answered = 0u64;
    let mut buf = [0u8; 1024];
    while start.elapsed() < seconds {
        match socket.recv_from(&mut buf) {
            Ok(_) => {
                answered += 1;
                send(&mut sent);
            }
            // Nothing for 200 ms: refill the window (a reply was lost).
            Err(_) => {
                for _ in 0..window.max(1) {
                    send(&mut sent);
                }
            }
        }
    }
    (sent, answered, start.elapsed())
}

/// Sends at `rate` per second for `seconds`, counting replies on another thread.
fn open_loop(
    socket: &UdpSocket,
    server: SocketAddr,
    requests: &[Vec<u8>],
    seconds: Duration,
    rate: f64,
) -> (u64, u64, Duration) {
    let answered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let socket = socket.try_clone().expect("clone socket");
        let answered = Arc::clone(&answered);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while !stop.load(Ordering::Relaxed) {
                if socket.recv_from(&mut buf).is_ok() {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < seconds {
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let _ = socket.send_to(&requests[sent as usize % requests.len()], server);
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = start.elapsed();
    // Replies to requests already queued keep coming for a moment.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let _ = receiver.join();
    (sent, answered.load(Ordering::Relaxed), elapsed)
}
