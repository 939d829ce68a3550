//! Routers: IPv4 unicast forwarding between the segments they join, and the DHCP relay agent
//! (RFC 1542, RFC 2131 section 4.1) configurable per interface with its own helper list.
//!
//! A router forwards unicast only: broadcasts stay in their segment, directed broadcasts to a
//! remote subnet are not forwarded (the default since RFC 2644), and IPv6 is not routed (the
//! unlock path uses link-local DHCPv6 only). Routes are the connected subnets, then static
//! routes in the order they were added.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::Bytes;

use crate::bootp::{self, BootpHeader};
use crate::sim::{DEFAULT_TTL, Frame, Target, seg_index};
use crate::topology::{Attachment, NodeId, RouterId};
use crate::trace::{DropReason, TraceKind};
use crate::{MacAddr, Simulation};

const BOOTPS: u16 = 67;
const BOOTPC: u16 = 68;

impl Simulation {
    /// Whether interface `iface` of `router` relays this group-addressed frame: a DHCPv4
    /// broadcast to port 67 on an interface with helper addresses.
    pub(crate) fn relays(&self, router: u32, iface: usize, frame: &Frame) -> bool {
        frame.dst.is_ipv4()
            && frame.dst.port() == BOOTPS
            && !self.routers[router as usize].interfaces[iface]
                .helpers
                .is_empty()
    }

    /// A frame reached interface `iface` of `router`.
    pub(crate) fn router_receive(&mut self, router: u32, iface: usize, frame: &Frame) {
        let IpAddr::V4(dst) = frame.dst.ip() else {
            return; // IPv6 is not routed; link-local multicast stays on its segment.
        };
        let here = Attachment::Router {
            router,
            iface: iface as u32,
        };
        let segment = self.routers[router as usize].interfaces[iface].segment;
        let is_group = crate::sim::is_group_v4(dst)
            || self.segments[seg_index(segment)]
                .directed_broadcast(dst)
                .is_some();
        if is_group {
            if self.relays(router, iface, frame) {
                self.relay_request(router, iface, frame);
            }
            return;
        }
        let own = self.routers[router as usize]
            .interfaces
            .iter()
            .any(|i| i.addr.addr() == dst);
        if own {
            if frame.dst.port() == BOOTPS {
                self.relay_reply(router, here, frame);
            } else {
                self.note_drop(here, frame.src, frame.dst, frame.payload.len(), |_| {
                    DropReason::NoListener
                });
            }
            return;
        }
        if frame.ttl <= 1 {
            self.note_drop(here, frame.src, frame.dst, frame.payload.len(), |_| {
                DropReason::TtlExpired
            });
            return;
        }
        self.route_out(
            router,
            here,
            frame.src,
            frame.dst,
            frame.ttl - 1,
            frame.payload.clone(),
            true,
        );
    }

    /// Sends a datagram out of the interface that leads to `dst`: forwarding (`forwarded`) or a
    /// relay's own transmission.
    #[allow(clippy::too_many_arguments)] // one call per caller, every argument distinct
    fn route_out(
        &mut self,
        router: u32,
        from: Attachment,
        src: SocketAddr,
        dst: SocketAddr,
        ttl: u8,
        payload: Bytes,
        forwarded: bool,
    ) {
        let len = payload.len();
        let IpAddr::V4(dst_ip) = dst.ip() else {
            return self.note_drop(from, src, dst, len, |_| DropReason::NoRoute);
        };
        let r = &self.routers[router as usize];
        let connected = |ip: Ipv4Addr| {
            r.interfaces.iter().position(|i| {
                i.addr.contains(&ip) || self.segments[seg_index(i.segment)].carries(ip)
            })
        };
        let hop = match connected(dst_ip) {
            Some(out) => Some((out, dst_ip)),
            None => r
                .routes
                .iter()
                .find(|(net, _)| net.contains(&dst_ip))
                .and_then(|(_, via)| connected(*via).map(|out| (out, *via))),
        };
        let Some((out, next_hop)) = hop else {
            return self.note_drop(from, src, dst, len, |_| DropReason::NoRoute);
        };
        let out_iface = &r.interfaces[out];
        let segment = out_iface.segment;
        if self.segments[seg_index(segment)]
            .directed_broadcast(dst_ip)
            .is_some()
        {
            return self.note_drop(from, src, dst, len, |_| DropReason::NoRoute);
        }
        let Some(target) = self.ipv4_index[seg_index(segment)].get(&next_hop).copied() else {
            return self.note_drop(from, src, dst, len, |_| DropReason::Unreachable);
        };
        let sender = Attachment::Router {
            router,
            iface: out as u32,
        };
        if target == sender {
            return self.note_drop(from, src, dst, len, |_| DropReason::NoRoute);
        }
        let src_mac = out_iface.mac;
        let at = out_iface.label.clone();
        if forwarded {
            self.record(|| TraceKind::Forwarded { at, src, dst, len });
        }
        let frame = Frame {
            from: NodeId::Router(RouterId(router)),
            sender,
            src_mac,
            dst_mac: self.mac_of(target),
            src,
            dst,
            ttl,
            payload,
            sent_at: self.now(),
        };
        self.put_on_segment(segment, Target::One(target), frame);
    }

    /// A client's broadcast to port 67 reached a relaying interface: stamp giaddr, count the
    /// hop, and unicast a copy to each helper from the interface's address, port 67.
    fn relay_request(&mut self, router: u32, iface: usize, frame: &Frame) {
        let here = Attachment::Router {
            router,
            iface: iface as u32,
        };
        let i = &self.routers[router as usize].interfaces[iface];
        let addr = i.addr.addr();
        let Some(bytes) = bootp::relay_request(&frame.payload, addr) else {
            return self.note_drop(here, frame.src, frame.dst, frame.payload.len(), |_| {
                DropReason::RelayRefused
            });
        };
        let giaddr = BootpHeader::parse(&bytes).map_or(addr, |h| h.giaddr());
        let payload = Bytes::from(bytes);
        let (label, helpers) = (i.label.clone(), i.helpers.clone());
        for helper in helpers {
            let (at, len) = (label.clone(), payload.len());
            self.record(|| TraceKind::RelayedRequest {
                at,
                giaddr,
                helper,
                len,
            });
            let src = SocketAddr::from((addr, BOOTPS));
            let dst = SocketAddr::from((helper, BOOTPS));
            self.route_out(router, here, src, dst, DEFAULT_TTL, payload.clone(), false);
        }
    }

    /// A server's reply to giaddr:67 reached the router: deliver it on the client's segment,
    /// as RFC 2131 section 4.1 says: to ciaddr if the client has one, broadcast if the client
    /// asked for it, else unicast to yiaddr at the client's hardware address.
    fn relay_reply(&mut self, router: u32, here: Attachment, frame: &Frame) {
        let len = frame.payload.len();
        let refuse = |sim: &mut Simulation, at| {
            sim.note_drop(at, frame.src, frame.dst, len, |_| DropReason::RelayRefused);
        };
        let r = &self.routers[router as usize];
        let Some(header) =
            BootpHeader::parse(&frame.payload).filter(|h| h.op() == bootp::BOOTREPLY)
        else {
            return refuse(self, here);
        };
        let giaddr = header.giaddr();
        let Some(out) = r
            .interfaces
            .iter()
            .position(|i| i.addr.addr() == giaddr && !i.helpers.is_empty())
        else {
            return refuse(self, here);
        };
        let iface = &r.interfaces[out];
        let sender = Attachment::Router {
            router,
            iface: out as u32,
        };
        let segment = iface.segment;
        let (ciaddr, yiaddr) = (header.ciaddr(), header.yiaddr());
        let (dst, target, dst_mac) = if !ciaddr.is_unspecified() {
            let Some(att) = self.ipv4_index[seg_index(segment)].get(&ciaddr).copied() else {
                return self.note_drop(sender, frame.src, frame.dst, len, |_| {
                    DropReason::Unreachable
                });
            };
            (
                SocketAddr::from((ciaddr, BOOTPC)),
                Target::One(att),
                self.mac_of(att),
            )
        } else if header.broadcast_flag() {
            let dst = SocketAddr::from((Ipv4Addr::BROADCAST, BOOTPC));
            (dst, Target::Group { directed: None }, MacAddr::BROADCAST)
        } else {
            let by_mac = header.chaddr_mac().and_then(|mac| {
                self.segments[seg_index(segment)]
                    .members
                    .iter()
                    .copied()
                    .find(|att| self.mac_of(*att) == mac)
                    .map(|att| (att, mac))
            });
            let Some((att, mac)) = by_mac else {
                return self.note_drop(sender, frame.src, frame.dst, len, |_| {
                    DropReason::Unreachable
                });
            };
            (SocketAddr::from((yiaddr, BOOTPC)), Target::One(att), mac)
        };
        let at = iface.label.clone();
        let src = SocketAddr::from((iface.addr.addr(), BOOTPS));
        let src_mac = iface.mac;
        self.record(|| TraceKind::RelayedReply { at, dst, len });
        let frame = Frame {
            from: NodeId::Router(RouterId(router)),
            sender,
            src_mac,
            dst_mac,
            src,
            dst,
            ttl: DEFAULT_TTL,
            payload: frame.payload.clone(),
            sent_at: self.now(),
        };
        self.put_on_segment(segment, target, frame);
    }
}
