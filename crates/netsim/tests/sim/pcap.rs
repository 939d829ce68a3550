//! The capture of a segment opens in tshark: addresses, ports and checksums right, and a
//! DHCPv4 exchange on ports 68/67 dissected as DHCP.

use std::process::Command;

use dhcproto::v4::{DhcpOption, Encodable, Flags, Message, MessageType, Opcode};
use netsim::{AdapterConfig, SegmentConfig, Simulation};

use crate::{Probe, millis, net, secs};

fn dhcp(kind: MessageType, op: Opcode) -> Vec<u8> {
    let mut msg = Message::default();
    msg.set_opcode(op)
        .set_xid(0x1234_5678)
        .set_chaddr(&[0x02, 0, 0, 0, 0, 0x10])
        .set_flags(Flags::default().set_broadcast());
    if op == Opcode::BootReply {
        msg.set_yiaddr([10, 0, 0, 50]);
    }
    msg.opts_mut().insert(DhcpOption::MessageType(kind));
    msg.to_vec().expect("encode")
}

#[test]
fn tshark_dissects_the_capture() {
    if !testkit::require_tool("tshark") {
        return;
    }
    let mut sim = Simulation::new(30);
    let lan = sim.add_segment("lan", SegmentConfig::default().ipv4(net("10.0.0.0/24")));
    sim.capture(lan).expect("segment");
    let client = sim.add_host("client");
    sim.add_adapter(client, "eth0", lan, AdapterConfig::dhcp())
        .expect("adapter");
    let c = Probe::listening(&[68])
        .sending(
            millis(1),
            "0.0.0.0:68",
            "255.255.255.255:67",
            &dhcp(MessageType::Discover, Opcode::BootRequest),
        )
        .sending(
            millis(3),
            "0.0.0.0:68",
            "255.255.255.255:67",
            &dhcp(MessageType::Request, Opcode::BootRequest),
        )
        .sending(
            millis(5),
            "[fe80::ff:fe00:1]:546",
            "[ff02::1:2]:547",
            b"\x0b\x00\x00\x01",
        );
    sim.add_service(client, "client", c.install())
        .expect("service");
    let server = sim.add_host("server");
    sim.add_adapter(
        server,
        "eth0",
        lan,
        AdapterConfig::static_ipv4(net("10.0.0.2/24")),
    )
    .expect("adapter");
    let s = Probe::listening(&[67])
        .sending(
            millis(2),
            "10.0.0.2:67",
            "255.255.255.255:68",
            &dhcp(MessageType::Offer, Opcode::BootReply),
        )
        .sending(
            millis(4),
            "10.0.0.2:67",
            "255.255.255.255:68",
            &dhcp(MessageType::Ack, Opcode::BootReply),
        )
        .sending(
            millis(6),
            "10.0.0.2:4000",
            "10.0.0.99:9",
            b"unicast to nobody",
        )
        .sending(millis(7), "10.0.0.2:4000", "10.0.0.2:9", b"odd");
    sim.add_service(server, "server", s.install())
        .expect("service");
    sim.run_until(secs(1));

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lan.pcap");
    sim.write_pcap(lan, &path).expect("write pcap");
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(&path)
        .args([
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
        ])
        .args(["-T", "fields", "-E", "separator=|"])
        .args([
            "-e",
            "frame.time_epoch",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "ipv6.src",
            "-e",
            "ipv6.dst",
        ])
        .args([
            "-e",
            "udp.srcport",
            "-e",
            "udp.dstport",
            "-e",
            "dhcp.option.dhcp",
        ])
        .args([
            "-e",
            "ip.checksum.status",
            "-e",
            "udp.checksum.status",
            "-e",
            "_ws.malformed",
        ])
        .output()
        .expect("run tshark");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tshark failed: {stderr}");
    // tshark warns when run as root (CI runs as root); anything else is a complaint.
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("Running as user"))
        .collect();
    assert!(complaints.is_empty(), "tshark complained: {stderr}");
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('|').collect()).collect();
    // The unicast to 10.0.0.99 never left the server (no such host), and the one to its own
    // address went through loopback: five frames.
    assert_eq!(rows.len(), 5, "{text}");
    let expect = [
        ("0.0.0.0", "255.255.255.255", "68", "67", "1"),
        ("10.0.0.2", "255.255.255.255", "67", "68", "2"),
        ("0.0.0.0", "255.255.255.255", "68", "67", "3"),
        ("10.0.0.2", "255.255.255.255", "67", "68", "5"),
    ];
    for (row, (src, dst, sport, dport, kind)) in rows.iter().zip(expect) {
        assert_eq!(&row[1..3], &[src, dst], "{text}");
        assert_eq!(&row[5..8], &[sport, dport, kind], "{text}");
        assert_eq!(row[8], "1", "IPv4 checksum good: {text}");
        assert_eq!(row[9], "1", "UDP checksum good: {text}");
        assert_eq!(row[10], "", "not malformed: {text}");
    }
    // Simulated time after the fixed epoch 2024-01-01T00:00:00Z.
    assert!(rows[0][0].starts_with("1704067200.001000"), "{text}");
    let v6 = &rows[4];
    assert_eq!(
        &v6[3..7],
        &["fe80::ff:fe00:1", "ff02::1:2", "546", "547"],
        "{text}"
    );
    assert_eq!(v6[9], "1", "UDP over IPv6 checksum good: {text}");
}
