//! Real Ethernet II + IPv4/IPv6 + UDP framing of simulated datagrams, and the pcap file of a
//! segment's capture, so that Wireshark and tshark dissect what the simulator carried.
//!
//! The simulator itself moves only addresses and payloads; headers are built when a capture is
//! exported, which keeps per-delivery work small. Both checksums are real: the IPv4 header
//! checksum (RFC 791) and the UDP checksum over the pseudo-header (RFC 768, RFC 8200 section
//! 8.1). Payloads longer than one Ethernet MTU are written as one oversized frame, not
//! fragmented: Wireshark still dissects them (the capture's snap length is 65,535).
//!
//! Timestamps are simulated time after a fixed epoch ([`PCAP_EPOCH`]), never the wall clock, so
//! the same run gives a byte-identical file.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

use crate::{MacAddr, SimTime};

/// Simulated time zero in a capture: 2024-01-01T00:00:00Z, so a capture shows plausible dates
/// that never depend on when the run happened.
pub const PCAP_EPOCH: Duration = Duration::from_secs(1_704_067_200);

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const PROTO_UDP: u8 = 17;

/// One frame as it crossed a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedFrame {
    pub time: SimTime,
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// IPv4 identification (a per-segment counter: deterministic and distinct).
    pub ip_id: u16,
    pub payload: Bytes,
}

/// Why a capture could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    #[error("the segment is not being captured (call Simulation::capture first)")]
    NotCaptured,
    #[error("no such segment")]
    NoSuchSegment,
    #[error("writing the pcap: {0}")]
    Pcap(#[from] pcap_file::PcapError),
    #[error("writing the pcap file: {0}")]
    Io(#[from] std::io::Error),
}

/// The Ethernet II frame of a UDP datagram, or `None` if source and destination are of
/// different families (the simulator refuses to send those, so this does not happen for
/// captured frames).
pub fn ethernet_frame(frame: &CapturedFrame) -> Option<Vec<u8>> {
    let payload = frame.payload.as_ref();
    let udp_len = 8 + payload.len();
    let (ethertype, ip_header) = match (frame.src.ip(), frame.dst.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let udp_len16 = u16::try_from(udp_len).ok()?;
            let total = udp_len16.checked_add(20)?;
            (
                ETHERTYPE_IPV4,
                ipv4_header(src, dst, total, frame.ip_id, frame.ttl),
            )
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let udp_len16 = u16::try_from(udp_len).ok()?;
            (ETHERTYPE_IPV6, ipv6_header(src, dst, udp_len16, frame.ttl))
        }
        _ => return None,
    };
    let mut out = Vec::with_capacity(14 + ip_header.len() + udp_len);
    out.extend_from_slice(&frame.dst_mac.octets());
    out.extend_from_slice(&frame.src_mac.octets());
    out.extend_from_slice(&ethertype.to_be_bytes());
    out.extend_from_slice(&ip_header);
    out.extend_from_slice(&udp_segment(frame.src, frame.dst, payload)?);
    Some(out)
}

fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, total_len: u16, id: u16, ttl: u8) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0] = 0x45; // version 4, 5 words of header
    h[2..4].copy_from_slice(&total_len.to_be_bytes());
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h[8] = ttl;
    h[9] = PROTO_UDP;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let checksum = internet_checksum(&[&h]);
    h[10..12].copy_from_slice(&checksum.to_be_bytes());
    h
}

fn ipv6_header(src: Ipv6Addr, dst: Ipv6Addr, payload_len: u16, hop_limit: u8) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&payload_len.to_be_bytes());
    h[6] = PROTO_UDP;
    h[7] = hop_limit;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h
}

/// The UDP header and payload with the checksum over the family's pseudo-header.
fn udp_segment(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(8 + payload.len()).ok()?;
    let mut header = [0u8; 8];
    header[0..2].copy_from_slice(&src.port().to_be_bytes());
    header[2..4].copy_from_slice(&dst.port().to_be_bytes());
    header[4..6].copy_from_slice(&len.to_be_bytes());
    let pseudo: Vec<u8> = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = Vec::with_capacity(12);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[0, PROTO_UDP]);
            p.extend_from_slice(&len.to_be_bytes());
            p
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut p = Vec::with_capacity(40);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&u32::from(len).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, PROTO_UDP]);
            p
        }
        _ => return None,
    };
    let checksum = match internet_checksum(&[&pseudo, &header, payload]) {
        // A computed zero is sent as all ones: zero means "no checksum" (RFC 768).
        0 => 0xffff,
        c => c,
    };
    header[6..8].copy_from_slice(&checksum.to_be_bytes());
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    Some(out)
}

/// The ones' complement of the ones' complement sum of 16-bit words (RFC 1071), over the
/// concatenation of `parts` (an odd-length part is padded only at the very end, so every part
/// but the last must have even length, as the headers here do).
pub fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &byte in part.iter() {
            match odd.take() {
                Some(high) => sum += u64::from(u16::from_be_bytes([high, byte])),
                None => odd = Some(byte),
            }
        }
    }
    if let Some(high) = odd {
        sum += u64::from(u16::from_be_bytes([high, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The fold above leaves at most 16 bits.
    !(u16::try_from(sum).unwrap_or(u16::MAX))
}

/// A pcap file (LINKTYPE_ETHERNET, nanosecond timestamps, big-endian so that the bytes do not
/// depend on the machine) holding `frames`.
pub fn pcap_bytes(frames: &[CapturedFrame]) -> Result<Vec<u8>, CaptureError> {
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::NanoSecond,
        endianness: Endianness::Big,
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(Vec::new(), header)?;
    for frame in frames {
        let Some(bytes) = ethernet_frame(frame) else {
            continue;
        };
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        let timestamp = PCAP_EPOCH + frame.time.since_start();
        writer.write_packet(&PcapPacket::new(timestamp, len, &bytes))?;
    }
    Ok(writer.into_writer())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> CapturedFrame {
        CapturedFrame {
            time: SimTime::from_secs(1),
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst_mac: MacAddr::BROADCAST,
            src,
            dst,
            ttl: 64,
            ip_id: 7,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    #[test]
    fn rfc1071_example_checksum() {
        // RFC 1071 section 3's worked example sums to 0xddf2; the checksum is its complement.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&[&data]), !0xddf2);
    }

    #[test]
    fn ipv4_frame_has_valid_checksums() {
        let f = frame(
            "10.0.0.5:68".parse().expect("addr"),
            "255.255.255.255:67".parse().expect("addr"),
            b"hello, odd length",
        );
        let bytes = ethernet_frame(&f).expect("same family");
        assert_eq!(&bytes[12..14], &[0x08, 0x00]);
        let ip = &bytes[14..34];
        assert_eq!(internet_checksum(&[ip]), 0, "a valid header sums to zero");
        let udp = &bytes[34..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&ip[12..20]);
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&udp[4..6]);
        assert_eq!(internet_checksum(&[&pseudo, udp]), 0);
        assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), 68);
        assert_eq!(&udp[8..], b"hello, odd length");
    }

    #[test]
    fn ipv6_frame_has_valid_udp_checksum() {
        let f = frame(
            "[fe80::1]:546".parse().expect("addr"),
            "[ff02::1:2]:547".parse().expect("addr"),
            b"\x0b\x01\x02\x03",
        );
        let bytes = ethernet_frame(&f).expect("same family");
        assert_eq!(&bytes[12..14], &[0x86, 0xdd]);
        let ip = &bytes[14..54];
        let udp = &bytes[54..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&ip[8..40]);
        pseudo.extend_from_slice(&(udp.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 17]);
        assert_eq!(internet_checksum(&[&pseudo, udp]), 0);
    }

    #[test]
    fn mixed_families_are_refused() {
        let f = frame(
            "10.0.0.1:1".parse().expect("addr"),
            "[fe80::1]:2".parse().expect("addr"),
            b"x",
        );
        assert_eq!(ethernet_frame(&f), None);
    }

    #[test]
    fn pcap_is_deterministic_and_starts_with_big_endian_nanosecond_magic() {
        let frames = vec![frame(
            "10.0.0.1:1000".parse().expect("addr"),
            "10.0.0.2:2000".parse().expect("addr"),
            b"ping",
        )];
        let a = pcap_bytes(&frames).expect("pcap");
        let b = pcap_bytes(&frames).expect("pcap");
        assert_eq!(a, b);
        assert_eq!(&a[..4], &[0xa1, 0xb2, 0x3c, 0x4d]);
        let mut reader = pcap_file::pcap::PcapReader::new(&a[..]).expect("readable");
        let packet = reader.next_packet().expect("one packet").expect("valid");
        assert_eq!(packet.timestamp, PCAP_EPOCH + Duration::from_secs(1));
        assert_eq!(packet.data.len(), 14 + 20 + 8 + 4);
    }

    proptest! {
        #[test]
        fn every_ipv4_frame_checksums_to_zero(
            payload in proptest::collection::vec(any::<u8>(), 0..600),
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
            sport in any::<u16>(), dport in any::<u16>(),
        ) {
            let f = frame(
                SocketAddr::from((src, sport)),
                SocketAddr::from((dst, dport)),
                &payload,
            );
            let bytes = ethernet_frame(&f).expect("same family");
            prop_assert_eq!(internet_checksum(&[&bytes[14..34]]), 0);
            let udp = &bytes[34..];
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&src);
            pseudo.extend_from_slice(&dst);
            pseudo.extend_from_slice(&[0, 17]);
            pseudo.extend_from_slice(&udp[4..6]);
            // Also when the computed checksum was zero and 0xffff went on the wire: in ones'
            // complement arithmetic 0xffff is zero.
            prop_assert_eq!(internet_checksum(&[&pseudo, udp]), 0);
        }
    }
}
