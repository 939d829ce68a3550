//! The fixed BOOTP/DHCPv4 header fields a relay agent reads and rewrites (RFC 1542, RFC 2131
//! section 4.1): op, hops, flags, ciaddr, yiaddr, giaddr and chaddr.
//!
//! Read by hand at fixed offsets rather than decoded and re-encoded with dhcproto, because a
//! relay must forward the client's bytes unchanged apart from `giaddr` and `hops`: a decode and
//! re-encode would reorder or normalise options and the capture would no longer show what the
//! client sent.

use std::net::Ipv4Addr;

use dhcp_wire::{BOOTP_HEADER_LEN, MAGIC_COOKIE};

/// Length of the fixed header plus the magic cookie.
pub const MIN_LEN: usize = dhcp_wire::V4_OPTIONS_AT;
/// Relays drop requests that went through more relays than this (RFC 1542 section 4.1.1
/// suggests a configurable limit; 16 is the common default).
pub const MAX_HOPS: u8 = 16;

const OP: usize = 0;
const HLEN: usize = 2;
const HOPS: usize = 3;
const FLAGS: usize = 10;
const CIADDR: usize = 12;
const YIADDR: usize = 16;
const GIADDR: usize = 24;
const CHADDR: usize = 28;

/// `op` of a client's message.
pub const BOOTREQUEST: u8 = 1;
/// `op` of a server's message.
pub const BOOTREPLY: u8 = 2;

/// A view of a DHCPv4 message's fixed header; constructing it checks the length and the magic
/// cookie, so every accessor is infallible.
#[derive(Debug, Clone, Copy)]
pub struct BootpHeader<'a>(&'a [u8]);

impl<'a> BootpHeader<'a> {
    /// The header of `bytes`, or `None` if they are too short or lack the magic cookie.
    pub fn parse(bytes: &'a [u8]) -> Option<BootpHeader<'a>> {
        (bytes.len() >= MIN_LEN && bytes[BOOTP_HEADER_LEN..MIN_LEN] == MAGIC_COOKIE)
            .then_some(BootpHeader(bytes))
    }

    pub fn op(&self) -> u8 {
        self.0[OP]
    }

    pub fn hops(&self) -> u8 {
        self.0[HOPS]
    }

    /// The broadcast flag (the high bit of `flags`): the client cannot receive unicast before
    /// it has an address, so the reply must be broadcast.
    pub fn broadcast_flag(&self) -> bool {
        self.0[FLAGS] & 0x80 != 0
    }

    pub fn ciaddr(&self) -> Ipv4Addr {
        self.addr(CIADDR)
    }

    pub fn yiaddr(&self) -> Ipv4Addr {
        self.addr(YIADDR)
    }

    pub fn giaddr(&self) -> Ipv4Addr {
        self.addr(GIADDR)
    }

    /// The client's hardware address, when it is a 6-byte Ethernet address.
    pub fn chaddr_mac(&self) -> Option<crate::MacAddr> {
        if self.0[HLEN] != 6 {
            return None;
        }
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.0[CHADDR..CHADDR + 6]);
        Some(crate::MacAddr(mac))
    }

    fn addr(&self, at: usize) -> Ipv4Addr {
        Ipv4Addr::new(self.0[at], self.0[at + 1], self.0[at + 2], self.0[at + 3])
    }
}

/// What a relay agent does to a client's request before forwarding it (RFC 1542 section
/// 4.1.1): set `giaddr` to the receiving interface's address if it is still zero (the first
/// relay wins) and increment `hops`. `None` if the message is not a request or has been relayed
/// too often.
pub fn relay_request(bytes: &[u8], interface_addr: Ipv4Addr) -> Option<Vec<u8>> {
    let header = BootpHeader::parse(bytes)?;
    if header.op() != BOOTREQUEST || header.hops() >= MAX_HOPS {
        return None;
    }
    let mut out = bytes.to_vec();
    if header.giaddr().is_unspecified() {
        out[GIADDR..GIADDR + 4].copy_from_slice(&interface_addr.octets());
    }
    out[HOPS] = header.hops() + 1;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::{Decodable, Decoder, Encodable, Flags, Message, MessageType, Opcode};
    use proptest::prelude::*;

    fn discover(broadcast: bool) -> Vec<u8> {
        let chaddr = [0x02, 0, 0, 0, 0, 7];
        let mut msg = Message::default();
        msg.set_opcode(Opcode::BootRequest)
            .set_xid(0x1234_5678)
            .set_chaddr(&chaddr)
            .set_flags(if broadcast {
                Flags::default().set_broadcast()
            } else {
                Flags::default()
            });
        msg.opts_mut()
            .insert(dhcproto::v4::DhcpOption::MessageType(MessageType::Discover));
        msg.to_vec().expect("encode discover")
    }

    #[test]
    fn reads_the_fields_dhcproto_wrote() {
        let bytes = discover(true);
        let h = BootpHeader::parse(&bytes).expect("a DHCP message");
        assert_eq!(h.op(), BOOTREQUEST);
        assert!(h.broadcast_flag());
        assert_eq!(h.giaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(h.chaddr_mac(), Some(crate::MacAddr([2, 0, 0, 0, 0, 7])));
        assert!(
            !BootpHeader::parse(&discover(false))
                .expect("dhcp")
                .broadcast_flag()
        );
    }

    #[test]
    fn relay_sets_giaddr_once_and_counts_hops() {
        let first = relay_request(&discover(true), Ipv4Addr::new(10, 1, 0, 1)).expect("relayed");
        let second = relay_request(&first, Ipv4Addr::new(10, 2, 0, 1)).expect("relayed");
        let decoded = Message::decode(&mut Decoder::new(&second)).expect("still valid DHCP");
        assert_eq!(decoded.giaddr(), Ipv4Addr::new(10, 1, 0, 1));
        assert_eq!(decoded.hops(), 2);
        assert_eq!(decoded.xid(), 0x1234_5678);
        // Options survive byte for byte.
        assert_eq!(second[MIN_LEN..], discover(true)[MIN_LEN..]);
    }

    #[test]
    fn relay_refuses_replies_short_messages_and_hop_loops() {
        let mut reply = discover(true);
        reply[OP] = BOOTREPLY;
        assert!(relay_request(&reply, Ipv4Addr::LOCALHOST).is_none());
        assert!(relay_request(&discover(true)[..239], Ipv4Addr::LOCALHOST).is_none());
        let mut looped = discover(true);
        looped[HOPS] = MAX_HOPS;
        assert!(relay_request(&looped, Ipv4Addr::LOCALHOST).is_none());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Some(h) = BootpHeader::parse(&bytes) {
                let _ = (h.op(), h.hops(), h.broadcast_flag(), h.ciaddr(), h.yiaddr(), h.giaddr(), h.chaddr_mac());
            }
            if let Some(out) = relay_request(&bytes, Ipv4Addr::new(192, 0, 2, 1)) {
                prop_assert_eq!(out.len(), bytes.len());
                let h = BootpHeader::parse(&out).expect("still a header");
                prop_assert!(!h.giaddr().is_unspecified());
            }
        }
    }
}
