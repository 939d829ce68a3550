//! The DHCPv4 client as UEFI firmware runs it before the boot manager asks for a Network
//! Unlock: one DORA exchange on one adapter, with retransmission and exponential backoff
//! (RFC 2131 §4.1: 4 s, 8 s, 16 s ... each ±1 s of jitter, capped at 64 s), every timeout a
//! parameter of [`ClientConfig`].
//!
//! The outcome is a [`Lease`] (with the options in the order the server sent them, which the
//! Network Unlock request repeats) or a [`Failure`] that says why: the adapter has no link, is
//! not configured for DHCP or has no UEFI driver; no server offered; no server acknowledged;
//! the server refused (NAK). Firmware does not go back to INIT on a NAK or run the renewal
//! timers during a boot that lasts seconds, so neither does this client: the boot manager
//! decides what to do next. It takes the first valid offer, as edk2's Dhcp4 driver does with
//! its default configuration.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder};
use ipnet::Ipv4Net;
use rand_core::RngCore;

use crate::raw::{self, LeaseOption};
use crate::{CLIENT_PORT, Interface, Received, SERVER_PORT, Transmit};

/// The client's timers and what it puts in its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The wait after the first DISCOVER (and the first REQUEST); doubled after each attempt.
    pub initial_timeout: Duration,
    /// The longest wait between two attempts.
    pub max_timeout: Duration,
    /// Each wait is moved by a uniform amount in `-jitter..=jitter`.
    pub jitter: Duration,
    /// DISCOVERs sent before giving up with [`Failure::NoOffer`].
    pub discover_attempts: u32,
    /// REQUESTs sent before giving up with [`Failure::NoAck`].
    pub request_attempts: u32,
    /// Option 60; UEFI PXE firmware sends `PXEClient:Arch:00007:UNDI:003016`.
    pub vendor_class: Option<Vec<u8>>,
    /// Option 55.
    pub parameter_request_list: Vec<u8>,
    /// Ask for broadcast replies: a client without an address hears nothing else on a real
    /// socket, and firmware sets it.
    pub broadcast_flag: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            initial_timeout: Duration::from_secs(4),
            max_timeout: Duration::from_secs(64),
            jitter: Duration::from_secs(1),
            discover_attempts: 4,
            request_attempts: 4,
            vendor_class: Some(b"PXEClient:Arch:00007:UNDI:003016".to_vec()),
            // Subnet mask, router, DNS, domain name, lease time, server id, T1, T2: what
            // edk2 asks for when the boot manager needs an address.
            parameter_request_list: vec![1, 3, 6, 15, 51, 54, 58, 59],
            broadcast_flag: true,
        }
    }
}

/// The facts about the adapter that decide whether DHCP can start at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdapterFacts {
    pub mac: [u8; 6],
    /// Cable plugged and switch port up.
    pub link_up: bool,
    /// Configured to obtain an address by DHCP (not, say, a LOM port with a static address).
    pub dhcp_enabled: bool,
    /// The firmware has a network driver for it.
    pub uefi_driver: bool,
}

impl AdapterFacts {
    /// A DHCP adapter with link and a driver.
    pub fn ready(mac: [u8; 6]) -> AdapterFacts {
        AdapterFacts {
            mac,
            link_up: true,
            dhcp_enabled: true,
            uefi_driver: true,
        }
    }
}

/// A lease the client holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub subnet_mask: Option<Ipv4Addr>,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server_id: Ipv4Addr,
    pub lease_time: Option<Duration>,
    /// When the ACK arrived.
    pub acquired_at: Duration,
    /// Every option of the ACK except the message type, in wire order.
    pub options: Vec<LeaseOption>,
}

impl Lease {
    /// The address with its prefix (a /32 if the server sent no valid mask).
    pub fn network(&self) -> Ipv4Net {
        let prefix = self
            .subnet_mask
            .and_then(|mask| ipnet::ipv4_mask_to_prefix(mask).ok())
            .unwrap_or(32);
        Ipv4Net::new(self.address, prefix).expect("a prefix from a mask is at most 32")
    }
}

/// Why the client holds no lease.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    #[error("no link on the adapter (cable unplugged or switch port down)")]
    NoLink,
    #[error("the adapter is not configured for DHCP")]
    NotConfiguredForDhcp,
    #[error("the firmware has no network driver for the adapter")]
    NoUefiDriver,
    #[error("no DHCP offer after {attempts} DISCOVERs")]
    NoOffer { attempts: u32 },
    #[error("no answer from {server} after {attempts} REQUESTs")]
    NoAck { server: Ipv4Addr, attempts: u32 },
    #[error("{server} refused the lease (DHCPNAK{})", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Nak {
        server: Ipv4Addr,
        message: Option<String>,
    },
}

/// What the client reports to its shell.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A DISCOVER or REQUEST was sent (`attempt` counts from 1).
    Sent { kind: &'static str, attempt: u32 },
    /// The client took an offer and requests it.
    Offered { server: Ipv4Addr, address: Ipv4Addr },
    /// A lease: the shell applies the address. Boxed, as the rarest and largest event: the
    /// others are a few words (a boot keeps every event of its DHCP client).
    Bound(Box<Lease>),
    /// The client gave up.
    Failed(Failure),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Idle,
    Selecting,
    Requesting { server: Ipv4Addr, address: Ipv4Addr },
    Bound(Lease),
    Failed(Failure),
}

/// One DHCPv4 client on one adapter.
pub struct Client {
    config: ClientConfig,
    facts: AdapterFacts,
    interface: Interface,
    state: State,
    xid: u32,
    started_at: Duration,
    attempt: u32,
    deadline: Option<Duration>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ClientEvent>,
}

impl Client {
    pub fn new(config: ClientConfig, facts: AdapterFacts, interface: Interface) -> Client {
        Client {
            config,
            facts,
            interface,
            state: State::Idle,
            xid: 0,
            started_at: Duration::ZERO,
            attempt: 0,
            deadline: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Begin DORA at `now`, or fail at once if the adapter cannot do DHCP.
    pub fn start(&mut self, now: Duration, rng: &mut dyn RngCore) {
        let refused = if !self.facts.uefi_driver {
            Some(Failure::NoUefiDriver)
        } else if !self.facts.link_up {
            Some(Failure::NoLink)
        } else if !self.facts.dhcp_enabled {
            Some(Failure::NotConfiguredForDhcp)
        } else {
            None
        };
        if let Some(failure) = refused {
            self.fail(failure);
            return;
        }
        self.xid = rng.next_u32();
        self.started_at = now;
        self.attempt = 0;
        self.state = State::Selecting;
        self.send_attempt(now, rng);
    }

    /// The lease, once bound.
    pub fn lease(&self) -> Option<&Lease> {
        match &self.state {
            State::Bound(lease) => Some(lease),
            _ => None,
        }
    }

    /// Why the client gave up, if it did.
    pub fn failure(&self) -> Option<&Failure> {
        match &self.state {
            State::Failed(failure) => Some(failure),
            _ => None,
        }
    }

    /// The transaction id of the current exchange.
    pub fn xid(&self) -> u32 {
        self.xid
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        host_contract::queue::pop_releasing(&mut self.transmits)
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        host_contract::queue::pop_releasing(&mut self.events)
    }

    /// When the current attempt times out.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.deadline
    }

    /// Retransmit or give up if the current attempt's deadline has passed.
    pub fn handle_timeout(&mut self, now: Duration, rng: &mut dyn RngCore) {
        let Some(deadline) = self.deadline else {
            return;
        };
        if now < deadline {
            return;
        }
        let (limit, failure) = match self.state {
            State::Selecting => (
                self.config.discover_attempts,
                Failure::NoOffer {
                    attempts: self.attempt,
                },
            ),
            State::Requesting { server, .. } => (
                self.config.request_attempts,
                Failure::NoAck {
                    server,
                    attempts: self.attempt,
                },
            ),
            _ => return,
        };
        if self.attempt >= limit {
            self.fail(failure);
        } else {
            self.send_attempt(now, rng);
        }
    }

    /// Give the lease back (DHCPRELEASE, unicast to the server) and forget it.
    pub fn release(&mut self, rng: &mut dyn RngCore) {
        let State::Bound(lease) = &self.state else {
            return;
        };
        let mut message = self.message_header(rng.next_u32());
        message.set_ciaddr(lease.address);
        let opts = message.opts_mut();
        opts.insert(DhcpOption::MessageType(MessageType::Release));
        opts.insert(DhcpOption::ServerIdentifier(lease.server_id));
        opts.insert(DhcpOption::ClientIdentifier(self.client_id()));
        let src = SocketAddrV4::new(lease.address, CLIENT_PORT);
        let dst = SocketAddrV4::new(lease.server_id, SERVER_PORT);
        self.push(message, src, dst);
        self.state = State::Idle;
        self.deadline = None;
    }

    /// Handle one datagram received on UDP 68 of this client's interface. Whether the client
    /// took it (its state, events or transmits changed); false when it was dropped unseen, as
    /// another client's offers and acks on a shared segment are, so that a caller can skip
    /// looking for output.
    pub fn handle(&mut self, now: Duration, received: Received<'_>, rng: &mut dyn RngCore) -> bool {
        if received.interface != self.interface {
            return false;
        }
        // The fixed header first: on a busy segment most broadcasts are other clients' offers
        // and acks, and decoding each (dhcproto) was most of a storm's DHCP cost. What this
        // skips, the checks after the decode would refuse anyway.
        if !addressed_to(received.payload, self.xid, &self.facts.mac) {
            return false;
        }
        if !raw::v4_safe_for_dhcproto(received.payload) {
            return false;
        }
        let Ok(message) = Message::decode(&mut Decoder::new(received.payload)) else {
            return false;
        };
        if message.opcode() != Opcode::BootReply
            || message.xid() != self.xid
            || message.chaddr().get(..6) != Some(&self.facts.mac[..])
        {
            return false;
        }
        let server = match message.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(addr)) => *addr,
            _ => return false,
        };
        match (&self.state, message.opts().msg_type()) {
            (State::Selecting, Some(MessageType::Offer)) => {
                let address = message.yiaddr();
                if address.is_unspecified() || address.is_broadcast() {
                    return false;
                }
                self.events
                    .push_back(ClientEvent::Offered { server, address });
                self.state = State::Requesting { server, address };
                self.attempt = 0;
                self.send_attempt(now, rng);
            }
            (
                State::Requesting {
                    server: chosen,
                    address,
                },
                Some(MessageType::Ack),
            ) if *chosen == server && message.yiaddr() == *address => {
                let lease = lease_from_ack(now, &message, received.payload, server);
                self.deadline = None;
                self.events
                    .push_back(ClientEvent::Bound(Box::new(lease.clone())));
                self.state = State::Bound(lease);
            }
            (State::Requesting { server: chosen, .. }, Some(MessageType::Nak))
                if *chosen == server =>
            {
                let message = match message.opts().get(OptionCode::Message) {
                    Some(DhcpOption::Message(text)) => Some(text.clone()),
                    _ => None,
                };
                self.fail(Failure::Nak { server, message });
            }
            _ => return false,
        }
        true
    }

    fn fail(&mut self, failure: Failure) {
        self.deadline = None;
        self.events.push_back(ClientEvent::Failed(failure.clone()));
        self.state = State::Failed(failure);
    }

    /// Option 61: hardware type 1 and the MAC, as firmware sends it.
    fn client_id(&self) -> Vec<u8> {
        let mut id = vec![1];
        id.extend_from_slice(&self.facts.mac);
        id
    }

    fn message_header(&self, xid: u32) -> Message {
        // dhcproto's constructors draw a throwaway xid from `rand::random()`; it is replaced
        // here at once, so nothing of that ambient randomness reaches the wire.
        let mut message = Message::default();
        message
            .set_opcode(Opcode::BootRequest)
            .set_htype(HType::Eth)
            .set_xid(xid)
            .set_chaddr(&self.facts.mac);
        if self.config.broadcast_flag {
            message.set_flags(Flags::default().set_broadcast());
        }
        message
    }

    /// Send the next DISCOVER or REQUEST and arm its timeout.
    fn send_attempt(&mut self, now: Duration, rng: &mut dyn RngCore) {
        let mut message = self.message_header(self.xid);
        let secs = u16::try_from(now.saturating_sub(self.started_at).as_secs()).unwrap_or(u16::MAX);
        message.set_secs(secs);
        let opts = message.opts_mut();
        let kind = match self.state {
            State::Selecting => {
                opts.insert(DhcpOption::MessageType(MessageType::Discover));
                "DISCOVER"
            }
            State::Requesting { server, address } => {
                opts.insert(DhcpOption::MessageType(MessageType::Request));
                opts.insert(DhcpOption::RequestedIpAddress(address));
                opts.insert(DhcpOption::ServerIdentifier(server));
                "REQUEST"
            }
            _ => return,
        };
        opts.insert(DhcpOption::MaxMessageSize(1472));
        opts.insert(DhcpOption::ParameterRequestList(
            self.config
                .parameter_request_list
                .iter()
                .map(|&code| OptionCode::from(code))
                .collect(),
        ));
        if let Some(class) = &self.config.vendor_class {
            opts.insert(DhcpOption::ClassIdentifier(class.clone()));
        }
        let client_id = self.client_id();
        message
            .opts_mut()
            .insert(DhcpOption::ClientIdentifier(client_id));
        let src = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT);
        let dst = SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT);
        self.push(message, src, dst);
        self.attempt += 1;
        self.events.push_back(ClientEvent::Sent {
            kind,
            attempt: self.attempt,
        });
        self.deadline = Some(now + self.backoff(rng));
    }

    /// The wait after attempt `self.attempt`: initial × 2^(attempt-1), capped, ± jitter.
    fn backoff(&self, rng: &mut dyn RngCore) -> Duration {
        let doublings = self.attempt.saturating_sub(1).min(16);
        let base = self
            .config
            .initial_timeout
            .saturating_mul(1 << doublings)
            .min(self.config.max_timeout);
        let jitter_ms = u64::try_from(self.config.jitter.as_millis()).unwrap_or(u64::MAX);
        if jitter_ms == 0 {
            return base;
        }
        // Uniform in 0..=2*jitter, then shifted by -jitter (modulo bias is far below a
        // millisecond's worth for any sensible jitter).
        let draw = rng.next_u64() % (2 * jitter_ms + 1);
        (base + Duration::from_millis(draw)).saturating_sub(Duration::from_millis(jitter_ms))
    }

    fn push(&mut self, message: Message, src: SocketAddrV4, dst: SocketAddrV4) {
        let Ok(payload) = dhcp_wire::encode_exact(&message) else {
            // Our own options always encode; a vendor class over 255 bytes is the only way
            // to get here, and then there is nothing sensible to send.
            return;
        };
        self.transmits.push_back(Transmit {
            interface: self.interface,
            src: SocketAddr::V4(src),
            dst: SocketAddr::V4(dst),
            payload,
        });
    }
}

fn lease_from_ack(now: Duration, ack: &Message, bytes: &[u8], server: Ipv4Addr) -> Lease {
    let opts = ack.opts();
    let subnet_mask = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => Some(*mask),
        _ => None,
    };
    let router = match opts.get(OptionCode::Router) {
        Some(DhcpOption::Router(routers)) => routers.first().copied(),
        _ => None,
    };
    let dns = match opts.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(servers)) => servers.clone(),
        _ => Vec::new(),
    };
    let lease_time = match opts.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(secs)) => Some(Duration::from_secs(u64::from(*secs))),
        _ => None,
    };
    let options = raw::v4_options(bytes)
        .unwrap_or_default()
        .into_iter()
        .filter(|&(code, _)| code != 53)
        .map(|(code, data)| LeaseOption {
            code,
            data: data.to_vec(),
        })
        .collect();
    Lease {
        address: ack.yiaddr(),
        subnet_mask,
        router,
        dns,
        server_id: server,
        lease_time,
        acquired_at: now,
        options,
    }
}

/// Whether a DHCPv4 payload's fixed header is a BOOTREPLY (op 2) with this transaction id
/// (bytes 4 to 7) and this hardware address (the first 6 bytes of chaddr, from byte 28).
fn addressed_to(payload: &[u8], xid: u32, mac: &[u8; 6]) -> bool {
    payload.first() == Some(&2)
        && payload.get(4..8) == Some(&xid.to_be_bytes()[..])
        && payload.get(28..34) == Some(&mac[..])
}

#[cfg(test)]
mod header_tests {
    use super::*;

    #[test]
    fn only_a_reply_to_this_transaction_and_address_passes() {
        let mac = [2, 0, 0, 0, 0, 7];
        let mut payload = vec![0u8; 240];
        payload[0] = 2;
        payload[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        payload[28..34].copy_from_slice(&mac);
        assert!(addressed_to(&payload, 0x1234_5678, &mac));
        assert!(!addressed_to(&payload, 0x1234_5679, &mac));
        assert!(!addressed_to(&payload, 0x1234_5678, &[2, 0, 0, 0, 0, 8]));
        payload[0] = 1;
        assert!(!addressed_to(&payload, 0x1234_5678, &mac));
        assert!(!addressed_to(&payload[..30], 0x1234_5678, &mac));
        assert!(!addressed_to(&[], 0, &mac));
    }
}
