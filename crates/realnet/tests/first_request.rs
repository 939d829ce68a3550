//! The first Network Unlock request leaves from the leased address (issue 12's bug: it left
//! from 0.0.0.0, because the boot sent what the DHCPACK queued before it put the lease on the
//! interface). Against a server that answers unicast to the request's IP source, as both
//! open-source providers do, the client must unlock on its first attempt.
//!
//! Topology (`testkit::netns::Lan`, namespaces `nufirst-<run id>-*`, removed on drop whichever
//! way the test ends): `dhcp` (nulab's DHCP server through `realnet::run_server`,
//! 192.168.79.1), `wds` (a small provider that answers unicast to the request's IP source,
//! 192.168.79.2, and a packet capture of its interface) and `pc` (`realnet::boot::run_boot`,
//! no address until its lease). Each host is this test binary run again inside its namespace
//! (`ip netns exec`), in the role named by `REALNET_FIRST_REQUEST_ROLE`; the test process
//! itself never changes namespace. Every wait is bounded.

// Test code may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use boot_client::boot::{BootConfig, BootEvent, BootResult};
use boot_client::exchange::{ExchangeEvent, Transport};
use socket2::{Domain, Protocol, Socket, Type};
use testkit::netns::{Lan, Running, wait_for_file};
use tpm::{PcrSelection, SimulatedTpm};
use unlock_server::provider::{Outcome, Provider, Received};
use volume::Volume;
use volume::policy::NetworkUnlockCertificate;

const ROLE: &str = "REALNET_FIRST_REQUEST_ROLE";
const DIR: &str = "REALNET_FIRST_REQUEST_DIR";
const WDS_ADDRESS: &str = "192.168.79.2/24";
const DHCP_ADDRESS: &str = "192.168.79.1/24";

fn role_command(lan: &Lan, host: &str, role: &str, dir: &Path) -> Running {
    let exe = std::env::current_exe().unwrap();
    let log = std::fs::File::create(dir.join(format!("{role}.log"))).unwrap();
    Running::spawn(
        lan.command(host, exe.to_str().unwrap())
            .args([
                "role",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, role)
            .env(DIR, dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    )
}

#[test]
fn the_first_unlock_request_leaves_from_the_leased_address_and_is_answered() {
    if !testkit::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bundle = certificates::fixture::network_unlock(1);
    let key = bundle.private_key.as_ref().unwrap().to_pkcs8_der();
    std::fs::write(dir.path().join("provider.pk8"), key).unwrap();
    make_machine(dir.path(), &bundle);

    let lan = Lan::new("nufirst", &["dhcp", "wds", "pc"]);
    lan.address("dhcp", DHCP_ADDRESS);
    lan.address("wds", WDS_ADDRESS);
    let _dhcp = role_command(&lan, "dhcp", "dhcp", dir.path());
    let _wds = role_command(&lan, "wds", "wds", dir.path());
    for (file, needle) in [("dhcp.txt", "listening"), ("wds.txt", "listening")] {
        assert!(
            wait_for_file(&dir.path().join(file), needle, Duration::from_secs(20)),
            "{file}: {}",
            std::fs::read_to_string(dir.path().join(file.replace(".txt", ".log")))
                .unwrap_or_default()
        );
    }
    let pc = role_command(&lan, "pc", "pc", dir.path());
    let status = pc.wait(Duration::from_secs(60)).status;
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    let report = read("pc.txt");
    assert!(status.success(), "pc: {report}\n{}", read("pc.log"));
    let context = format!(
        "pc:\n{report}\nwds:\n{}\ncapture:\n{}",
        read("wds.txt"),
        read("capture.txt")
    );

    assert!(report.contains("unlocked-by=NetworkUnlock"), "{context}");
    assert!(report.contains("v4-requests-sent=1\n"), "{context}");
    // The capture on the WDS host's interface: the first Network Unlock request's IP source
    // is the client's leased address, the request's ciaddr.
    let capture = read("capture.txt");
    let first = capture.lines().next().expect("a request was captured");
    let fields: Vec<&str> = first.split_whitespace().collect();
    let [source, ciaddr] = fields.as_slice() else {
        panic!("capture line {first:?}")
    };
    assert_eq!(source, ciaddr, "{context}");
    assert_ne!(*source, "0.0.0.0", "{context}");
    assert_eq!(
        capture.lines().count(),
        1,
        "one request, no retransmission: {context}"
    );
    assert!(
        report.contains(&format!("address={ciaddr}/24")),
        "the leased address: {context}"
    );
}

/// A volume with a Network Unlock protector for `bundle`, sealed to a new simulated TPM, in
/// `dir/disk.img` and `dir/tpm.json`.
fn make_machine(dir: &Path, bundle: &certificates::CertificateBundle) {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let mut tpm =
        SimulatedTpm::manufacture(&mut ChaCha20Rng::seed_from_u64(13), Default::default());
    let (mut volume, keys) = Volume::create(64 * 1024, "FIRSTREQ", &mut rng).unwrap();
    let cert = NetworkUnlockCertificate::from_der(bundle.certificate.der()).unwrap();
    volume
        .add_network_unlock_protector(&keys, &mut tpm, PcrSelection::SECURE_BOOT, &cert, &mut rng)
        .unwrap();
    volume.save(&dir.join("disk.img")).unwrap();
    std::fs::write(dir.join("tpm.json"), tpm.to_json()).unwrap();
}

/// Runs this process's role inside its namespace (the parent test sets the variables); does
/// nothing without them. Not a test of its own: ignored unless a parent asks for it.
#[test]
#[ignore = "a host's role, run inside its namespace by the tests above"]
fn role() {
    let (Ok(role), Ok(dir)) = (std::env::var(ROLE), std::env::var(DIR)) else {
        return;
    };
    let dir = PathBuf::from(dir);
    match role.as_str() {
        "dhcp" => dhcp_role(&dir),
        "wds" => wds_role(&dir),
        "pc" => pc_role(&dir),
        other => panic!("unknown role {other}"),
    }
}

fn append(dir: &Path, file: &str, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(file))
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

fn dhcp_role(dir: &Path) {
    let net: ipnet::Ipv4Net = DHCP_ADDRESS.parse().unwrap();
    let pool = dhcp::Pool::new(
        net.trunc(),
        Ipv4Addr::new(192, 168, 79, 100),
        Ipv4Addr::new(192, 168, 79, 150),
    );
    let config = dhcp::ServerConfig::new(vec![net], vec![pool]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let interfaces = vec!["dhcp0".to_owned()];
    runtime
        .block_on(async {
            // The driver binds at start: a moment after, it is listening.
            let run = realnet::run_server(&interfaces, config, Duration::from_secs(90), |_, _| {});
            let note = async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                append(dir, "dhcp.txt", "listening");
                std::future::pending::<()>().await;
            };
            tokio::select! {
                report = run => report.map(|_| ()),
                () = note => Ok(()),
            }
        })
        .unwrap();
}

/// A provider that answers unicast to the request's IP source and port, as the open-source
/// servers do, and a capture of every Network Unlock request seen on `wds0`.
fn wds_role(dir: &Path) {
    let capture_dir = dir.to_owned();
    std::thread::spawn(move || capture_requests(&capture_dir));
    let key = std::fs::read(dir.join("provider.pk8")).unwrap();
    let key = nkpu::ProviderKey::from_pkcs8_der(&key).unwrap();
    let bundle = certificates::fixture::network_unlock(1);
    let mut provider = Provider::new(vec![0, 3, 0, 1, 0, 0, 0, 0, 0, 0x02]);
    provider.add_certificate(bundle.thumbprint(), key);

    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    socket.bind_device(Some(b"wds0")).unwrap();
    socket.set_broadcast(true).unwrap();
    socket.set_reuse_address(true).unwrap();
    let local: SocketAddr = "0.0.0.0:67".parse().unwrap();
    socket.bind(&local.into()).unwrap();
    let socket: std::net::UdpSocket = socket.into();
    append(dir, "wds.txt", "listening");
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    loop {
        let (len, source) = socket.recv_from(&mut buf).unwrap();
        let received = Received {
            source,
            payload: &buf[..len],
        };
        if let Outcome::Replied { transmit, .. } = provider.handle(start.elapsed(), received) {
            // Unicast to the request's IP source, whatever the request asked for.
            let sent = socket.send_to(&transmit.payload, source);
            append(dir, "wds.txt", &format!("replied to {source}: {sent:?}"));
        }
    }
}

/// Every Network Unlock request (DHCPv4, vendor class BITLOCKER) on `wds0`: `SOURCE CIADDR`,
/// one line each, from an `AF_PACKET` socket (the test's own capture: no tcpdump needed).
fn capture_requests(dir: &Path) {
    // ETH_P_ALL in network byte order.
    let all = Protocol::from(i32::from(0x0003u16.to_be()));
    let socket = Socket::new(Domain::PACKET, Type::RAW, Some(all)).unwrap();
    socket.bind_device(Some(b"wds0")).unwrap();
    let mut socket: std::fs::File = std::os::fd::OwnedFd::from(socket).into();
    let mut frame = vec![0u8; 65536];
    loop {
        let Ok(len) = std::io::Read::read(&mut socket, &mut frame) else {
            continue;
        };
        let Ok(located) = nkpu::frame::locate(&frame[..len]) else {
            continue;
        };
        let Ok(nkpu::Message::V4Request(_)) = nkpu::frame::decode(&located) else {
            continue;
        };
        let (Some((source, _)), Some(ciaddr)) = (located.udp, located.payload.get(12..16)) else {
            continue;
        };
        let ciaddr = Ipv4Addr::new(ciaddr[0], ciaddr[1], ciaddr[2], ciaddr[3]);
        append(dir, "capture.txt", &format!("{} {ciaddr}", source.ip()));
    }
}

fn pc_role(dir: &Path) {
    let volume = Volume::open(&dir.join("disk.img")).unwrap();
    let tpm =
        SimulatedTpm::from_json(&std::fs::read_to_string(dir.join("tpm.json")).unwrap()).unwrap();
    let config = BootConfig {
        adapters: realnet::boot::boot_adapters(&["pc0".to_owned()]).unwrap(),
        order: vec![Transport::DhcpV4],
        ..BootConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut sent = 0;
    let lines = std::cell::RefCell::new(Vec::new());
    let end = runtime
        .block_on(realnet::boot::run_boot(
            config,
            volume,
            Box::new(tpm),
            [7; 32],
            Duration::from_secs(30),
            |event| {
                if let BootEvent::Exchange {
                    event:
                        ExchangeEvent::Sent {
                            transport: Transport::DhcpV4,
                            ..
                        },
                    ..
                } = event
                {
                    sent += 1;
                }
                lines.borrow_mut().push(format!("event {event:?}"));
            },
            |note| {
                if let realnet::ShellNote::AddressConfigured { address, .. } = note {
                    lines.borrow_mut().push(format!("address={address}"));
                }
            },
        ))
        .unwrap();
    let mut lines = lines.into_inner();
    if let BootResult::Unlocked { protector, .. } = end.outcome.result {
        lines.push(format!("unlocked-by={protector:?}"));
    }
    lines.push(format!("v4-requests-sent={sent}"));
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(dir.join("pc.txt"), text).unwrap();
}
