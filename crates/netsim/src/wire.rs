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
    let mut out = Vec::new();
    write_ethernet_frame(frame, &mut out)?;
    Some(out)
}

/// [`ethernet_frame`] into `out` (cleared first), so that a capture reuses one buffer for all
/// its frames; `None` (and `out` empty) for mixed families or a payload too long for UDP.
pub fn write_ethernet_frame(frame: &CapturedFrame, out: &mut Vec<u8>) -> Option<()> {
    out.clear();
    let payload = frame.payload.as_ref();
    let udp_len = u16::try_from(8 + payload.len()).ok()?;
    let mut udp_header = [0u8; 8];
    udp_header[0..2].copy_from_slice(&frame.src.port().to_be_bytes());
    udp_header[2..4].copy_from_slice(&frame.dst.port().to_be_bytes());
    udp_header[4..6].copy_from_slice(&udp_len.to_be_bytes());
    // The UDP checksum covers the family's pseudo-header, the UDP header and the payload.
    let udp_sum = match (frame.src.ip(), frame.dst.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let total = udp_len.checked_add(20)?;
            let mut pseudo = [0u8; 12];
            pseudo[0..4].copy_from_slice(&src.octets());
            pseudo[4..8].copy_from_slice(&dst.octets());
            pseudo[9] = PROTO_UDP;
            pseudo[10..12].copy_from_slice(&udp_len.to_be_bytes());
            let header = ipv4_header(src, dst, total, frame.ip_id, frame.ttl);
            out.reserve(14 + header.len() + usize::from(udp_len));
            push_link_header(out, frame, ETHERTYPE_IPV4);
            out.extend_from_slice(&header);
            internet_checksum(&[&pseudo, &udp_header, payload])
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let mut pseudo = [0u8; 40];
            pseudo[0..16].copy_from_slice(&src.octets());
            pseudo[16..32].copy_from_slice(&dst.octets());
            pseudo[32..36].copy_from_slice(&u32::from(udp_len).to_be_bytes());
            pseudo[39] = PROTO_UDP;
            let header = ipv6_header(src, dst, udp_len, frame.ttl);
            out.reserve(14 + header.len() + usize::from(udp_len));
            push_link_header(out, frame, ETHERTYPE_IPV6);
            out.extend_from_slice(&header);
            internet_checksum(&[&pseudo, &udp_header, payload])
        }
        _ => return None,
    };
    // A computed zero is sent as all ones: zero means "no checksum" (RFC 768).
    let checksum = match udp_sum {
        0 => 0xffff,
        c => c,
    };
    udp_header[6..8].copy_from_slice(&checksum.to_be_bytes());
    out.extend_from_slice(&udp_header);
    out.extend_from_slice(payload);
    Some(())
}

fn push_link_header(out: &mut Vec<u8>, frame: &CapturedFrame, ethertype: u16) {
    out.extend_from_slice(&frame.dst_mac.octets());
    out.extend_from_slice(&frame.src_mac.octets());
    out.extend_from_slice(&ethertype.to_be_bytes());
}

fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, total_len: u16, id: u16, ttl: u8) -> [u8; 20] {
    let mut h = [0u8; 20];
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

fn ipv6_header(src: Ipv6Addr, dst: Ipv6Addr, payload_len: u16, hop_limit: u8) -> [u8; 40] {
    let mut h = [0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&payload_len.to_be_bytes());
    h[6] = PROTO_UDP;
    h[7] = hop_limit;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h
}

/// The ones' complement of the ones' complement sum of 16-bit words (RFC 1071), over the
/// concatenation of `parts`: a part of odd length pairs its last byte with the next part's
/// first, and an odd total is padded with a zero byte at the very end.
pub fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    let mut pending: Option<u8> = None;
    for part in parts {
        let mut rest: &[u8] = part;
        if let Some(high) = pending.take() {
            match rest.split_first() {
                Some((&low, tail)) => {
                    sum += u64::from(u16::from_be_bytes([high, low]));
                    rest = tail;
                }
                None => {
                    pending = Some(high);
                    continue;
                }
            }
        }
        // Whole words, summed without a branch per byte (a storm checksums a hundred
        // megabytes of frames).
        let words = rest.chunks_exact(2);
        if let [last] = words.remainder() {
            pending = Some(*last);
        }
        sum += words
            .map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])))
            .sum::<u64>();
    }
    if let Some(high) = pending {
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
    /// The frame being written, reused for every frame.
    buffer: Vec<u8>,
}

impl PcapStream {
    /// Starts a pcap stream into `out` (the header is written at once).
    pub fn new(out: Box<dyn std::io::Write>) -> Result<PcapStream, CaptureError> {
        Ok(PcapStream {
            writer: PcapWriter::with_header(out, pcap_header())?,
            error: None,
            frames: 0,
            buffer: Vec::new(),
        })
    }

    /// Appends `frame` to the stream.
    pub fn record_frame(&mut self, frame: &CapturedFrame) {
        if self.error.is_some() {
            return;
        }
        if write_ethernet_frame(frame, &mut self.buffer).is_none() {
            return;
        }
        let len = u32::try_from(self.buffer.len()).unwrap_or(u32::MAX);
        let timestamp = PCAP_EPOCH + frame.time.since_start();
        match self
            .writer
            .write_packet(&PcapPacket::new(timestamp, len, &self.buffer))
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
///
/// Read through pcap-file's parser over a buffer of our own that grows only for a frame larger
/// than it: pcap-file's `PcapReader` allocates 8 MB per file, and a storm reads back a capture
/// per segment (a hundred and one at 10,000 clients, each buffer faulted in afresh).
pub fn read_pcap<R: std::io::Read>(
    input: R,
) -> Result<impl Iterator<Item = Result<CapturedFrame, CaptureError>>, CaptureError> {
    let mut buffer = ReadBack {
        input,
        bytes: vec![0; READ_BACK_CHUNK],
        start: 0,
        end: 0,
    };
    let parser = loop {
        match pcap_file::pcap::PcapParser::new(buffer.unread()) {
            Ok((rest, parser)) => {
                buffer.consume_to(rest.len());
                break parser;
            }
            Err(pcap_file::PcapError::IncompleteBuffer) => buffer.fill()?,
            Err(err) => return Err(err.into()),
        }
    };
    let mut failed = false;
    Ok(std::iter::from_fn(move || {
        if failed {
            return None;
        }
        loop {
            if buffer.start == buffer.end {
                match buffer.fill() {
                    Ok(()) => {}
                    // The end of the file between two frames: the capture is complete.
                    Err(CaptureError::Io(err))
                        if err.kind() == std::io::ErrorKind::UnexpectedEof =>
                    {
                        return None;
                    }
                    Err(err) => {
                        failed = true;
                        return Some(Err(err));
                    }
                }
            }
            let frame = match parser.next_packet(buffer.unread()) {
                Ok((rest, packet)) => {
                    let time =
                        SimTime::ZERO.saturating_add(packet.timestamp.saturating_sub(PCAP_EPOCH));
                    let frame = parse_ethernet_frame(time, &packet.data);
                    let rest = rest.len();
                    buffer.consume_to(rest);
                    frame
                }
                Err(pcap_file::PcapError::IncompleteBuffer) => {
                    if let Err(err) = buffer.fill() {
                        failed = true;
                        return Some(Err(err));
                    }
                    continue;
                }
                Err(err) => {
                    failed = true;
                    return Some(Err(err.into()));
                }
            };
            return Some(frame.ok_or(CaptureError::NotAFrame));
        }
    }))
}

/// How much of a capture [`read_pcap`] reads at a time: a read system call per 64 KiB, and a
/// buffer whose pages are faulted in afresh for each of a storm's captures (256 KiB cost the
/// 10,000-client storm 4,400 more page faults).
const READ_BACK_CHUNK: usize = 64 * 1024;

/// The unread part of a capture being read back: `bytes[start..end]`.
struct ReadBack<R> {
    input: R,
    bytes: Vec<u8>,
    start: usize,
    end: usize,
}

impl<R: std::io::Read> ReadBack<R> {
    fn unread(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    /// Marks everything but the last `left` unread bytes as read.
    fn consume_to(&mut self, left: usize) {
        self.start = self.end - left;
    }

    /// Reads more after the unread bytes (moved to the front first, the buffer doubled if they
    /// fill it); an `UnexpectedEof` error at the end of the input.
    fn fill(&mut self) -> Result<(), CaptureError> {
        self.bytes.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.end == self.bytes.len() {
            self.bytes.resize(self.bytes.len() * 2, 0);
        }
        loop {
            match self.input.read(&mut self.bytes[self.end..]) {
                Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err.into()),
            }
        }
    }
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
    let mut bytes = Vec::new();
    for frame in frames {
        if write_ethernet_frame(frame, &mut bytes).is_none() {
            continue;
        }
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
        fn the_checksum_is_rfc1071_over_the_concatenation_however_split(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            cuts in proptest::collection::vec(any::<usize>(), 0..5),
        ) {
            // The reference: RFC 1071 byte by byte over the whole message, padded at the end.
            let mut sum: u64 = bytes
                .chunks(2)
                .map(|w| u64::from(u16::from_be_bytes([w[0], w.get(1).copied().unwrap_or(0)])))
                .sum();
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            let expected = !(sum as u16);
            let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            at.sort_unstable();
            let mut parts: Vec<&[u8]> = Vec::new();
            let mut from = 0;
            for to in at {
                parts.push(&bytes[from..to]);
                from = to;
            }
            parts.push(&bytes[from..]);
            prop_assert_eq!(internet_checksum(&parts), expected);
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

    /// A reader that hands out at most `step` bytes a call, as a pipe may.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }
    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    fn many_frames(count: usize) -> Vec<CapturedFrame> {
        (0..count)
            .map(|i| {
                let i8 = u8::try_from(i % 251).expect("below 251");
                frame(
                    SocketAddr::from(([10, 0, 0, i8], 68)),
                    "255.255.255.255:67".parse().expect("addr"),
                    &vec![i8; 200 + 37 * (i % 40)],
                )
            })
            .collect()
    }

    #[test]
    fn a_capture_reads_back_whole_across_buffer_refills_and_short_reads() {
        // About 1.5 MB: the read-back refills its 64 KiB buffer many times, with frames
        // split across the refills.
        let frames = many_frames(1500);
        let pcap = pcap_bytes(&frames).expect("pcap");
        assert!(pcap.len() > 4 * READ_BACK_CHUNK);
        for step in [1, 7, 4096, usize::MAX] {
            let read: Vec<CapturedFrame> = read_pcap(Trickle { bytes: &pcap, step })
                .expect("header")
                .collect::<Result<_, _>>()
                .expect("frames");
            assert_eq!(read, frames, "read {step} bytes at a time");
        }
    }

    #[test]
    fn a_truncated_capture_gives_its_whole_frames_then_one_error() {
        let frames = many_frames(3);
        let pcap = pcap_bytes(&frames).expect("pcap");
        let read: Vec<Result<CapturedFrame, CaptureError>> = read_pcap(&pcap[..pcap.len() - 5])
            .expect("header")
            .collect();
        assert_eq!(read.len(), 3, "two frames and the error: {read:?}");
        assert_eq!(read[0].as_ref().ok(), Some(&frames[0]));
        assert_eq!(read[1].as_ref().ok(), Some(&frames[1]));
        assert!(
            matches!(&read[2], Err(CaptureError::Io(err)) if err.kind() == std::io::ErrorKind::UnexpectedEof),
            "{:?}",
            read[2]
        );
        assert!(read_pcap(&pcap[..10]).is_err(), "a cut header is an error");
        assert!(read_pcap(&[][..]).is_err(), "so is an empty file");
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
