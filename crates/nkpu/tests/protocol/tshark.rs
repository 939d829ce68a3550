//! tshark, the real dissector, reads what nkpu encodes: a DHCP request with option 60
//! `BITLOCKER`, option 43 of 152 bytes and option 125 of 135 bytes; a DHCPv6 request with
//! options 16 and 17 of the lengths PROTOCOL.md gives.

use std::process::Command;

use netsim::wire::{self, CapturedFrame};
use netsim::{Bytes, MacAddr, SimTime};
use nkpu::{KeyProtector, KeyProtectorReply, Thumbprint, frame, v4, v6};

/// What nkpu's own frame reader finds in netsim's frames: the same payload back.
#[test]
fn netsim_frames_are_found_by_nkpu_frame() {
    let payload = request_v4().encode();
    let framed = wire::ethernet_frame(&datagram(
        [2, 0, 0, 0, 0, 1],
        [0xff; 6],
        "10.0.4.110:68",
        "255.255.255.255:67",
        payload.clone(),
        0,
    ))
    .unwrap();
    let found = frame::locate(&framed).unwrap();
    assert_eq!(found.payload, payload.as_slice());
    assert_eq!(found.outer, frame::Outer::Ethernet);
    // The Windows capture's IPv4 header checksum verifies with netsim's checksum.
    let windows = crate::hex_fixture("windows10-nkpu-request-v4.frame.hex");
    assert_eq!(wire::internet_checksum(&[&windows[14..34]]), 0);
}

/// A datagram as the simulator would carry it, framed and written by `netsim::wire`.
fn datagram(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: &str,
    dst: &str,
    payload: Vec<u8>,
    second: u64,
) -> CapturedFrame {
    CapturedFrame {
        time: SimTime::from_secs(second),
        src_mac: MacAddr(src_mac),
        dst_mac: MacAddr(dst_mac),
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        ttl: 128,
        ip_id: second as u16,
        payload: Bytes::from(payload),
    }
}

fn write_pcap(path: &std::path::Path, frames: &[CapturedFrame]) {
    std::fs::write(path, wire::pcap_bytes(frames).unwrap()).unwrap();
}

fn tshark_fields(path: &std::path::Path, fields: &[&str]) -> Vec<String> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(path)
        .args(["-T", "fields", "-E", "separator=|"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark runs");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn request_v4() -> v4::Request {
    v4::Request::after_lease(
        0xaa67_6513,
        [0x00, 0x16, 0x3e, 0x01, 0x11, 0x22],
        "10.0.4.110".parse().unwrap(),
        "10.0.4.97".parse().unwrap(),
        vec![
            v4::LeaseOption::new(1, vec![255, 255, 255, 224]).unwrap(),
            v4::LeaseOption::new(54, vec![10, 0, 4, 97]).unwrap(),
        ],
        Thumbprint::from_bytes([0x4a; 20]),
        KeyProtector::from_bytes([0x5c; 256]),
    )
}

#[test]
fn tshark_dissects_an_encoded_v4_request_and_reply() {
    if !testkit::require_tool("tshark") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v4.pcap");
    let request = request_v4();
    let reply = v4::Reply::answering(&request, KeyProtectorReply::from_bytes([0x77; 60]));
    let client = [0x00, 0x16, 0x3e, 0x01, 0x11, 0x22];
    let server = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x61];
    write_pcap(
        &path,
        &[
            datagram(
                client,
                [0xff; 6],
                "10.0.4.110:68",
                "255.255.255.255:67",
                request.encode(),
                0,
            ),
            datagram(
                server,
                [0xff; 6],
                "10.0.4.98:67",
                "255.255.255.255:68",
                reply.encode(),
                1,
            ),
        ],
    );
    let lines = tshark_fields(
        &path,
        &[
            "dhcp.option.type",
            "dhcp.option.length",
            "dhcp.option.vendor_class_id",
            "udp.checksum.status",
            "ip.checksum.status",
        ],
    );
    assert_eq!(lines.len(), 2, "{lines:?}");
    let cols: Vec<&str> = lines[0].split('|').collect();
    let types: Vec<&str> = cols[0].split(',').collect();
    let length_of = |t: &str| testkit::tshark_dhcp_option_length(cols[0], cols[1], t);
    assert_eq!(length_of("60"), "9");
    assert_eq!(length_of("43"), "152");
    assert_eq!(length_of("125"), "135");
    assert_eq!(cols[2], "BITLOCKER");
    assert!(!types.contains(&"53"), "no option 53: {types:?}");

    let cols: Vec<&str> = lines[1].split('|').collect();
    let types: Vec<&str> = cols[0].split(',').collect();
    let lengths: Vec<&str> = cols[1].split(',').collect();
    // tshark lists the End option under its own field; the options before it are these.
    assert_eq!(&types[..2], ["43", "60"]);
    assert_eq!(lengths[0], "62");
    assert_eq!(cols[2], "BITLOCKER");
}

#[test]
fn tshark_dissects_an_encoded_v6_request() {
    if !testkit::require_tool("tshark") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v6.pcap");
    let request = v6::Request {
        xid: [0x45, 0xd4, 0x95],
        client_id: vec![0, 4, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
        elapsed: 300,
        thumbprint: Thumbprint::from_bytes([0x4a; 20]),
        key_protector: KeyProtector::from_bytes([0x5c; 256]),
    };
    write_pcap(
        &path,
        &[datagram(
            [0x00, 0x16, 0x3e, 0x01, 0x11, 0x22],
            [0x33, 0x33, 0, 1, 0, 2],
            "[fe80::216:3eff:fe01:1122]:546",
            "[ff02::1:2]:547",
            request.encode(),
            0,
        )],
    );
    let lines = tshark_fields(
        &path,
        &[
            "dhcpv6.msgtype",
            "dhcpv6.option.type",
            "dhcpv6.option.length",
            "dhcpv6.vendorclass.data",
            "udp.checksum.status",
        ],
    );
    assert_eq!(lines.len(), 1, "{lines:?}");
    let cols: Vec<&str> = lines[0].split('|').collect();
    assert_eq!(cols[0], "11");
    let types: Vec<&str> = cols[1].split(',').collect();
    let lengths: Vec<&str> = cols[2].split(',').collect();
    assert_eq!(&types[..5], ["1", "8", "6", "16", "17"]);
    assert_eq!(lengths[3], "15");
    assert_eq!(lengths[4], "288");
}
