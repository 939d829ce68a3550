//! The event trace: what happened, when, where, to which packet, in lines a person can read.
//!
//! Events are stored structured (labels are shared `Arc<str>`, payloads shared `Bytes`) and
//! formatted only when displayed, so a traced run costs little more than an untraced one and an
//! untraced run (the benchmark) costs nothing. Two runs with the same seed produce equal
//! traces: the determinism tests compare them.
//!
//! ```text
//! [   2.000000s] client-1/eth0 sent 0.0.0.0:68 -> 255.255.255.255:67 DHCPv4 DISCOVER xid=0x00000001, 244 bytes
//! [   2.000050s] server/eth0 received 0.0.0.0:68 -> 255.255.255.255:67 DHCPv4 DISCOVER xid=0x00000001, 244 bytes
//! [   2.000050s] laptop/eth0 dropped 0.0.0.0:68 -> 255.255.255.255:67, 244 bytes: lost (fault 0: loss 30%)
//! ```

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dhcproto::{Decodable, Decoder};
use ipnet::Ipv4Net;

use crate::SimTime;

/// One line of the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    pub time: SimTime,
    pub kind: TraceKind,
}

/// What happened. `at` is the `host/adapter` (or `router/interface`) where it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceKind {
    /// A service or a relay put a datagram on a segment.
    Sent {
        at: Arc<str>,
        src: SocketAddr,
        dst: SocketAddr,
        payload: Bytes,
    },
    /// A service received a datagram (the payload as delivered: corrupted, if a fault did).
    Received {
        at: Arc<str>,
        src: SocketAddr,
        dst: SocketAddr,
        payload: Bytes,
    },
    /// A datagram did not reach `at`, and why.
    Dropped {
        at: Arc<str>,
        src: SocketAddr,
        dst: SocketAddr,
        len: usize,
        reason: DropReason,
    },
    /// A fault changed a delivery to `at` without dropping it.
    Faulted {
        at: Arc<str>,
        src: SocketAddr,
        dst: SocketAddr,
        fault: FaultAction,
    },
    /// A router forwarded a datagram out of interface `at`.
    Forwarded {
        at: Arc<str>,
        src: SocketAddr,
        dst: SocketAddr,
        len: usize,
    },
    /// A relay agent on interface `at` forwarded a client's request to a helper address.
    RelayedRequest {
        at: Arc<str>,
        giaddr: Ipv4Addr,
        helper: Ipv4Addr,
        len: usize,
    },
    /// A relay agent delivered a server's reply on interface `at`.
    RelayedReply {
        at: Arc<str>,
        dst: SocketAddr,
        len: usize,
    },
    LinkChanged {
        at: Arc<str>,
        up: bool,
    },
    AddressChanged {
        at: Arc<str>,
        addr: Option<Ipv4Net>,
    },
    HostCrashed {
        host: Arc<str>,
    },
    HostStarted {
        host: Arc<str>,
    },
    ServiceStarted {
        host: Arc<str>,
        service: Arc<str>,
    },
    ServiceStopped {
        host: Arc<str>,
        service: Arc<str>,
    },
}

/// Why a datagram was not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// The sending or receiving adapter's cable is unplugged.
    LinkDown,
    /// The receiving host is crashed.
    HostDown,
    /// Nobody is bound to the destination port.
    NoListener,
    /// No adapter on the segment holds the destination address (ARP would go unanswered).
    Unreachable,
    /// No router or route leads to the destination.
    NoRoute,
    /// The IPv4 TTL ran out in a routing loop.
    TtlExpired,
    /// A relay agent refused the message (not a request, malformed, or too many hops).
    RelayRefused,
    /// A fault rule dropped it: `rule` is its index in the chain, `description` what it is.
    Fault { rule: usize, description: String },
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::LinkDown => f.write_str("link down"),
            DropReason::HostDown => f.write_str("host down"),
            DropReason::NoListener => f.write_str("no listener"),
            DropReason::Unreachable => f.write_str("unreachable (no such address on the segment)"),
            DropReason::NoRoute => f.write_str("no route"),
            DropReason::TtlExpired => f.write_str("TTL expired"),
            DropReason::RelayRefused => f.write_str("relay refused (not a valid DHCP request)"),
            DropReason::Fault { rule, description } if description.starts_with("loss") => {
                write!(f, "lost (fault {rule}: {description})")
            }
            DropReason::Fault { rule, description } => {
                write!(f, "blocked (fault {rule}: {description})")
            }
        }
    }
}

/// What a fault did to a delivery it did not drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultAction {
    Delayed(Duration),
    Duplicated,
    /// Byte `offset` was replaced.
    Corrupted {
        offset: usize,
    },
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] ", self.time)?;
        match &self.kind {
            TraceKind::Sent {
                at,
                src,
                dst,
                payload,
            } => {
                let what = summarize(*src, *dst, payload);
                write!(
                    f,
                    "{at} sent {src} -> {dst} {what}, {} bytes",
                    payload.len()
                )
            }
            TraceKind::Received {
                at,
                src,
                dst,
                payload,
            } => {
                let what = summarize(*src, *dst, payload);
                write!(
                    f,
                    "{at} received {src} -> {dst} {what}, {} bytes",
                    payload.len()
                )
            }
            TraceKind::Dropped {
                at,
                src,
                dst,
                len,
                reason,
            } => {
                write!(f, "{at} dropped {src} -> {dst}, {len} bytes: {reason}")
            }
            TraceKind::Faulted {
                at,
                src,
                dst,
                fault,
            } => match fault {
                FaultAction::Delayed(d) => write!(f, "{at} delayed {src} -> {dst} by {d:?}"),
                FaultAction::Duplicated => write!(f, "{at} duplicated {src} -> {dst}"),
                FaultAction::Corrupted { offset } => {
                    write!(f, "{at} corrupted {src} -> {dst} at byte {offset}")
                }
            },
            TraceKind::Forwarded { at, src, dst, len } => {
                write!(f, "{at} forwarded {src} -> {dst}, {len} bytes")
            }
            TraceKind::RelayedRequest {
                at,
                giaddr,
                helper,
                len,
            } => write!(
                f,
                "{at} relayed DHCPv4 request to {helper}:67 (giaddr {giaddr}), {len} bytes"
            ),
            TraceKind::RelayedReply { at, dst, len } => {
                write!(f, "{at} relayed DHCPv4 reply to {dst}, {len} bytes")
            }
            TraceKind::LinkChanged { at, up } => {
                write!(f, "{at} link {}", if *up { "up" } else { "down" })
            }
            TraceKind::AddressChanged {
                at,
                addr: Some(addr),
            } => {
                write!(f, "{at} address set to {addr}")
            }
            TraceKind::AddressChanged { at, addr: None } => write!(f, "{at} address cleared"),
            TraceKind::HostCrashed { host } => write!(f, "{host} crashed"),
            TraceKind::HostStarted { host } => write!(f, "{host} started"),
            TraceKind::ServiceStarted { host, service } => {
                write!(f, "{host} service {service} started")
            }
            TraceKind::ServiceStopped { host, service } => {
                write!(f, "{host} service {service} stopped")
            }
        }
    }
}

/// A short description of a UDP payload: DHCPv4 and DHCPv6 messages by type (noting Network
/// Unlock's `BITLOCKER` vendor class), anything else as `UDP`.
pub fn summarize(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> String {
    let ports = (src.port(), dst.port());
    if matches!(ports, (68, 67) | (67, 68) | (67, 67)) {
        return summarize_dhcpv4(payload);
    }
    if matches!(ports, (546, 547) | (547, 546) | (547, 547)) {
        return summarize_dhcpv6(payload);
    }
    "UDP".to_owned()
}

/// Read by hand, not with dhcproto: dhcproto 0.15's v4 option decoder `debug_assert!`s the
/// length of some options (80 rapid commit, 94 client network interface, ...), so arbitrary
/// bytes panic it in debug builds, and a trace line must never panic on a corrupted packet.
/// Only the fixed header, option 53 (message type) and option 60 (vendor class) are needed.
fn summarize_dhcpv4(payload: &[u8]) -> String {
    const TYPES: [&str; 18] = [
        "DISCOVER",
        "OFFER",
        "REQUEST",
        "DECLINE",
        "ACK",
        "NAK",
        "RELEASE",
        "INFORM",
        "FORCERENEW",
        "LEASEQUERY",
        "LEASEUNASSIGNED",
        "LEASEUNKNOWN",
        "LEASEACTIVE",
        "BULKLEASEQUERY",
        "LEASEQUERYDONE",
        "ACTIVELEASEQUERY",
        "LEASEQUERYSTATUS",
        "TLS",
    ];
    let Some(header) = crate::bootp::BootpHeader::parse(payload) else {
        return "DHCPv4 (malformed)".to_owned();
    };
    let mut kind = None;
    let mut unlock = false;
    let mut rest = &payload[crate::bootp::MIN_LEN..];
    while let [code, tail @ ..] = rest {
        match code {
            0 => rest = tail,
            255 => break,
            _ => {
                let Some((&len, tail)) = tail.split_first() else {
                    return "DHCPv4 (malformed)".to_owned();
                };
                let Some(value) = tail.get(..usize::from(len)) else {
                    return "DHCPv4 (malformed)".to_owned();
                };
                match (code, value) {
                    (53, [t]) => kind = Some(*t),
                    (60, b"BITLOCKER") => unlock = true,
                    _ => {}
                }
                rest = &tail[usize::from(len)..];
            }
        }
    }
    let kind = match kind {
        Some(t) => TYPES
            .get(usize::from(t).wrapping_sub(1))
            .map_or_else(|| format!("type {t}"), |name| (*name).to_owned()),
        None if header.op() == crate::bootp::BOOTREPLY => "BOOTREPLY".to_owned(),
        None => "BOOTREQUEST".to_owned(),
    };
    let xid = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
    let unlock = if unlock { " (Network Unlock)" } else { "" };
    format!("DHCPv4 {kind} xid=0x{xid:08x}{unlock}")
}

fn summarize_dhcpv6(payload: &[u8]) -> String {
    use dhcproto::v6::Message;
    match Message::decode(&mut Decoder::new(payload)) {
        Ok(msg) => {
            let kind = format!("{:?}", msg.msg_type()).to_uppercase();
            let xid = msg.xid();
            format!(
                "DHCPv6 {kind} xid=0x{:02x}{:02x}{:02x}",
                xid[0], xid[1], xid[2]
            )
        }
        Err(_) => "DHCPv6 (malformed)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::Encodable;
    use proptest::prelude::*;

    #[test]
    fn names_dhcp_messages_and_network_unlock() {
        use dhcproto::v4::{DhcpOption, Message, MessageType};
        let mut msg = Message::default();
        msg.set_xid(0xabcd);
        msg.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Discover));
        let plain = msg.to_vec().expect("encode");
        let (c, s) = (
            "0.0.0.0:68".parse().expect("a"),
            "255.255.255.255:67".parse().expect("a"),
        );
        assert_eq!(summarize(c, s, &plain), "DHCPv4 DISCOVER xid=0x0000abcd");
        msg.opts_mut()
            .insert(DhcpOption::ClassIdentifier(b"BITLOCKER".to_vec()));
        let unlock = msg.to_vec().expect("encode");
        assert_eq!(
            summarize(c, s, &unlock),
            "DHCPv4 DISCOVER xid=0x0000abcd (Network Unlock)"
        );
        assert_eq!(summarize(c, s, b"junk"), "DHCPv4 (malformed)");
        assert_eq!(summarize(s, "10.0.0.1:9".parse().expect("a"), b"x"), "UDP");
    }

    #[test]
    fn names_dhcpv6_messages() {
        use dhcproto::v6::{Message, MessageType};
        let msg = Message::new_with_id(MessageType::InformationRequest, [1, 2, 3]);
        let bytes = msg.to_vec().expect("encode");
        let (c, s) = (
            "[fe80::1]:546".parse().expect("a"),
            "[ff02::1:2]:547".parse().expect("a"),
        );
        assert_eq!(
            summarize(c, s, &bytes),
            "DHCPv6 INFORMATIONREQUEST xid=0x010203"
        );
    }

    #[test]
    fn lines_read_as_documented() {
        let event = TraceEvent {
            time: SimTime::from_secs(2),
            kind: TraceKind::Dropped {
                at: "laptop/eth0".into(),
                src: "0.0.0.0:68".parse().expect("a"),
                dst: "255.255.255.255:67".parse().expect("a"),
                len: 244,
                reason: DropReason::Fault {
                    rule: 0,
                    description: "loss 30%".into(),
                },
            },
        };
        assert_eq!(
            event.to_string(),
            "[   2.000000s] laptop/eth0 dropped 0.0.0.0:68 -> 255.255.255.255:67, 244 bytes: lost (fault 0: loss 30%)"
        );
    }

    proptest! {
        #[test]
        fn summarizing_arbitrary_bytes_never_panics(
            payload in proptest::collection::vec(any::<u8>(), 0..700),
            v6 in any::<bool>(),
        ) {
            let (c, s): (SocketAddr, SocketAddr) = if v6 {
                ("[fe80::1]:546".parse().expect("a"), "[ff02::1:2]:547".parse().expect("a"))
            } else {
                ("0.0.0.0:68".parse().expect("a"), "255.255.255.255:67".parse().expect("a"))
            };
            let mut payload = payload;
            if !v6 && payload.len() >= 240 {
                // A valid magic cookie, so the option walk runs on arbitrary options.
                payload[236..240].copy_from_slice(&[99, 130, 83, 99]);
            }
            let text = summarize(c, s, &payload);
            prop_assert!(text.starts_with("DHCP"));
        }
    }
}
