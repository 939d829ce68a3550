//! `realnet::wds` on the loopback interface with real UDP sockets (root: `SO_BINDTODEVICE`):
//! a real request is answered with a reply that opens under the client's session key, junk is
//! counted, and a burst larger than one worker and a queue of one is shed and counted as
//! `drop.overloaded` rather than queued, with every request accounted for. Behaviour only: no
//! speed is asserted here (that is `cargo xtask bench`'s).

// Test code may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use certificates::{CertificateRequest, Validity};
use nkpu::{ClientKey, KeyProtector, Message, SessionKey, v4};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use realnet::wds::{CertificateSource, Control, Ports, WdsConfig, WdsReport, run_wds};
use socket2::{Domain, Protocol, Socket, Type};

struct Client {
    ck: ClientKey,
    sk: SessionKey,
    request: Vec<u8>,
}

/// A `.pfx` in `dir` and `n` clients' requests to its certificate.
/// Each test answers at its own loopback address, so that tests running at once never read
/// each other's replies on port 68.
fn lab(dir: &std::path::Path, n: u32, ciaddr: Ipv4Addr) -> (std::path::PathBuf, Vec<Client>) {
    let pfx = dir.join("wds.pfx");
    let bundle = CertificateRequest::network_unlock(Validity::fixture())
        .self_signed_from_seed(21)
        .unwrap();
    certificates::files::save_pfx(&pfx, &bundle, "pw").unwrap();
    let public = bundle.certificate.rsa_public_key().unwrap().clone();
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let clients = (0..n)
        .map(|xid| {
            let ck = ClientKey::random(&mut rng);
            let sk = SessionKey::random(&mut rng);
            let kp = KeyProtector::encrypt(&public, &ck, &sk, &mut rng).unwrap();
            let mut request = v4::Request::after_lease(
                xid,
                [2, 0, 0, 0, 0, xid as u8],
                ciaddr,
                Ipv4Addr::LOCALHOST,
                vec![],
                bundle.certificate.thumbprint(),
                kp,
            );
            // Answered at ciaddr:68 rather than by broadcast.
            request.broadcast = false;
            Client {
                ck,
                sk,
                request: request.encode(),
            }
        })
        .collect();
    (pfx, clients)
}

fn client_socket(ciaddr: Ipv4Addr) -> UdpSocket {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    socket.set_reuse_address(true).unwrap();
    let local = SocketAddr::V4(SocketAddrV4::new(ciaddr, 68));
    socket.bind(&local.into()).unwrap();
    let socket: UdpSocket = socket.into();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket
}

/// Runs the server on `lo` with `port`, calls `drive` on another thread, then stops it.
fn serve(
    pfx: std::path::PathBuf,
    port: u16,
    workers: usize,
    queue: usize,
    policy: Option<std::path::PathBuf>,
    drive: impl FnOnce(SocketAddr, &tokio::sync::mpsc::Sender<Control>) + Send + 'static,
) -> (WdsReport, Vec<String>) {
    let mut config = WdsConfig::new(
        vec!["lo".into()],
        CertificateSource {
            files: vec![pfx],
            dirs: vec![],
            password: Some("pw".into()),
        },
    );
    config.workers = workers;
    config.queue_capacity = queue;
    config.ipv6 = false;
    config.ports = Ports { v4: port, v6: 0 };
    config.policy = policy;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (tx, control) = tokio::sync::mpsc::channel(4);
    let server = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    let driver = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drive(server, &tx);
        let _ = tx.blocking_send(Control::Stop);
    });
    let mut lines = Vec::new();
    let report = runtime
        .block_on(run_wds(config, control, |line| {
            lines.push(realnet::wds::format_log_line(line));
        }))
        .unwrap();
    driver.join().unwrap();
    (report, lines)
}

#[test]
fn a_request_over_loopback_is_answered_and_junk_is_counted() {
    if !testkit::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ciaddr = Ipv4Addr::new(127, 0, 0, 11);
    let (pfx, clients) = lab(dir.path(), 1, ciaddr);
    let client = &clients[0];
    let request = client.request.clone();
    let (reply_tx, reply_rx) = std::sync::mpsc::channel();
    let (report, log) = serve(pfx, 16701, 2, 8, None, move |server, _| {
        let socket = client_socket(ciaddr);
        socket.send_to(b"not dhcp at all", server).unwrap();
        socket.send_to(&request, server).unwrap();
        let mut buf = [0u8; 1500];
        let (len, from) = socket.recv_from(&mut buf).unwrap();
        reply_tx.send((buf[..len].to_vec(), from)).unwrap();
    });
    let (reply, from) = reply_rx.recv().unwrap();
    assert_eq!(from.port(), 16701, "answered from the server's port");
    let Message::V4Reply(reply) = v4::decode(&reply).unwrap() else {
        panic!("a Network Unlock reply")
    };
    assert_eq!(reply.reply.open(&client.sk).unwrap(), client.ck);
    assert_eq!(report.counter("replied"), 1);
    assert_eq!(report.received, 2);
    assert_eq!(
        report.counters.values().sum::<u64>(),
        2,
        "{:?}",
        report.counters
    );
    assert!(
        log.iter()
            .any(|l| l.contains("key returned to 127.0.0.11:68")),
        "{log:#?}"
    );
    assert!(log.iter().any(|l| l.contains("loaded from")), "{log:#?}");
}

#[test]
fn a_burst_beyond_the_queue_is_shed_and_counted_not_queued() {
    if !testkit::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ciaddr = Ipv4Addr::new(127, 0, 0, 12);
    let (pfx, clients) = lab(dir.path(), 24, ciaddr);
    let requests: Vec<Vec<u8>> = clients.iter().map(|c| c.request.clone()).collect();
    let (report, log) = serve(pfx, 16702, 1, 1, None, move |server, _| {
        let socket = client_socket(ciaddr);
        for request in &requests {
            socket.send_to(request, server).unwrap();
        }
        // Time for whatever was queued to be answered.
        std::thread::sleep(Duration::from_millis(500));
    });
    assert_eq!(report.received, 24);
    let replied = report.counter("replied");
    let shed = report.counter("drop.overloaded");
    assert_eq!(replied + shed, 24, "{:?}", report.counters);
    assert!(
        shed >= 1,
        "a burst of 24 against one worker and a queue of one: {:?}",
        report.counters
    );
    assert!(replied >= 1, "{:?}", report.counters);
    assert!(
        report.peak_queue <= 1,
        "the queue never holds more than its bound"
    );
    assert_eq!(report.queue_capacity, 1);
    assert!(log.iter().any(|l| l.contains("overloaded")), "{log:#?}");
}

#[test]
fn a_reload_with_an_invalid_policy_silences_the_provider_and_a_valid_one_revives_it() {
    if !testkit::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ciaddr = Ipv4Addr::new(127, 0, 0, 13);
    let (pfx, clients) = lab(dir.path(), 3, ciaddr);
    let requests: Vec<Vec<u8>> = clients.iter().map(|c| c.request.clone()).collect();
    let ini = dir.path().join("bde-network-unlock.ini");
    std::fs::write(&ini, "[SUBNETS]\nLOOP=127.0.0.0/8\n").unwrap();
    let ini_for_driver = ini.clone();
    let (report, log) = serve(pfx, 16703, 1, 4, Some(ini), move |server, control| {
        let socket = client_socket(ciaddr);
        socket
            .set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let mut buf = [0u8; 1500];
        socket.send_to(&requests[0], server).unwrap();
        assert!(
            socket.recv_from(&mut buf).is_ok(),
            "answered under a valid policy"
        );
        // ENABLED is not allowed as a subnet name: the file is invalid.
        std::fs::write(&ini_for_driver, "[SUBNETS]\nENABLED=127.0.0.0/8\n").unwrap();
        control.blocking_send(Control::Reload).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        socket.send_to(&requests[1], server).unwrap();
        assert!(
            socket.recv_from(&mut buf).is_err(),
            "an invalid policy answers nobody"
        );
        std::fs::write(&ini_for_driver, "[SUBNETS]\nLOOP=127.0.0.0/8\n").unwrap();
        control.blocking_send(Control::Reload).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        socket.send_to(&requests[2], server).unwrap();
        assert!(
            socket.recv_from(&mut buf).is_ok(),
            "answered again after a valid reload"
        );
    });
    assert_eq!(report.counter("replied"), 2, "{:?}", report.counters);
    assert_eq!(
        report.counter("drop.policy-invalid"),
        1,
        "{:?}",
        report.counters
    );
    assert!(
        log.iter()
            .any(|l| l.contains("Error:") && l.contains("line 2")),
        "the reload logs the bad line: {log:#?}"
    );
    assert!(log.iter().any(|l| l.contains("SIGHUP")), "{log:#?}");
}

#[test]
fn an_address_already_in_use_is_named() {
    if !testkit::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (pfx, _) = lab(dir.path(), 0, Ipv4Addr::new(127, 0, 0, 14));
    // Another program holds UDP 0.0.0.0:PORT on every interface (no SO_REUSEADDR), and the
    // port the provider's second service port (547) maps to, so that no socket opens.
    let holder = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    let port = holder.local_addr().unwrap().port();
    let other = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    let other_port = other.local_addr().unwrap().port();
    let mut config = WdsConfig::new(
        vec!["lo".into()],
        CertificateSource {
            files: vec![pfx],
            dirs: vec![],
            password: Some("pw".into()),
        },
    );
    config.ipv6 = false;
    config.ports = Ports {
        v4: port,
        v6: other_port,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (tx, control) = tokio::sync::mpsc::channel(1);
    // Were the port taken anyway, the run stops rather than hangs (and the test fails).
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(5));
        let _ = tx.blocking_send(Control::Stop);
    });
    let mut lines = Vec::new();
    let err = runtime
        .block_on(run_wds(config, control, |line| {
            lines.push(realnet::wds::format_log_line(line));
        }))
        .map(|report| format!("{report:?} {lines:?}"))
        .expect_err("the port is taken")
        .to_string();
    assert!(
        err.contains(&format!("0.0.0.0:{port}")) && err.contains("in use"),
        "{err}"
    );
    drop((holder, other));
}

#[test]
fn the_summary_has_a_line_per_counter() {
    let report = WdsReport {
        counters: [("drop.junk".to_owned(), 2), ("replied".to_owned(), 5)].into(),
        received: 7,
        workers: 1,
        queue_capacity: 16,
        peak_queue: 1,
    };
    assert_eq!(
        report.summary_lines(),
        [
            "received 7",
            "drop.junk 2",
            "replied 5",
            "peak-queue 1 of 16 (1 workers)"
        ]
    );
}
