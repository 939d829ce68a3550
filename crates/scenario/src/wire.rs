//! What went over the simulated wire, decoded: every captured frame of every segment named
//! (host names for addresses and MACs) and classified (DHCP message type, Network Unlock request
//! or reply with its thumbprint and transaction id). The transcript, the diagrams and the packet
//! expectations all read this one decoding.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use netsim::CapturedFrame;
use nkpu::{KeyProtectorReply, Message, Thumbprint};

/// One decoded frame. Names are shared (`Arc<str>`), not copied per frame: a 100,000-client
/// storm decodes about 1.5 million frames.
#[derive(Debug, Clone)]
pub struct Packet {
    pub at: Duration,
    pub segment: Arc<str>,
    pub from: Arc<str>,
    pub to: Arc<str>,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub kind: PacketKind,
    pub len: usize,
}

#[derive(Debug, Clone)]
pub enum PacketKind {
    /// A DHCPv4 message that is not Network Unlock ("DHCPDISCOVER" ...), with the BOOTP
    /// header's transaction id and client hardware address: what attributes a frame a relay
    /// forwards (neither from nor to the client) to the client whose exchange it is.
    Dhcp4 {
        name: &'static str,
        xid: u32,
        chaddr: [u8; 6],
    },
    /// A DHCPv6 message that is not Network Unlock.
    Dhcp6(u8),
    UnlockRequest {
        family: &'static str,
        xid: u32,
        thumbprint: Thumbprint,
    },
    UnlockReply {
        family: &'static str,
        xid: u32,
        /// Boxed: the 60 bytes inline made every packet of a storm's 1.5 million carry them.
        reply: Box<KeyProtectorReply>,
    },
    /// A Wake-on-LAN magic packet (UDP 9) for this MAC.
    WakeOnLan([u8; 6]),
    /// A frame that does not decode (a corrupting fault, say), and why.
    Undecodable(String),
}

impl Packet {
    /// A short description for transcripts and diagrams.
    pub fn summary(&self) -> String {
        match &self.kind {
            PacketKind::Dhcp4 { name, .. } => (*name).to_string(),
            PacketKind::Dhcp6(kind) => format!("DHCPv6 message type {kind}"),
            PacketKind::UnlockRequest {
                family, thumbprint, ..
            } => format!(
                "Network Unlock request ({family}, certificate {}…, key protector 256 bytes)",
                &thumbprint.to_string()[..8]
            ),
            PacketKind::UnlockReply { family, .. } => {
                format!("Network Unlock reply ({family}, 60-byte key protector reply)")
            }
            PacketKind::WakeOnLan(mac) => format!(
                "Wake-on-LAN magic packet for {}",
                mac.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            ),
            PacketKind::Undecodable(why) => format!("undecodable datagram: {why}"),
        }
    }

    pub fn is_unlock_request(&self) -> bool {
        matches!(self.kind, PacketKind::UnlockRequest { .. })
    }

    pub fn is_unlock_reply(&self) -> bool {
        matches!(self.kind, PacketKind::UnlockReply { .. })
    }

    pub fn is_plain_dhcp(&self) -> bool {
        matches!(self.kind, PacketKind::Dhcp4 { .. } | PacketKind::Dhcp6(_))
    }

    /// A plain DHCPv4 message's exchange: its transaction id and client hardware address.
    pub fn dhcp4_exchange(&self) -> Option<(u32, [u8; 6])> {
        match self.kind {
            PacketKind::Dhcp4 { xid, chaddr, .. } => Some((xid, chaddr)),
            _ => None,
        }
    }
}

/// Names for addresses and MACs.
#[derive(Debug, Clone)]
pub struct Names {
    pub by_ip: BTreeMap<IpAddr, Arc<str>>,
    pub by_mac: BTreeMap<[u8; 6], Arc<str>>,
    broadcast: Arc<str>,
}

impl Default for Names {
    fn default() -> Self {
        Names {
            by_ip: BTreeMap::new(),
            by_mac: BTreeMap::new(),
            broadcast: "broadcast".into(),
        }
    }
}

impl Names {
    fn name(&self, mac: [u8; 6], addr: SocketAddr) -> Arc<str> {
        let ip = addr.ip();
        if is_group(ip) {
            return self.broadcast.clone();
        }
        self.by_mac
            .get(&mac)
            .or_else(|| self.by_ip.get(&ip))
            .cloned()
            .unwrap_or_else(|| ip.to_string().into())
    }
}

fn is_group(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_broadcast() || v4.is_multicast(),
        IpAddr::V6(v6) => v6.is_multicast(),
    }
}

/// Decodes the frames of one segment as they are read: a storm's capture (hundreds of
/// megabytes at 100,000 clients) is never held in memory whole, only its decoding. `count` is
/// how many frames the capture holds (the result is allocated once, at its size; a wrong count
/// costs only reallocation).
pub fn decode<E>(
    segment: &str,
    frames: impl IntoIterator<Item = Result<CapturedFrame, E>>,
    count: usize,
    names: &Names,
) -> Result<Vec<Packet>, E> {
    let segment: Arc<str> = segment.into();
    let mut packets = Vec::with_capacity(count);
    for frame in frames {
        let frame = frame?;
        let payload: &[u8] = &frame.payload;
        // The port first: looking for a magic packet scans the whole payload.
        let wake = (frame.dst.port() == boot_client::boot::WAKE_ON_LAN_PORT)
            .then(|| boot_client::boot::magic_packet_target(payload))
            .flatten();
        let kind = match wake {
            Some(mac) => PacketKind::WakeOnLan(mac),
            None => classify(frame.src, payload),
        };
        packets.push(Packet {
            at: frame.time.since_start(),
            segment: segment.clone(),
            from: names.name(frame.src_mac.0, frame.src),
            to: names.name(frame.dst_mac.0, frame.dst),
            src: frame.src,
            dst: frame.dst,
            kind,
            len: payload.len(),
        });
    }
    Ok(packets)
}

fn classify(src: SocketAddr, payload: &[u8]) -> PacketKind {
    let decoded = if src.is_ipv4() {
        nkpu::v4::decode(payload)
    } else {
        nkpu::v6::decode(payload)
    };
    match decoded {
        Ok(Message::V4Request(r)) => PacketKind::UnlockRequest {
            family: "DHCPv4",
            xid: r.xid,
            thumbprint: r.thumbprint,
        },
        Ok(Message::V6Request(r)) => PacketKind::UnlockRequest {
            family: "DHCPv6",
            xid: xid24(r.xid),
            thumbprint: r.thumbprint,
        },
        Ok(Message::V4Reply(r)) => PacketKind::UnlockReply {
            family: "DHCPv4",
            xid: r.xid,
            reply: Box::new(r.reply),
        },
        Ok(Message::V6Reply(r)) => PacketKind::UnlockReply {
            family: "DHCPv6",
            xid: xid24(r.xid),
            reply: Box::new(r.reply),
        },
        Err(err) if err.is_not_network_unlock() => {
            if src.is_ipv4() {
                let (xid, chaddr) = bootp_exchange(payload);
                PacketKind::Dhcp4 {
                    name: dhcp4_type(payload),
                    xid,
                    chaddr,
                }
            } else {
                PacketKind::Dhcp6(payload.first().copied().unwrap_or(0))
            }
        }
        Err(err) => PacketKind::Undecodable(err.to_string()),
    }
}

fn xid24(xid: [u8; 3]) -> u32 {
    u32::from_be_bytes([0, xid[0], xid[1], xid[2]])
}

/// The BOOTP header's `xid` (bytes 4 to 8) and the first six bytes of `chaddr` (28 to 34), as
/// an Ethernet client's MAC; zeros where a frame is too short to hold them.
fn bootp_exchange(payload: &[u8]) -> (u32, [u8; 6]) {
    let xid = payload
        .get(4..8)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_be_bytes);
    let chaddr = payload
        .get(28..34)
        .and_then(|b| <[u8; 6]>::try_from(b).ok())
        .unwrap_or_default();
    (xid, chaddr)
}

/// The DHCPv4 message type (option 53) by name, read with the workspace's one reader of the
/// DHCP wire format ([`dhcp_wire`]), which never panics on a corrupted frame (where dhcproto
/// 0.15 can).
fn dhcp4_type(payload: &[u8]) -> &'static str {
    let options = match dhcp_wire::v4_message_options(payload) {
        Ok(walk) => walk.options,
        Err(dhcp_wire::WireError::OptionTruncated { .. }) => return "DHCP (malformed options)",
        Err(_) => return "BOOTP (no message type)",
    };
    let Some(message_type) = options.iter().find(|option| option.code == 53) else {
        return "BOOTP (no message type)";
    };
    match message_type.data.first() {
        Some(1) => "DHCPDISCOVER",
        Some(2) => "DHCPOFFER",
        Some(3) => "DHCPREQUEST",
        Some(4) => "DHCPDECLINE",
        Some(5) => "DHCPACK",
        Some(6) => "DHCPNAK",
        Some(7) => "DHCPRELEASE",
        Some(8) => "DHCPINFORM",
        _ => "DHCP (unknown type)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn classifying_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = classify("10.0.0.1:68".parse().expect("addr"), &bytes);
            let _ = classify("[fe80::1]:546".parse().expect("addr"), &bytes);
            let _ = dhcp4_type(&bytes);
            let _ = bootp_exchange(&bytes);
        }
    }

    #[test]
    fn option_53_names_the_message() {
        let mut payload = vec![0u8; dhcp_wire::BOOTP_HEADER_LEN];
        payload.extend_from_slice(&dhcp_wire::MAGIC_COOKIE);
        payload.extend_from_slice(&[0, 53, 1, 5, 255]);
        assert_eq!(dhcp4_type(&payload), "DHCPACK");
        // A BOOTREPLY over Ethernet (op 2, htype 1, hlen 6) with its xid and chaddr.
        payload[..3].copy_from_slice(&[2, 1, 6]);
        payload[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        payload[28..34].copy_from_slice(&[2, 0, 0, 0, 0, 7]);
        assert_eq!(bootp_exchange(&payload), (0x1234_5678, [2, 0, 0, 0, 0, 7]));
        match classify("10.0.0.1:67".parse().expect("addr"), &payload) {
            PacketKind::Dhcp4 { name, xid, chaddr } => {
                assert_eq!(
                    (name, xid, chaddr),
                    ("DHCPACK", 0x1234_5678, [2, 0, 0, 0, 0, 7])
                );
            }
            other => panic!("not plain DHCPv4: {other:?}"),
        }
        assert_eq!(bootp_exchange(&payload[..30]), (0x1234_5678, [0; 6]));
        // An option cut short.
        assert_eq!(
            dhcp4_type(&payload[..dhcp_wire::V4_OPTIONS_AT + 3]),
            "DHCP (malformed options)"
        );
        // No cookie, no options.
        assert_eq!(dhcp4_type(&payload[..200]), "BOOTP (no message type)");
        payload.truncate(dhcp_wire::V4_OPTIONS_AT);
        payload.push(255);
        assert_eq!(dhcp4_type(&payload), "BOOTP (no message type)");
    }
}
