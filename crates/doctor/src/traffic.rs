//! Following each client through the captures: every DHCP frame is read (through `nkpu::frame`
//! for the layers, `dhcp_wire` for the options and `nkpu` for Network Unlock messages) and
//! filed under the client it concerns: the `chaddr` of a DHCPv4 message, or for DHCPv6 the MAC
//! in the client's DUID (else the frame's source MAC for what the client sends).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use nkpu::frame::Family;
use nkpu::{KeyProtector, KeyProtectorReply, Message, Thumbprint};

use crate::Capture;

/// A frame of a capture: the capture's index in the inputs and the 1-based frame number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FrameRef {
    pub capture: usize,
    pub number: usize,
}

/// What one frame was, for one client.
#[derive(Debug, Clone)]
pub enum Seen {
    /// An ordinary DHCPv4 message: its type (53), `yiaddr` and `giaddr`.
    Dhcp {
        message_type: u8,
        yiaddr: Ipv4Addr,
        giaddr: Ipv4Addr,
        /// The frame's source address (for an OFFER or ACK: the DHCP server, or its relay).
        source: Option<IpAddr>,
    },
    /// A Network Unlock request.
    Request {
        family: Family,
        xid: u32,
        giaddr: Ipv4Addr,
        address: Option<IpAddr>,
        /// Where the frame is addressed (a relay unicasts to the servers of its helper list).
        destination: Option<IpAddr>,
        thumbprint: Thumbprint,
        key_protector: Box<KeyProtector>,
    },
    /// A Network Unlock reply.
    Reply {
        family: Family,
        xid: u32,
        reply: Box<KeyProtectorReply>,
    },
    /// A frame with vendor class `BITLOCKER` that breaks the wire format: the rule's label
    /// (`nkpu::DecodeError::reason`) and the error; `request` when sent by the client.
    Malformed {
        request: bool,
        rule: &'static str,
        error: String,
    },
}

/// One frame about a client.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: FrameRef,
    pub seen: Seen,
    /// Whether the frame's Ethernet source is the client itself (the capture is on its segment).
    pub from_client_mac: bool,
}

/// Every client's frames, by MAC, each in capture then frame order.
pub type Clients = BTreeMap<[u8; 6], Vec<Event>>;

/// Reads every frame of every capture and files it by client. Frames that are not DHCP, or
/// that cannot be tied to a client, are left out.
pub fn follow(captures: &[Capture]) -> Clients {
    let mut clients = Clients::new();
    for (capture, file) in captures.iter().enumerate() {
        for (index, bytes) in file.frames.iter().enumerate() {
            let at = FrameRef {
                capture,
                number: index + 1,
            };
            if let Some((mac, event)) = read_frame(at, bytes) {
                clients.entry(mac).or_default().push(event);
            }
        }
    }
    clients
}

fn read_frame(at: FrameRef, bytes: &[u8]) -> Option<([u8; 6], Event)> {
    let located = nkpu::frame::locate(bytes).ok()?;
    let source_mac = located.macs.map(|(src, _)| src);
    let source_ip = located.udp.map(|(src, _)| src.ip());
    let destination_ip = located.udp.map(|(_, dst)| dst.ip());
    match located.family {
        Family::V4 => {
            let payload = located.payload;
            let op = *payload.first()?;
            let field = |range: std::ops::Range<usize>| payload.get(range);
            let ip = |at: usize| -> Option<Ipv4Addr> {
                let b: [u8; 4] = field(at..at + 4)?.try_into().ok()?;
                Some(Ipv4Addr::from(b))
            };
            let mac: [u8; 6] = field(28..34)?.try_into().ok()?;
            let giaddr = ip(24)?;
            let event = |seen: Seen| Event {
                at,
                seen,
                from_client_mac: source_mac == Some(mac),
            };
            if dhcp_wire::v4_is_network_unlock(payload) {
                let seen = match nkpu::frame::decode(&located) {
                    Ok(Message::V4Request(r)) => Seen::Request {
                        family: Family::V4,
                        xid: r.xid,
                        giaddr: r.giaddr,
                        address: Some(if r.ciaddr.is_unspecified() {
                            source_ip.unwrap_or(IpAddr::V4(r.ciaddr))
                        } else {
                            IpAddr::V4(r.ciaddr)
                        }),
                        destination: destination_ip,
                        thumbprint: r.thumbprint,
                        key_protector: Box::new(r.key_protector),
                    },
                    Ok(Message::V4Reply(r)) => Seen::Reply {
                        family: Family::V4,
                        xid: r.xid,
                        reply: Box::new(r.reply),
                    },
                    Ok(_) => return None,
                    Err(err) => Seen::Malformed {
                        request: op == 1,
                        rule: err.reason(),
                        error: err.to_string(),
                    },
                };
                return Some((mac, event(seen)));
            }
            let options = dhcp_wire::v4_message_options(payload).ok()?;
            let message_type = options
                .options
                .iter()
                .find(|o| o.code == 53)
                .and_then(|o| o.data.first().copied())?;
            Some((
                mac,
                event(Seen::Dhcp {
                    message_type,
                    yiaddr: ip(16)?,
                    giaddr,
                    source: source_ip,
                }),
            ))
        }
        Family::V6 => {
            let payload = located.payload;
            if !dhcp_wire::v6_is_network_unlock(payload) {
                return None;
            }
            let message_type = *payload.first()?;
            let duid_mac = dhcp_wire::v6_message_options(payload)
                .ok()
                .and_then(|options| {
                    options
                        .iter()
                        .find(|o| o.code == 1)
                        .and_then(|o| mac_of_duid(o.data))
                });
            // What the server sends goes to the client: its destination MAC is the client's.
            let client_sends = message_type != 7;
            let frame_mac = located
                .macs
                .map(|(src, dst)| if client_sends { src } else { dst });
            let mac = duid_mac.or(frame_mac)?;
            let xid = u32::from_be_bytes([0, *payload.get(1)?, *payload.get(2)?, *payload.get(3)?]);
            let seen = match nkpu::frame::decode(&located) {
                Ok(Message::V6Request(r)) => Seen::Request {
                    family: Family::V6,
                    xid,
                    giaddr: Ipv4Addr::UNSPECIFIED,
                    address: source_ip,
                    destination: destination_ip,
                    thumbprint: r.thumbprint,
                    key_protector: Box::new(r.key_protector),
                },
                Ok(Message::V6Reply(r)) => Seen::Reply {
                    family: Family::V6,
                    xid,
                    reply: Box::new(r.reply),
                },
                Ok(_) => return None,
                Err(err) => Seen::Malformed {
                    request: client_sends,
                    rule: err.reason(),
                    error: err.to_string(),
                },
            };
            Some((
                mac,
                Event {
                    at,
                    seen,
                    from_client_mac: client_sends && source_mac == Some(mac),
                },
            ))
        }
    }
}

/// The link-layer address in a DUID-LLT (type 1) or DUID-LL (type 3) over Ethernet.
fn mac_of_duid(duid: &[u8]) -> Option<[u8; 6]> {
    let kind = u16::from_be_bytes([*duid.first()?, *duid.get(1)?]);
    let hardware = u16::from_be_bytes([*duid.get(2)?, *duid.get(3)?]);
    if hardware != 1 {
        return None;
    }
    let at = match kind {
        1 => 8,
        3 => 4,
        _ => return None,
    };
    duid.get(at..at + 6)?.try_into().ok()
}

/// The name of a DHCPv4 message type.
pub fn message_name(message_type: u8) -> &'static str {
    match message_type {
        1 => "DHCPDISCOVER",
        2 => "DHCPOFFER",
        3 => "DHCPREQUEST",
        4 => "DHCPDECLINE",
        5 => "DHCPACK",
        6 => "DHCPNAK",
        7 => "DHCPRELEASE",
        8 => "DHCPINFORM",
        _ => "DHCP message",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_mac_of_both_duid_forms_and_refuses_others() {
        let mac = [2, 0, 0, 0, 0, 9];
        let mut llt = vec![0, 1, 0, 1, 1, 2, 3, 4];
        llt.extend(mac);
        let mut ll = vec![0, 3, 0, 1];
        ll.extend(mac);
        assert_eq!(mac_of_duid(&llt), Some(mac));
        assert_eq!(mac_of_duid(&ll), Some(mac));
        assert_eq!(mac_of_duid(&[0, 2, 0, 1]), None);
        assert_eq!(mac_of_duid(&[0, 3]), None);
    }

    /// An Ethernet + IPv4 + UDP (68 -> 67) header around `payload`, so the bytes reach the
    /// DHCP readers rather than stopping at the frame.
    fn udp_frame(payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0xff; 6];
        frame.extend([2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        let total = u16::try_from(20 + 8 + payload.len()).expect("small");
        frame.extend([
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255,
        ]);
        frame[16..18].copy_from_slice(&total.to_be_bytes());
        frame.extend([0, 68, 0, 67]);
        frame.extend((total - 20).to_be_bytes());
        frame.extend([0, 0]);
        frame.extend(payload);
        frame
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_dhcp_payloads_never_panic(
            mut payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..700),
            cookie in proptest::prelude::any::<bool>(),
            vendor in proptest::prelude::any::<bool>(),
        ) {
            if cookie && payload.len() >= 240 {
                payload[236..240].copy_from_slice(&dhcp_wire::MAGIC_COOKIE);
                if vendor && payload.len() >= 251 {
                    payload[240] = 60;
                    payload[241] = 9;
                    payload[242..251].copy_from_slice(b"BITLOCKER");
                }
            }
            let at = FrameRef { capture: 0, number: 1 };
            let _ = read_frame(at, &udp_frame(&payload));
            let _ = read_frame(at, &payload);
        }
    }
}
