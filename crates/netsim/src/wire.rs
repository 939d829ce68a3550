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

use std::io::Write as _;
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
    #[error("a captured packet is not an Ethernet/IP/UDP frame")]
    NotAFrame,
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

/// The frame of an Ethernet II / IPv4 or IPv6 / UDP packet as [`ethernet_frame`] writes it,
/// read back (from a capture streamed to a file), or `None` for anything else. An IPv6 frame
/// carries no identification: its `ip_id` reads as 0.
pub fn parse_ethernet_frame(time: SimTime, bytes: &[u8]) -> Option<CapturedFrame> {
    let mac =
        |at: usize| -> Option<MacAddr> { Some(MacAddr(bytes.get(at..at + 6)?.try_into().ok()?)) };
    let (dst_mac, src_mac) = (mac(0)?, mac(6)?);
    let ethertype = u16::from_be_bytes(bytes.get(12..14)?.try_into().ok()?);
    let ip = bytes.get(14..)?;
    let (src_ip, dst_ip, ttl, ip_id, udp): (IpAddr, IpAddr, u8, u16, &[u8]) = match ethertype {
        ETHERTYPE_IPV4 => {
            let header_len = usize::from(*ip.first()? & 0x0f) * 4;
            if *ip.first()? >> 4 != 4 || header_len < 20 || *ip.get(9)? != PROTO_UDP {
                return None;
            }
            let total = usize::from(u16::from_be_bytes(ip.get(2..4)?.try_into().ok()?));
            let src: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            let id = u16::from_be_bytes(ip.get(4..6)?.try_into().ok()?);
            (
                src.into(),
                dst.into(),
                *ip.get(8)?,
                id,
                ip.get(header_len..total)?,
            )
        }
        ETHERTYPE_IPV6 => {
            if *ip.first()? >> 4 != 6 || *ip.get(6)? != PROTO_UDP {
                return None;
            }
            let len = usize::from(u16::from_be_bytes(ip.get(4..6)?.try_into().ok()?));
            let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (
                src.into(),
                dst.into(),
                *ip.get(7)?,
                0,
                ip.get(40..40 + len)?,
            )
        }
        _ => return None,
    };
    let port = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes(udp.get(at..at + 2)?.try_into().ok()?))
    };
    let udp_len = usize::from(port(4)?);
    Some(CapturedFrame {
        time,
        src_mac,
        dst_mac,
        src: SocketAddr::new(src_ip, port(0)?),
        dst: SocketAddr::new(dst_ip, port(2)?),
        ttl,
        ip_id,
        payload: Bytes::copy_from_slice(udp.get(8..udp_len)?),
    })
}

/// A capture written frame by frame as a pcap stream, as `tcpdump -w` does: memory stays flat
/// however many frames cross the segment. The first write error is kept and reported by
/// [`PcapStream::finish`]; frames after it are not written.
pub struct PcapStream {
    writer: PcapWriter<Box<dyn std::io::Write>>,
    error: Option<CaptureError>,
    /// Frames written.
    frames: usize,
}

impl PcapStream {
    /// Starts a pcap stream into `out` (the header is written at once).
    pub fn new(out: Box<dyn std::io::Write>) -> Result<PcapStream, CaptureError> {
        Ok(PcapStream {
            writer: PcapWriter::with_header(out, pcap_header())?,
            error: None,
            frames: 0,
        })
    }

    /// Appends `frame` to the stream.
    pub fn record_frame(&mut self, frame: &CapturedFrame) {
        if self.error.is_some() {
            return;
        }
        let Some(bytes) = ethernet_frame(frame) else {
            return;
        };
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        let timestamp = PCAP_EPOCH + frame.time.since_start();
        match self
            .writer
            .write_packet(&PcapPacket::new(timestamp, len, &bytes))
        {
            Ok(_) => self.frames += 1,
            Err(err) => self.error = Some(err.into()),
        }
    }

    /// Flushes the stream: how many frames it holds, or the first error of the capture.
    pub fn finish(self) -> Result<usize, CaptureError> {
        if let Some(err) = self.error {
            return Err(err);
        }
        self.writer.into_writer().flush()?;
        Ok(self.frames)
    }
}

/// The frames of a pcap file written by [`write_pcap`] or a [`PcapStream`], in order.
pub fn read_pcap<R: std::io::Read>(
    input: R,
) -> Result<impl Iterator<Item = Result<CapturedFrame, CaptureError>>, CaptureError> {
    let mut reader = pcap_file::pcap::PcapReader::new(input)?;
    Ok(std::iter::from_fn(move || {
        let packet = match reader.next_packet()? {
            Ok(packet) => packet,
            Err(err) => return Some(Err(err.into())),
        };
        let time = SimTime::ZERO.saturating_add(packet.timestamp.saturating_sub(PCAP_EPOCH));
        Some(parse_ethernet_frame(time, &packet.data).ok_or(CaptureError::NotAFrame))
    }))
}

fn pcap_header() -> PcapHeader {
    PcapHeader {
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::NanoSecond,
        endianness: Endianness::Big,
        ..PcapHeader::default()
    }
}

/// A pcap file (LINKTYPE_ETHERNET, nanosecond timestamps, big-endian so that the bytes do not
/// depend on the machine) holding `frames`.
pub fn pcap_bytes(frames: &[CapturedFrame]) -> Result<Vec<u8>, CaptureError> {
    write_pcap(frames, Vec::new())
}

/// Writes `frames` as a pcap file into `out`, one frame at a time (a storm's capture is never
/// held twice), and hands `out` back.
pub fn write_pcap<W: std::io::Write>(frames: &[CapturedFrame], out: W) -> Result<W, CaptureError> {
    let mut writer = PcapWriter::with_header(out, pcap_header())?;
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
        let streamed = write_pcap(&frames, std::io::Cursor::new(Vec::new())).expect("pcap");
        assert_eq!(streamed.into_inner(), a);
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

        /// A frame written and read back is the same frame (IPv6 carries no identification).
        #[test]
        fn frames_read_back_as_written(
            payload in proptest::collection::vec(any::<u8>(), 0..700),
            v6 in any::<bool>(),
            src4 in any::<[u8; 4]>(), dst4 in any::<[u8; 4]>(),
            src6 in any::<[u8; 16]>(), dst6 in any::<[u8; 16]>(),
            sport in any::<u16>(), dport in any::<u16>(),
            ttl in any::<u8>(), ip_id in any::<u16>(),
            nanos in 0u64..10_000_000_000_000,
            macs in any::<([u8; 6], [u8; 6])>(),
        ) {
            let (src, dst) = if v6 {
                (SocketAddr::from((src6, sport)), SocketAddr::from((dst6, dport)))
            } else {
                (SocketAddr::from((src4, sport)), SocketAddr::from((dst4, dport)))
            };
            let f = CapturedFrame {
                time: SimTime::ZERO.saturating_add(Duration::from_nanos(nanos)),
                src_mac: MacAddr(macs.0),
                dst_mac: MacAddr(macs.1),
                src,
                dst,
                ttl,
                ip_id: if v6 { 0 } else { ip_id },
                payload: Bytes::from(payload),
            };
            let bytes = ethernet_frame(&f).expect("same family");
            prop_assert_eq!(parse_ethernet_frame(f.time, &bytes), Some(f.clone()));
            let pcap = pcap_bytes(std::slice::from_ref(&f)).expect("pcap");
            let read: Vec<CapturedFrame> = read_pcap(&pcap[..])
                .expect("header")
                .collect::<Result<_, _>>()
                .expect("frames");
            prop_assert_eq!(read, vec![f]);
        }

        #[test]
        fn parsing_arbitrary_bytes_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let _ = parse_ethernet_frame(SimTime::ZERO, &bytes);
            if let Ok(frames) = read_pcap(&bytes[..]) {
                for _ in frames.take(4) {}
            }
        }
    }

    #[test]
    fn a_stream_writes_what_pcap_bytes_writes() {
        let frames: Vec<CapturedFrame> = (0..5u8)
            .map(|i| {
                frame(
                    SocketAddr::from(([10, 0, 0, i], 68)),
                    "255.255.255.255:67".parse().expect("addr"),
                    &[i; 300],
                )
            })
            .collect();
        let out = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        struct Shared(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);
        impl std::io::Write for Shared {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.borrow_mut().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut stream = PcapStream::new(Box::new(Shared(out.clone()))).expect("header");
        for f in &frames {
            stream.record_frame(f);
        }
        assert_eq!(
            stream.finish().expect("flushed"),
            frames.len(),
            "frames counted"
        );
        assert_eq!(*out.borrow(), pcap_bytes(&frames).expect("pcap"));
    }

    #[test]
    fn a_failing_stream_reports_its_first_error() {
        struct Full;
        impl std::io::Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk full"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        // The header is buffered by nobody: it fails at once.
        assert!(PcapStream::new(Box::new(Full)).is_err());
    }
}
