//! The DHCPv4 server (RFC 2131), sans-IO: pools per subnet, leases with expiry, every client
//! message (DISCOVER, REQUEST in its three states, DECLINE, RELEASE, INFORM), replies through a
//! relay's giaddr, and the Network Unlock requests it must leave to the WDS server.
//!
//! A pool is chosen by giaddr when the request was relayed and by the subnet of the receiving
//! interface otherwise. The server identifier is the receiving interface's address (as dnsmasq
//! and Windows DHCP do) unless the configuration names one. Leases live in `BTreeMap`s, so
//! allocation and expiry do not depend on hash order, and a client that comes back gets the
//! address it had before if that address is still free.
//!
//! Where a reply goes (RFC 2131 §4.1): to `giaddr:67` when relayed (NAKs then ask the relay to
//! broadcast); to `ciaddr:68` when the client has an address; otherwise to 255.255.255.255:68.
//! RFC 2131 also allows a unicast to yiaddr when the broadcast flag is clear, but that needs
//! the sender to plant an ARP entry for an address nobody owns yet, which neither shell can do
//! with a UDP socket, so this server always broadcasts to an address-less client.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder};
use ipnet::Ipv4Net;

use crate::{CLIENT_PORT, Interface, Received, SERVER_PORT, Transmit, raw};

/// One address pool and the options handed out with its leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// The subnet the pool serves (its prefix gives the subnet mask option).
    pub subnet: Ipv4Net,
    /// First and last address handed out, inclusive.
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
    /// Option 3.
    pub router: Option<Ipv4Addr>,
    /// Option 6.
    pub dns: Vec<Ipv4Addr>,
    /// Option 51.
    pub lease_time: Duration,
}

impl Pool {
    /// A pool over `first..=last` in `subnet`, with a one-hour lease and no router or DNS.
    pub fn new(subnet: Ipv4Net, first: Ipv4Addr, last: Ipv4Addr) -> Pool {
        Pool {
            subnet,
            first,
            last,
            router: None,
            dns: Vec::new(),
            lease_time: Duration::from_secs(3600),
        }
    }

    pub fn router(mut self, router: Ipv4Addr) -> Pool {
        self.router = Some(router);
        self
    }

    pub fn dns(mut self, dns: Vec<Ipv4Addr>) -> Pool {
        self.dns = dns;
        self
    }

    pub fn lease_time(mut self, lease_time: Duration) -> Pool {
        self.lease_time = lease_time;
        self
    }

    fn contains(&self, addr: Ipv4Addr) -> bool {
        self.first <= addr && addr <= self.last && self.subnet.contains(&addr)
    }

    /// T1 and T2 as RFC 2131 §4.4.5 suggests: 0.5 and 0.875 of the lease.
    fn renewal_times(&self) -> (u32, u32) {
        let lease = secs_u32(self.lease_time);
        (
            lease / 2,
            u32::try_from(u64::from(lease) * 7 / 8).unwrap_or(u32::MAX),
        )
    }
}

/// What the server is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The server's address on each interface, indexed by [`Interface`]. A request arriving
    /// on an interface not listed here is dropped.
    pub interfaces: Vec<Ipv4Net>,
    pub pools: Vec<Pool>,
    /// Option 54; by default the receiving interface's address.
    pub server_id: Option<Ipv4Addr>,
    /// How long an offered address is held for the client before it may go to another.
    pub offer_hold: Duration,
    /// How long an address a client declined (found in use) is kept out of the pool.
    pub decline_hold: Duration,
}

impl ServerConfig {
    pub fn new(interfaces: Vec<Ipv4Net>, pools: Vec<Pool>) -> ServerConfig {
        ServerConfig {
            interfaces,
            pools,
            server_id: None,
            offer_hold: Duration::from_secs(60),
            decline_hold: Duration::from_secs(600),
        }
    }
}

/// Who a lease belongs to: option 61 when the client sends one, else its hardware type and
/// address (RFC 2131 §4.2).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientKey(Vec<u8>);

impl ClientKey {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// Why a datagram was dropped without a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// dhcproto could not decode it.
    Malformed,
    /// A BOOTREPLY (another server's answer) or a message type only servers send.
    NotARequest,
    /// No option 53.
    NoMessageType,
    /// hlen is 0 or over 16.
    BadHardwareAddress,
    /// It arrived on an interface the configuration does not list.
    UnknownInterface,
    /// No pool serves giaddr or the receiving interface's subnet.
    NoPool,
    /// Every address of the pool is leased, offered or declined.
    PoolExhausted,
    /// A REQUEST naming another server (the client chose its offer) or a RELEASE to another.
    OtherServer,
    /// A REQUEST or RELEASE for a lease this server has no record of: RFC 2131 says stay silent.
    UnknownLease,
    /// A REQUEST that is none of selecting, init-reboot or renewing (e.g. selecting without
    /// option 50), or a DECLINE without option 50.
    IncompleteRequest,
}

impl DropReason {
    /// A stable label for counters and logs.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::NotARequest => "not-a-request",
            DropReason::NoMessageType => "no-message-type",
            DropReason::BadHardwareAddress => "bad-hardware-address",
            DropReason::UnknownInterface => "unknown-interface",
            DropReason::NoPool => "no-pool",
            DropReason::PoolExhausted => "pool-exhausted",
            DropReason::OtherServer => "other-server",
            DropReason::UnknownLease => "unknown-lease",
            DropReason::IncompleteRequest => "incomplete-request",
        }
    }
}

/// What the server counted since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerCounters {
    pub received: u64,
    /// Network Unlock requests (vendor class `BITLOCKER`), left to the WDS server.
    pub network_unlock_ignored: u64,
    pub offers: u64,
    pub acks: u64,
    pub naks: u64,
    pub dropped: BTreeMap<DropReason, u64>,
}

impl ServerCounters {
    /// How many datagrams were dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped.get(&reason).copied().unwrap_or(0)
    }
}

/// What happened to a lease, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    Offered {
        client: ClientKey,
        addr: Ipv4Addr,
    },
    /// A lease was granted or renewed, valid until `expires`.
    Leased {
        client: ClientKey,
        addr: Ipv4Addr,
        expires: Duration,
    },
    Nak {
        client: ClientKey,
        requested: Option<Ipv4Addr>,
    },
    Released {
        client: ClientKey,
        addr: Ipv4Addr,
    },
    Declined {
        client: ClientKey,
        addr: Ipv4Addr,
    },
    /// A lease ran out without renewal; the address is free again.
    Expired {
        client: ClientKey,
        addr: Ipv4Addr,
    },
    NetworkUnlockIgnored {
        interface: Interface,
    },
    Dropped {
        reason: DropReason,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BindingState {
    Offered,
    Bound,
    Declined,
}

#[derive(Debug, Clone)]
struct Binding {
    client: ClientKey,
    state: BindingState,
    expires: Duration,
}

/// A lease as the server sees it, for tests and teaching views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub addr: Ipv4Addr,
    pub client: ClientKey,
    pub expires: Duration,
}

/// The DHCPv4 server.
pub struct Server {
    config: ServerConfig,
    bindings: BTreeMap<Ipv4Addr, Binding>,
    /// `bindings` ordered by expiry, kept in step with it through [`Server::put_binding`],
    /// [`Server::take_binding`] and [`Server::set_expiry`]: the next timeout is its first entry
    /// instead of a scan of every lease on every datagram (a 10,000-client storm made that scan
    /// the server's main cost).
    expiry: BTreeSet<(Duration, Ipv4Addr)>,
    /// The address each client holds or was offered (not declined ones): an index over
    /// `bindings`, kept in step with it, so that finding a client's lease is not a scan.
    by_client: BTreeMap<ClientKey, Ipv4Addr>,
    /// Per pool, where the search for a free address resumes: handing addresses out in turn
    /// keeps allocation from rescanning every lease, and an address just freed is the last
    /// to be reused (another client's stale ARP entry has time to age out).
    next_candidate: Vec<u32>,
    /// The address each client last held, so that it gets it back while it is free.
    last_address: BTreeMap<ClientKey, Ipv4Addr>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ServerEvent>,
    counters: ServerCounters,
}

/// The parts of a request the handlers need, read once.
struct Request {
    message: Message,
    kind: MessageType,
    client: ClientKey,
    interface: Interface,
    pool: usize,
    server_id: Ipv4Addr,
    server_addr: Ipv4Addr,
}

impl Request {
    fn requested(&self) -> Option<Ipv4Addr> {
        match self.message.opts().get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(addr)) => Some(*addr),
            _ => None,
        }
    }

    fn named_server(&self) -> Option<Ipv4Addr> {
        match self.message.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(addr)) => Some(*addr),
            _ => None,
        }
    }
}

impl Server {
    pub fn new(config: ServerConfig) -> Server {
        Server {
            bindings: BTreeMap::new(),
            expiry: BTreeSet::new(),
            by_client: BTreeMap::new(),
            next_candidate: config.pools.iter().map(|p| u32::from(p.first)).collect(),
            last_address: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: ServerCounters::default(),
            config,
        }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    pub fn counters(&self) -> &ServerCounters {
        &self.counters
    }

    /// The bound leases, by address.
    pub fn leases(&self) -> Vec<LeaseRecord> {
        self.bindings
            .iter()
            .filter(|(_, b)| b.state == BindingState::Bound)
            .map(|(addr, b)| LeaseRecord {
                addr: *addr,
                client: b.client.clone(),
                expires: b.expires,
            })
            .collect()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        host_contract::queue::pop_releasing(&mut self.transmits)
    }

    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        host_contract::queue::pop_releasing(&mut self.events)
    }

    /// When [`Server::handle_timeout`] must next be called: the earliest expiry of a lease,
    /// an offer or a declined address.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.expiry.first().map(|(at, _)| *at)
    }

    /// Expire what is due at `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        while let Some(&(at, addr)) = self.expiry.first() {
            if at > now {
                break;
            }
            let Some(binding) = self.take_binding(addr) else {
                self.expiry.remove(&(at, addr));
                continue;
            };
            self.unindex(&binding.client, addr);
            if binding.state == BindingState::Bound {
                self.events.push_back(ServerEvent::Expired {
                    client: binding.client,
                    addr,
                });
            }
        }
    }

    /// Handle one datagram received on UDP 67.
    pub fn handle(&mut self, now: Duration, received: Received<'_>) {
        self.handle_timeout(now);
        self.counters.received += 1;
        if raw::v4_is_network_unlock(received.payload) {
            // The WDS server answers these; a separate DHCP server must stay silent so that
            // the client's first verifying reply comes from the unlock provider.
            self.counters.network_unlock_ignored += 1;
            self.events.push_back(ServerEvent::NetworkUnlockIgnored {
                interface: received.interface,
            });
            return;
        }
        match self.parse(received) {
            Ok(request) => self.dispatch(now, request),
            Err(reason) => self.drop_for(reason),
        }
    }

    fn drop_for(&mut self, reason: DropReason) {
        *self.counters.dropped.entry(reason).or_insert(0) += 1;
        self.events.push_back(ServerEvent::Dropped { reason });
    }

    fn parse(&self, received: Received<'_>) -> Result<Request, DropReason> {
        if !raw::v4_safe_for_dhcproto(received.payload) {
            return Err(DropReason::Malformed);
        }
        let message = Message::decode(&mut Decoder::new(received.payload))
            .map_err(|_| DropReason::Malformed)?;
        if message.opcode() != Opcode::BootRequest {
            return Err(DropReason::NotARequest);
        }
        let kind = message.opts().msg_type().ok_or(DropReason::NoMessageType)?;
        if !matches!(
            kind,
            MessageType::Discover
                | MessageType::Request
                | MessageType::Decline
                | MessageType::Release
                | MessageType::Inform
        ) {
            return Err(DropReason::NotARequest);
        }
        let hlen = usize::from(message.hlen());
        if hlen == 0 || hlen > 16 {
            return Err(DropReason::BadHardwareAddress);
        }
        let client = match message.opts().get(OptionCode::ClientIdentifier) {
            Some(DhcpOption::ClientIdentifier(id)) if !id.is_empty() => ClientKey(id.clone()),
            _ => {
                let mut key = vec![u8::from(message.htype())];
                key.extend_from_slice(message.chaddr().get(..hlen).unwrap_or_default());
                ClientKey(key)
            }
        };
        let interface = received.interface;
        let server_net = *self
            .config
            .interfaces
            .get(interface)
            .ok_or(DropReason::UnknownInterface)?;
        let giaddr = message.giaddr();
        let locate = if giaddr.is_unspecified() {
            server_net.addr()
        } else {
            giaddr
        };
        let pool = self
            .config
            .pools
            .iter()
            .position(|p| p.subnet.contains(&locate))
            .ok_or(DropReason::NoPool)?;
        Ok(Request {
            message,
            kind,
            client,
            interface,
            pool,
            server_id: self.config.server_id.unwrap_or(server_net.addr()),
            server_addr: server_net.addr(),
        })
    }

    fn dispatch(&mut self, now: Duration, request: Request) {
        match request.kind {
            MessageType::Discover => self.on_discover(now, &request),
            MessageType::Request => self.on_request(now, &request),
            MessageType::Decline => self.on_decline(now, &request),
            MessageType::Release => self.on_release(&request),
            MessageType::Inform => self.on_inform(&request),
            _ => self.drop_for(DropReason::NotARequest),
        }
    }

    /// The address this client holds or was offered, if any.
    fn held_by(&self, client: &ClientKey) -> Option<Ipv4Addr> {
        self.by_client.get(client).copied()
    }

    /// Forget that `client` holds `addr` (if the index says so).
    fn put_binding(&mut self, addr: Ipv4Addr, binding: Binding) {
        let expires = binding.expires;
        if let Some(old) = self.bindings.insert(addr, binding) {
            self.expiry.remove(&(old.expires, addr));
        }
        self.expiry.insert((expires, addr));
    }

    fn take_binding(&mut self, addr: Ipv4Addr) -> Option<Binding> {
        let binding = self.bindings.remove(&addr)?;
        self.expiry.remove(&(binding.expires, addr));
        Some(binding)
    }

    fn set_expiry(&mut self, addr: Ipv4Addr, expires: Duration) {
        if let Some(binding) = self.bindings.get_mut(&addr) {
            self.expiry.remove(&(binding.expires, addr));
            binding.expires = expires;
            self.expiry.insert((expires, addr));
        }
    }

    /// Whether the expiry index holds exactly one entry per binding, at its expiry.
    #[cfg(test)]
    pub(crate) fn expiry_index_matches_bindings(&self) -> bool {
        self.expiry.len() == self.bindings.len()
            && self
                .bindings
                .iter()
                .all(|(addr, b)| self.expiry.contains(&(b.expires, *addr)))
    }

    fn unindex(&mut self, client: &ClientKey, addr: Ipv4Addr) {
        if self.by_client.get(client) == Some(&addr) {
            self.by_client.remove(client);
        }
    }

    fn is_free(&self, addr: Ipv4Addr, pool: &Pool, request: &Request) -> bool {
        pool.contains(addr)
            && !self.bindings.contains_key(&addr)
            && addr != request.server_addr
            && Some(addr) != pool.router
            && Some(addr) != self.config.server_id
            && addr != pool.subnet.network()
            && addr != pool.subnet.broadcast()
    }

    fn on_discover(&mut self, now: Duration, request: &Request) {
        let pool = self.config.pools[request.pool].clone();
        let held = self.held_by(&request.client).filter(|a| pool.contains(*a));
        let chosen = held
            .or_else(|| {
                self.last_address
                    .get(&request.client)
                    .copied()
                    .filter(|a| self.is_free(*a, &pool, request))
            })
            .or_else(|| {
                request
                    .requested()
                    .filter(|a| self.is_free(*a, &pool, request))
            })
            .or_else(|| {
                let (first, last) = (u32::from(pool.first), u32::from(pool.last));
                let cursor = self.next_candidate[request.pool].clamp(first, last);
                (cursor..=last)
                    .chain(first..cursor)
                    .map(Ipv4Addr::from)
                    .find(|a| self.is_free(*a, &pool, request))
            });
        let Some(addr) = chosen else {
            self.drop_for(DropReason::PoolExhausted);
            return;
        };
        if !self.bindings.contains_key(&addr) {
            self.next_candidate[request.pool] = u32::from(addr).saturating_add(1);
        }
        let hold = now + self.config.offer_hold;
        match self.bindings.get(&addr).map(|b| b.state) {
            None => self.put_binding(
                addr,
                Binding {
                    client: request.client.clone(),
                    state: BindingState::Offered,
                    expires: hold,
                },
            ),
            Some(BindingState::Offered) => self.set_expiry(addr, hold),
            Some(_) => {}
        }
        self.by_client.insert(request.client.clone(), addr);
        self.counters.offers += 1;
        self.events.push_back(ServerEvent::Offered {
            client: request.client.clone(),
            addr,
        });
        self.reply(request, MessageType::Offer, addr, &pool, true);
    }

    fn on_request(&mut self, now: Duration, request: &Request) {
        let pool = self.config.pools[request.pool].clone();
        let held = self.held_by(&request.client);
        let ciaddr = request.message.ciaddr();
        match (request.named_server(), request.requested()) {
            // SELECTING: the client answers one of the offers.
            (Some(server), requested) => {
                if server != request.server_id {
                    // It chose another server: our offer is free again.
                    if let Some(addr) = held
                        && self
                            .bindings
                            .get(&addr)
                            .is_some_and(|b| b.state == BindingState::Offered)
                    {
                        self.take_binding(addr);
                        self.unindex(&request.client, addr);
                    }
                    self.drop_for(DropReason::OtherServer);
                    return;
                }
                let Some(requested) = requested else {
                    self.drop_for(DropReason::IncompleteRequest);
                    return;
                };
                if held == Some(requested) && pool.contains(requested) {
                    self.bind(now, request, requested, &pool);
                } else {
                    self.nak(request, Some(requested), "requested address not offered");
                }
            }
            // INIT-REBOOT: the client asks to keep an address it remembers.
            (None, Some(requested)) => {
                if !pool.contains(requested) {
                    self.nak(request, Some(requested), "wrong network");
                } else if held == Some(requested) {
                    self.bind(now, request, requested, &pool);
                } else if held.is_some() || self.bindings.contains_key(&requested) {
                    self.nak(request, Some(requested), "address not yours");
                } else {
                    self.drop_for(DropReason::UnknownLease);
                }
            }
            // RENEWING (unicast) or REBINDING (broadcast): ciaddr is the lease.
            (None, None) if !ciaddr.is_unspecified() => {
                let bound = self
                    .bindings
                    .get(&ciaddr)
                    .is_some_and(|b| b.client == request.client && b.state == BindingState::Bound);
                if bound && pool.contains(ciaddr) {
                    self.bind(now, request, ciaddr, &pool);
                } else if !pool.contains(ciaddr) || self.bindings.contains_key(&ciaddr) {
                    self.nak(request, Some(ciaddr), "lease not yours");
                } else {
                    self.drop_for(DropReason::UnknownLease);
                }
            }
            (None, None) => self.drop_for(DropReason::IncompleteRequest),
        }
    }

    fn bind(&mut self, now: Duration, request: &Request, addr: Ipv4Addr, pool: &Pool) {
        let expires = now + pool.lease_time;
        self.put_binding(
            addr,
            Binding {
                client: request.client.clone(),
                state: BindingState::Bound,
                expires,
            },
        );
        self.by_client.insert(request.client.clone(), addr);
        self.last_address.insert(request.client.clone(), addr);
        self.counters.acks += 1;
        self.events.push_back(ServerEvent::Leased {
            client: request.client.clone(),
            addr,
            expires,
        });
        self.reply(request, MessageType::Ack, addr, pool, true);
    }

    fn nak(&mut self, request: &Request, requested: Option<Ipv4Addr>, why: &str) {
        self.counters.naks += 1;
        self.events.push_back(ServerEvent::Nak {
            client: request.client.clone(),
            requested,
        });
        let mut reply = self.reply_header(request);
        reply.set_ciaddr(Ipv4Addr::UNSPECIFIED);
        let opts = reply.opts_mut();
        opts.insert(DhcpOption::MessageType(MessageType::Nak));
        opts.insert(DhcpOption::ServerIdentifier(request.server_id));
        opts.insert(DhcpOption::Message(why.to_string()));
        let relayed = !request.message.giaddr().is_unspecified();
        if relayed {
            // RFC 2131 §4.3.2: the relay must broadcast a NAK to the client.
            reply.set_flags(Flags::default().set_broadcast());
        }
        let dst = if relayed {
            SocketAddrV4::new(request.message.giaddr(), SERVER_PORT)
        } else {
            SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT)
        };
        self.send(request, reply, dst);
    }

    fn on_decline(&mut self, now: Duration, request: &Request) {
        let Some(addr) = request.requested() else {
            self.drop_for(DropReason::IncompleteRequest);
            return;
        };
        let Some(binding) = self.bindings.get_mut(&addr) else {
            self.drop_for(DropReason::UnknownLease);
            return;
        };
        if binding.client != request.client {
            self.drop_for(DropReason::UnknownLease);
            return;
        }
        // Someone else answers ARP for it: keep it out of the pool for a while.
        binding.state = BindingState::Declined;
        self.set_expiry(addr, now + self.config.decline_hold);
        self.unindex(&request.client, addr);
        self.last_address.remove(&request.client);
        self.events.push_back(ServerEvent::Declined {
            client: request.client.clone(),
            addr,
        });
    }

    fn on_release(&mut self, request: &Request) {
        if request
            .named_server()
            .is_some_and(|s| s != request.server_id)
        {
            self.drop_for(DropReason::OtherServer);
            return;
        }
        let addr = request.message.ciaddr();
        let ours = self
            .bindings
            .get(&addr)
            .is_some_and(|b| b.client == request.client && b.state == BindingState::Bound);
        if !ours {
            self.drop_for(DropReason::UnknownLease);
            return;
        }
        self.take_binding(addr);
        self.unindex(&request.client, addr);
        self.events.push_back(ServerEvent::Released {
            client: request.client.clone(),
            addr,
        });
    }

    fn on_inform(&mut self, request: &Request) {
        let pool = self.config.pools[request.pool].clone();
        self.counters.acks += 1;
        // RFC 2131 §3.4: configuration only, no lease, no yiaddr.
        self.reply(
            request,
            MessageType::Ack,
            Ipv4Addr::UNSPECIFIED,
            &pool,
            false,
        );
    }

    fn reply_header(&self, request: &Request) -> Message {
        let m = &request.message;
        let mut reply = Message::default();
        reply
            .set_opcode(Opcode::BootReply)
            .set_htype(m.htype())
            .set_xid(m.xid())
            .set_flags(m.flags())
            .set_ciaddr(m.ciaddr())
            .set_giaddr(m.giaddr())
            .set_chaddr(m.chaddr().get(..usize::from(m.hlen())).unwrap_or_default());
        reply
    }

    fn reply(
        &mut self,
        request: &Request,
        kind: MessageType,
        yiaddr: Ipv4Addr,
        pool: &Pool,
        with_lease: bool,
    ) {
        let mut reply = self.reply_header(request);
        reply.set_yiaddr(yiaddr);
        if kind == MessageType::Offer {
            reply.set_ciaddr(Ipv4Addr::UNSPECIFIED);
        }
        let opts = reply.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        opts.insert(DhcpOption::ServerIdentifier(request.server_id));
        if with_lease {
            let (t1, t2) = pool.renewal_times();
            opts.insert(DhcpOption::AddressLeaseTime(secs_u32(pool.lease_time)));
            opts.insert(DhcpOption::Renewal(t1));
            opts.insert(DhcpOption::Rebinding(t2));
        }
        opts.insert(DhcpOption::SubnetMask(pool.subnet.netmask()));
        if let Some(router) = pool.router {
            opts.insert(DhcpOption::Router(vec![router]));
        }
        if !pool.dns.is_empty() {
            opts.insert(DhcpOption::DomainNameServer(pool.dns.clone()));
        }
        let m = &request.message;
        let dst = if !m.giaddr().is_unspecified() {
            SocketAddrV4::new(m.giaddr(), SERVER_PORT)
        } else if !m.ciaddr().is_unspecified() && kind != MessageType::Offer {
            SocketAddrV4::new(m.ciaddr(), CLIENT_PORT)
        } else {
            SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT)
        };
        self.send(request, reply, dst);
    }

    fn send(&mut self, request: &Request, reply: Message, dst: SocketAddrV4) {
        let Ok(payload) = dhcp_wire::encode_exact(&reply) else {
            // Only reachable if an option outgrew 255 bytes, which our own options cannot.
            self.drop_for(DropReason::Malformed);
            return;
        };
        self.transmits.push_back(Transmit {
            interface: request.interface,
            src: SocketAddr::V4(SocketAddrV4::new(request.server_addr, SERVER_PORT)),
            dst: SocketAddr::V4(dst),
            payload,
        });
    }
}

fn secs_u32(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

#[cfg(test)]
impl ClientKey {
    /// The key of a client that sends option 61 as firmware does (type 1 and the MAC).
    pub(crate) fn for_tests(mac: &[u8; 6]) -> ClientKey {
        let mut key = vec![1];
        key.extend_from_slice(mac);
        ClientKey(key)
    }
}
