//! The event trace: what happened, when, where, to which packet, in lines a person can read.
//!
//! Events are stored structured (labels are shared `Arc<str>`, payloads shared `Bytes`) and
//! formatted only when displayed, so a traced run costs little more than an untraced one and an
//! untraced run (the benchmark) costs nothing. Two runs with the same seed produce equal
//! traces: the determinism tests compare them.
//!
//! The simulator knows no protocol above UDP: what a datagram *is* (`DHCPv4 DISCOVER ...`)
//! comes from a [`Summariser`] its caller gives ([`crate::Simulation::set_summariser`], or
//! [`TraceEvent::display`]); the scenario runner and the DHCP tests give
//! `dhcp_wire::summarise`. Without one, a datagram reads `UDP`.
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

/// Names a UDP datagram in a trace line from its addresses and payload (`UDP`, or what the
/// caller's protocol knowledge says it is).
pub type Summariser = fn(SocketAddr, SocketAddr, &[u8]) -> String;

/// The summary when the caller gives none: the simulator does not read payloads.
pub fn udp_only(_: SocketAddr, _: SocketAddr, _: &[u8]) -> String {
    "UDP".to_owned()
}

impl TraceEvent {
    /// The event's line, with datagrams named by `summarise`.
    pub fn display(&self, summarise: Summariser) -> impl fmt::Display + '_ {
        Line {
            event: self,
            summarise,
        }
    }
}

struct Line<'a> {
    event: &'a TraceEvent,
    summarise: Summariser,
}

impl fmt::Display for TraceEvent {
    /// The line with datagrams named `UDP` (see [`TraceEvent::display`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.display(udp_only).fmt(f)
    }
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let summarize = self.summarise;
        let this = self.event;
        write!(f, "[{}] ", this.time)?;
        match &this.kind {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_are_named_by_the_callers_summariser() {
        let event = TraceEvent {
            time: SimTime::from_secs(1),
            kind: TraceKind::Sent {
                at: "pc/eth0".into(),
                src: "0.0.0.0:68".parse().expect("a"),
                dst: "255.255.255.255:67".parse().expect("a"),
                payload: Bytes::from_static(b"abc"),
            },
        };
        assert_eq!(
            event.to_string(),
            "[   1.000000s] pc/eth0 sent 0.0.0.0:68 -> 255.255.255.255:67 UDP, 3 bytes"
        );
        let named = |_: SocketAddr, _: SocketAddr, p: &[u8]| format!("ABC of {}", p.len());
        assert_eq!(
            event.display(named).to_string(),
            "[   1.000000s] pc/eth0 sent 0.0.0.0:68 -> 255.255.255.255:67 ABC of 3, 3 bytes"
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
}
