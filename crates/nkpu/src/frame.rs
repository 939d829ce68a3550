//! Finding the DHCP payload inside what a capture holds: a whole Ethernet frame, an IPv4 or IPv6
//! packet, or a bare DHCP payload.
//!
//! Tools and tests hand nulab bytes from many sources (pcap files, Wireshark hex dumps, `tcpdump
//! -x`); this module peels the Ethernet, IP and UDP layers off so the codec sees the UDP body,
//! and says which family it is. It reads only what it needs: no checksums are verified, IPv4
//! fragments and exotic IPv6 extension headers are refused with a reason. Building frames (for
//! captures) is the simulator's: `netsim::wire`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The DHCP family of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// `dhcpv4` or `dhcpv6`, as the CLI's JSON says.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "dhcpv4",
            Family::V6 => "dhcpv6",
        }
    }
}

/// The outermost layer the bytes started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outer {
    Ethernet,
    Ip,
    Bare,
}

/// A DHCP payload found in a frame, with the addresses around it when there were any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<'a> {
    pub family: Family,
    pub outer: Outer,
    pub payload: &'a [u8],
    /// Source and destination MAC addresses, for an Ethernet frame.
    pub macs: Option<([u8; 6], [u8; 6])>,
    /// Source and destination IP address and UDP port, for a frame or an IP packet.
    pub udp: Option<(SocketAddr, SocketAddr)>,
}

/// Why no DHCP payload was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("empty input")]
    Empty,
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("IP protocol {0} is not UDP")]
    NotUdp(u8),
    #[error("UDP ports {0} -> {1} are not DHCP (67/68, 546/547)")]
    NotDhcpPorts(u16, u16),
    #[error("a fragmented IPv4 packet cannot be decoded on its own")]
    Fragment,
    #[error("ethertype {0:#06x} carries neither IPv4 nor IPv6")]
    UnknownEthertype(u16),
    #[error("neither an Ethernet frame, an IP packet nor a DHCP payload")]
    Unrecognised,
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const UDP: u8 = 17;
use dhcp_wire::MAGIC_COOKIE as DHCPV4_MAGIC;

/// Finds the DHCP payload in `bytes`, whatever layer they start at.
pub fn locate(bytes: &[u8]) -> Result<Located<'_>, FrameError> {
    if bytes.is_empty() {
        return Err(FrameError::Empty);
    }
    if looks_like_bare_dhcpv4(bytes) {
        return Ok(bare(Family::V4, bytes));
    }
    // An Ethernet frame whose ethertype is IP. Tried before the IP reading because a frame's
    // first byte (a MAC) can start with 0x4_ or 0x6_ by chance.
    if let Some(ethertype) = ethertype(bytes) {
        let mut offset = 14;
        let mut ethertype = ethertype;
        if ethertype == ETHERTYPE_VLAN {
            let tag = bytes.get(16..18).ok_or(FrameError::Truncated("VLAN tag"))?;
            ethertype = u16::from_be_bytes([tag[0], tag[1]]);
            offset = 18;
        }
        if ethertype == ETHERTYPE_IPV4 || ethertype == ETHERTYPE_IPV6 {
            let mut dst = [0u8; 6];
            let mut src = [0u8; 6];
            dst.copy_from_slice(&bytes[..6]);
            src.copy_from_slice(&bytes[6..12]);
            let mut located = ip(&bytes[offset..])?;
            located.outer = Outer::Ethernet;
            located.macs = Some((src, dst));
            return Ok(located);
        }
    }
    match bytes[0] >> 4 {
        4 | 6 => ip(bytes),
        _ if (1..=13).contains(&bytes[0]) && bytes.len() >= 4 => Ok(bare(Family::V6, bytes)),
        _ => Err(FrameError::Unrecognised),
    }
}

fn bare(family: Family, payload: &[u8]) -> Located<'_> {
    Located {
        family,
        outer: Outer::Bare,
        payload,
        macs: None,
        udp: None,
    }
}

fn looks_like_bare_dhcpv4(bytes: &[u8]) -> bool {
    bytes.len() >= 240 && bytes[236..240] == DHCPV4_MAGIC && matches!(bytes[0], 1 | 2)
}

fn ethertype(bytes: &[u8]) -> Option<u16> {
    let ethertype = u16::from_be_bytes([*bytes.get(12)?, *bytes.get(13)?]);
    matches!(ethertype, ETHERTYPE_IPV4 | ETHERTYPE_IPV6 | ETHERTYPE_VLAN).then_some(ethertype)
}

fn ip(bytes: &[u8]) -> Result<Located<'_>, FrameError> {
    match bytes.first().map(|b| b >> 4) {
        Some(4) => ipv4(bytes),
        Some(6) => ipv6(bytes),
        _ => Err(FrameError::Unrecognised),
    }
}

fn ipv4(bytes: &[u8]) -> Result<Located<'_>, FrameError> {
    let header_len = usize::from(bytes[0] & 0x0f) * 4;
    if header_len < 20 || bytes.len() < header_len {
        return Err(FrameError::Truncated("IPv4 header"));
    }
    let flags_fragment = u16::from_be_bytes([bytes[6], bytes[7]]);
    if flags_fragment & 0x3fff != 0 {
        return Err(FrameError::Fragment);
    }
    if bytes[9] != UDP {
        return Err(FrameError::NotUdp(bytes[9]));
    }
    let total = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    // Captures may carry Ethernet padding past the IP packet; trust the IP length when sane.
    let packet = if total >= header_len && total <= bytes.len() {
        &bytes[..total]
    } else {
        bytes
    };
    let src = Ipv4Addr::new(bytes[12], bytes[13], bytes[14], bytes[15]);
    let dst = Ipv4Addr::new(bytes[16], bytes[17], bytes[18], bytes[19]);
    udp(&packet[header_len..], src.into(), dst.into())
}

fn ipv6(bytes: &[u8]) -> Result<Located<'_>, FrameError> {
    let Some((header, mut rest)) = bytes.split_first_chunk::<40>() else {
        return Err(FrameError::Truncated("IPv6 header"));
    };
    let payload_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    if payload_len <= rest.len() {
        rest = &rest[..payload_len];
    }
    let mut next = header[6];
    // Hop-by-hop (0), routing (43) and destination options (60) headers: skip them.
    while matches!(next, 0 | 43 | 60) {
        let [nh, len, ..] = *rest else {
            return Err(FrameError::Truncated("IPv6 extension header"));
        };
        let skip = (usize::from(len) + 1) * 8;
        rest = rest
            .get(skip..)
            .ok_or(FrameError::Truncated("IPv6 extension header"))?;
        next = nh;
    }
    if next != UDP {
        return Err(FrameError::NotUdp(next));
    }
    let src: [u8; 16] = header[8..24]
        .try_into()
        .expect("16 bytes of a 40-byte header");
    let dst: [u8; 16] = header[24..40]
        .try_into()
        .expect("16 bytes of a 40-byte header");
    udp(rest, Ipv6Addr::from(src).into(), Ipv6Addr::from(dst).into())
}

fn udp(bytes: &[u8], src: IpAddr, dst: IpAddr) -> Result<Located<'_>, FrameError> {
    let Some((header, body)) = bytes.split_first_chunk::<8>() else {
        return Err(FrameError::Truncated("UDP header"));
    };
    let sport = u16::from_be_bytes([header[0], header[1]]);
    let dport = u16::from_be_bytes([header[2], header[3]]);
    let len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    let body = if len >= 8 && len - 8 <= body.len() {
        &body[..len - 8]
    } else {
        body
    };
    let family = match (sport, dport) {
        (67 | 68, 67 | 68) => Family::V4,
        (546 | 547, 546 | 547) => Family::V6,
        _ => return Err(FrameError::NotDhcpPorts(sport, dport)),
    };
    Ok(Located {
        family,
        outer: Outer::Ip,
        payload: body,
        macs: None,
        udp: Some((SocketAddr::new(src, sport), SocketAddr::new(dst, dport))),
    })
}

/// Decodes whatever [`locate`] found as a Network Unlock message of its family.
pub fn decode(located: &Located<'_>) -> Result<crate::Message, crate::DecodeError> {
    match located.family {
        Family::V4 => crate::v4::decode(located.payload),
        Family::V6 => crate::v6::decode(located.payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn refuses_what_is_not_dhcp() {
        assert_eq!(locate(&[]), Err(FrameError::Empty));
        assert_eq!(locate(&[0xff; 3]), Err(FrameError::Unrecognised));
        // An IPv4 header carrying TCP.
        let mut tcp = [0u8; 40];
        tcp[0] = 0x45;
        tcp[9] = 6;
        assert_eq!(locate(&tcp), Err(FrameError::NotUdp(6)));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            if let Ok(found) = locate(&bytes) {
                let _ = decode(&found);
            }
        }

        #[test]
        fn never_panics_on_ip_shaped_input(tail in proptest::collection::vec(any::<u8>(), 0..400), v6 in any::<bool>()) {
            let mut bytes = vec![if v6 { 0x60 } else { 0x45 }];
            bytes.extend(tail);
            let _ = locate(&bytes);
            let mut frame = vec![0u8; 12];
            frame.extend_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
            frame.extend(bytes);
            let _ = locate(&frame);
        }
    }
}
