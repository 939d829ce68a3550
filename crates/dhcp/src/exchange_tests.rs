//! Server and client driven against each other through a tiny in-memory network that moves
//! transmits between them and jumps time to the next timeout (as quinn's tests do): the DHCP
//! behaviour end to end, without the simulator.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::*;

const SERVER_NET: &str = "10.0.0.1/24";
const RELAY_GIADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);

fn pools() -> Vec<Pool> {
    vec![
        Pool::new(
            "10.0.0.0/24".parse().expect("literal"),
            Ipv4Addr::new(10, 0, 0, 100),
            Ipv4Addr::new(10, 0, 0, 199),
        )
        .router(Ipv4Addr::new(10, 0, 0, 254))
        .dns(vec![Ipv4Addr::new(10, 0, 0, 53)])
        .lease_time(Duration::from_secs(600)),
        Pool::new(
            "10.0.1.0/24".parse().expect("literal"),
            Ipv4Addr::new(10, 0, 1, 100),
            Ipv4Addr::new(10, 0, 1, 101),
        )
        .router(RELAY_GIADDR),
    ]
}

fn server() -> Server {
    Server::new(ServerConfig::new(
        vec![SERVER_NET.parse().expect("literal")],
        pools(),
    ))
}

fn mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, n]
}

/// One server, some clients on its link (or behind a relay at [`RELAY_GIADDR`]), and a rule
/// deciding which datagrams the network loses.
struct Net {
    now: Duration,
    server: Server,
    clients: Vec<Client>,
    rng: ChaCha20Rng,
    relayed: bool,
    /// Datagrams (in either direction) lost before delivery starts.
    lose_first: usize,
    /// Lose everything the server sends.
    server_silent: bool,
    /// Every datagram that reached its destination: who sent it and its DHCP message type.
    delivered: Vec<(&'static str, Option<MessageType>, SocketAddr)>,
    sent_at: Vec<(Duration, &'static str)>,
}

impl Net {
    fn new(clients: usize) -> Net {
        let clients = (0..clients)
            .map(|i| {
                Client::new(
                    ClientConfig::default(),
                    AdapterFacts::ready(mac(u8::try_from(i).expect("few clients") + 1)),
                    0,
                )
            })
            .collect();
        Net {
            now: Duration::ZERO,
            server: server(),
            clients,
            rng: ChaCha20Rng::seed_from_u64(7),
            relayed: false,
            lose_first: 0,
            server_silent: false,
            delivered: Vec::new(),
            sent_at: Vec::new(),
        }
    }

    fn start(&mut self) {
        for client in &mut self.clients {
            client.start(self.now, &mut self.rng);
        }
    }

    fn lose(&mut self) -> bool {
        if self.lose_first > 0 {
            self.lose_first -= 1;
            return true;
        }
        false
    }

    /// Move datagrams until nobody has anything to send.
    fn deliver(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.clients.len() {
                while let Some(mut t) = self.clients[i].poll_transmit() {
                    moved = true;
                    self.sent_at.push((self.now, "client"));
                    if self.lose() {
                        continue;
                    }
                    if self.relayed {
                        // The relay sets giaddr and unicasts to the server (RFC 1542).
                        let mut m = Message::decode(&mut Decoder::new(&t.payload))
                            .expect("client messages decode");
                        m.set_giaddr(RELAY_GIADDR);
                        t.payload = m.to_vec().expect("encodes");
                        t.src = SocketAddr::V4(SocketAddrV4::new(RELAY_GIADDR, SERVER_PORT));
                        t.dst = "10.0.0.1:67".parse().expect("literal");
                    }
                    self.delivered.push(("client", kind(&t.payload), t.dst));
                    self.server.handle(self.now, received(&t));
                }
            }
            while let Some(t) = self.server.poll_transmit() {
                moved = true;
                self.sent_at.push((self.now, "server"));
                if self.server_silent || self.lose() {
                    continue;
                }
                self.delivered.push(("server", kind(&t.payload), t.dst));
                if self.relayed {
                    assert_eq!(
                        t.dst,
                        SocketAddr::V4(SocketAddrV4::new(RELAY_GIADDR, SERVER_PORT)),
                        "a relayed request is answered through giaddr"
                    );
                }
                for client in &mut self.clients {
                    client.handle(self.now, received(&t), &mut self.rng);
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Deliver, then jump to the next timeout, until `end`.
    fn run_until(&mut self, end: Duration) {
        loop {
            self.deliver();
            let next = self
                .clients
                .iter()
                .filter_map(Client::poll_timeout)
                .chain(self.server.poll_timeout())
                .min();
            match next {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    self.server.handle_timeout(self.now);
                    for client in &mut self.clients {
                        client.handle_timeout(self.now, &mut self.rng);
                    }
                }
                _ => {
                    self.now = end;
                    self.server.handle_timeout(end);
                    return;
                }
            }
        }
    }

    fn client_events(&mut self, i: usize) -> Vec<ClientEvent> {
        std::iter::from_fn(|| self.clients[i].poll_event()).collect()
    }

    fn server_events(&mut self) -> Vec<ServerEvent> {
        std::iter::from_fn(|| self.server.poll_event()).collect()
    }
}

fn received(t: &Transmit) -> Received<'_> {
    Received {
        interface: 0,
        src: t.src,
        dst: t.dst,
        payload: &t.payload,
    }
}

fn kind(payload: &[u8]) -> Option<MessageType> {
    Message::decode(&mut Decoder::new(payload))
        .ok()
        .and_then(|m| m.opts().msg_type())
}

#[test]
fn dora_gives_a_lease_with_the_pool_options_in_wire_order() {
    let mut net = Net::new(1);
    net.start();
    net.run_until(Duration::from_secs(1));
    let kinds: Vec<_> = net.delivered.iter().map(|(_, k, _)| *k).collect();
    assert_eq!(
        kinds,
        [
            Some(MessageType::Discover),
            Some(MessageType::Offer),
            Some(MessageType::Request),
            Some(MessageType::Ack)
        ]
    );
    let lease = net.clients[0].lease().expect("bound").clone();
    assert_eq!(lease.address, Ipv4Addr::new(10, 0, 0, 100));
    assert_eq!(lease.subnet_mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
    assert_eq!(lease.router, Some(Ipv4Addr::new(10, 0, 0, 254)));
    assert_eq!(lease.dns, vec![Ipv4Addr::new(10, 0, 0, 53)]);
    assert_eq!(lease.server_id, Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(lease.lease_time, Some(Duration::from_secs(600)));
    assert_eq!(lease.network().to_string(), "10.0.0.100/24");
    // dhcproto writes options sorted by code; the lease keeps what was on the wire.
    let codes: Vec<u8> = lease.options.iter().map(|o| o.code).collect();
    assert_eq!(codes, [1, 3, 6, 51, 54, 58, 59]);
    assert_eq!(lease.options[5].data, 300u32.to_be_bytes());
    assert_eq!(lease.options[6].data, 525u32.to_be_bytes());
    // The address-less client is answered by broadcast.
    assert!(
        net.delivered
            .iter()
            .filter(|(who, _, _)| *who == "server")
            .all(|(_, _, dst)| *dst == "255.255.255.255:68".parse().expect("literal"))
    );
    let leases = net.server.leases();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].addr, lease.address);
    assert_eq!(leases[0].expires, Duration::from_secs(600));
    assert!(matches!(
        net.client_events(0).last(),
        Some(ClientEvent::Bound(l)) if l.address == lease.address
    ));
}

#[test]
fn two_clients_never_share_an_address_and_the_pool_runs_out_cleanly() {
    let mut net = Net::new(3);
    net.relayed = true; // the relayed pool has two addresses for three clients
    net.start();
    net.run_until(Duration::from_secs(200));
    let a = net.clients[0].lease().expect("first bound").address;
    let b = net.clients[1].lease().expect("second bound").address;
    assert_ne!(a, b);
    for addr in [a, b] {
        assert!(
            [Ipv4Addr::new(10, 0, 1, 100), Ipv4Addr::new(10, 0, 1, 101)].contains(&addr),
            "{addr} comes from the relay's subnet"
        );
    }
    assert_eq!(
        net.clients[2].failure(),
        Some(&Failure::NoOffer { attempts: 4 })
    );
    assert_eq!(net.server.counters().dropped(DropReason::PoolExhausted), 4);
}

#[test]
fn many_clients_on_one_link_all_get_distinct_addresses() {
    let mut net = Net::new(40);
    net.start();
    net.run_until(Duration::from_secs(5));
    let mut addrs: Vec<_> = net
        .clients
        .iter()
        .map(|c| c.lease().expect("bound").address)
        .collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 40);
    assert_eq!(net.server.leases().len(), 40);
}

#[test]
fn a_relayed_discover_is_answered_through_giaddr_from_the_relay_pool() {
    let mut net = Net::new(1);
    net.relayed = true;
    net.start();
    net.run_until(Duration::from_secs(1));
    let lease = net.clients[0].lease().expect("bound through the relay");
    assert_eq!(lease.address, Ipv4Addr::new(10, 0, 1, 100));
    assert_eq!(lease.router, Some(RELAY_GIADDR));
    // Run's assertion in `deliver` checked that every reply went to giaddr:67.
    assert_eq!(
        net.delivered
            .iter()
            .filter(|(who, _, _)| *who == "server")
            .count(),
        2
    );
}

#[test]
fn lease_expiry_frees_the_address_for_another_client() {
    let mut net = Net::new(1);
    net.relayed = true;
    net.start();
    net.run_until(Duration::from_secs(1));
    let first = net.clients[0].lease().expect("bound").address;
    net.server_events();
    // The relayed pool's lease is an hour; nobody renews (firmware does not).
    net.run_until(Duration::from_secs(3601));
    assert!(net.server.leases().is_empty());
    assert!(net.server_events().contains(&ServerEvent::Expired {
        client: crate::server::ClientKey::for_tests(&mac(1)),
        addr: first
    }));
    // Two new clients: both addresses of the two-address pool are free again.
    net.clients = vec![
        Client::new(ClientConfig::default(), AdapterFacts::ready(mac(8)), 0),
        Client::new(ClientConfig::default(), AdapterFacts::ready(mac(9)), 0),
    ];
    net.start();
    net.run_until(Duration::from_secs(3602));
    assert!(net.clients.iter().all(|c| c.lease().is_some()));
    assert!(
        net.clients
            .iter()
            .any(|c| c.lease().map(|l| l.address) == Some(first))
    );
}

#[test]
fn a_returning_client_gets_its_previous_address_back() {
    let mut net = Net::new(2);
    net.start();
    net.run_until(Duration::from_secs(1));
    let second = net.clients[1].lease().expect("bound").address;
    net.clients[1].release(&mut net.rng);
    net.deliver();
    assert!(net.server_events().iter().any(|e| matches!(e,
        ServerEvent::Released { addr, .. } if *addr == second)));
    assert_eq!(net.server.leases().len(), 1);
    // It boots again: a new exchange, the same address.
    net.clients[1].start(net.now, &mut net.rng);
    net.run_until(Duration::from_secs(2));
    assert_eq!(net.clients[1].lease().expect("bound again").address, second);
}

#[test]
fn lost_packets_are_retransmitted_with_exponential_backoff() {
    let mut net = Net::new(1);
    // DISCOVER 1, DISCOVER 2 and the OFFER answering DISCOVER 3 are lost.
    net.lose_first = 3;
    net.start();
    net.run_until(Duration::from_secs(60));
    let lease = net.clients[0].lease().expect("retries succeed");
    let sends: Vec<Duration> = net
        .sent_at
        .iter()
        .filter(|(_, who)| *who == "client")
        .map(|(t, _)| *t)
        .collect();
    // DISCOVERs at 0, ~4, ~4+8, ~4+8+16 s, then the REQUEST at once.
    assert_eq!(sends.len(), 5, "{sends:?}");
    for (i, nominal) in [4u64, 8, 16].into_iter().enumerate() {
        let gap = sends[i + 1] - sends[i];
        let nominal = Duration::from_secs(nominal);
        assert!(
            gap >= nominal - Duration::from_secs(1) && gap <= nominal + Duration::from_secs(1),
            "attempt {} waited {gap:?}",
            i + 1
        );
    }
    assert_eq!(sends[4], sends[3]);
    let discovers = sends;
    assert_eq!(lease.acquired_at, discovers[3]);
}

#[test]
fn a_silent_network_makes_the_client_give_up_when_its_timers_say() {
    let mut net = Net::new(1);
    net.server_silent = true;
    net.start();
    // The earliest give-up is 3 + 7 + 15 + 31 s: still trying at 55 s.
    net.run_until(Duration::from_secs(55));
    assert_eq!(net.clients[0].failure(), None);
    net.run_until(Duration::from_secs(600));
    assert_eq!(
        net.clients[0].failure(),
        Some(&Failure::NoOffer { attempts: 4 })
    );
    let client_sends: Vec<Duration> = net
        .sent_at
        .iter()
        .filter(|(_, w)| *w == "client")
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(client_sends.len(), 4, "{client_sends:?}");
    // DISCOVERs at 0, ~4, ~12, ~28 s; after the fourth's ~32 s wait the client gives up.
    let events = net.client_events(0);
    assert!(matches!(
        events.last(),
        Some(ClientEvent::Failed(Failure::NoOffer { attempts: 4 }))
    ));
    let last_send = client_sends[3];
    assert!(last_send >= Duration::from_secs(25) && last_send <= Duration::from_secs(31));
    assert!(net.clients[0].poll_timeout().is_none());
}

#[test]
fn timeouts_are_parameters() {
    let mut net = Net::new(1);
    net.server_silent = true;
    net.clients[0] = Client::new(
        ClientConfig {
            initial_timeout: Duration::from_millis(500),
            jitter: Duration::ZERO,
            discover_attempts: 2,
            ..ClientConfig::default()
        },
        AdapterFacts::ready(mac(1)),
        0,
    );
    net.start();
    net.run_until(Duration::from_millis(1499));
    assert!(net.clients[0].failure().is_none());
    net.run_until(Duration::from_millis(1500));
    assert_eq!(
        net.clients[0].failure(),
        Some(&Failure::NoOffer { attempts: 2 })
    );
}

#[test]
fn an_adapter_that_cannot_do_dhcp_fails_at_once_with_its_reason() {
    let cases = [
        (
            AdapterFacts {
                link_up: false,
                ..AdapterFacts::ready(mac(1))
            },
            Failure::NoLink,
        ),
        (
            AdapterFacts {
                dhcp_enabled: false,
                ..AdapterFacts::ready(mac(1))
            },
            Failure::NotConfiguredForDhcp,
        ),
        (
            AdapterFacts {
                uefi_driver: false,
                ..AdapterFacts::ready(mac(1))
            },
            Failure::NoUefiDriver,
        ),
    ];
    for (facts, reason) in cases {
        let mut client = Client::new(ClientConfig::default(), facts, 0);
        client.start(Duration::ZERO, &mut ChaCha20Rng::seed_from_u64(1));
        assert!(client.poll_transmit().is_none());
        assert_eq!(client.failure(), Some(&reason));
        assert_eq!(client.poll_event(), Some(ClientEvent::Failed(reason)));
    }
}

/// A request built by hand, as a client in another state would send it.
fn request(mac_n: u8, build: impl FnOnce(&mut Message)) -> Vec<u8> {
    let mut m = Message::default();
    m.set_xid(0x1234).set_chaddr(&mac(mac_n));
    m.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Request));
    build(&mut m);
    m.to_vec().expect("encodes")
}

fn handle(server: &mut Server, payload: &[u8]) -> Option<(Message, SocketAddr)> {
    server.handle(
        Duration::from_secs(10),
        Received {
            interface: 0,
            src: "0.0.0.0:68".parse().expect("literal"),
            dst: "255.255.255.255:67".parse().expect("literal"),
            payload,
        },
    );
    server.poll_transmit().map(|t| {
        (
            Message::decode(&mut Decoder::new(&t.payload)).expect("server replies decode"),
            t.dst,
        )
    })
}

#[test]
fn a_wrong_requested_address_is_naked() {
    let mut net = Net::new(1);
    net.start();
    net.run_until(Duration::from_secs(1));
    let held = net.clients[0].lease().expect("bound").address;

    // Selecting, for an address this server never offered.
    let (reply, dst) = handle(
        &mut net.server,
        &request(1, |m| {
            m.opts_mut()
                .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 1)));
            m.opts_mut()
                .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 150)));
        }),
    )
    .expect("a NAK");
    assert_eq!(reply.opts().msg_type(), Some(MessageType::Nak));
    assert_eq!(dst, "255.255.255.255:68".parse().expect("literal"));

    // Init-reboot on the wrong network.
    let (reply, _) = handle(
        &mut net.server,
        &request(1, |m| {
            m.opts_mut()
                .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(
                    192, 168, 9, 9,
                )));
        }),
    )
    .expect("a NAK");
    assert_eq!(reply.opts().msg_type(), Some(MessageType::Nak));

    // Init-reboot for an address another client holds.
    let (reply, _) = handle(
        &mut net.server,
        &request(2, |m| {
            m.opts_mut().insert(DhcpOption::RequestedIpAddress(held));
        }),
    )
    .expect("a NAK");
    assert_eq!(reply.opts().msg_type(), Some(MessageType::Nak));

    // Init-reboot for the client's own address: ACK.
    let (reply, _) = handle(
        &mut net.server,
        &request(1, |m| {
            m.opts_mut()
                .insert(DhcpOption::ClientIdentifier([&[1u8][..], &mac(1)].concat()));
            m.opts_mut().insert(DhcpOption::RequestedIpAddress(held));
        }),
    )
    .expect("an ACK");
    assert_eq!(reply.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(reply.yiaddr(), held);

    // Init-reboot for a free address nobody asked for: RFC 2131 says stay silent.
    assert!(
        handle(
            &mut net.server,
            &request(3, |m| {
                m.opts_mut()
                    .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 180)));
            }),
        )
        .is_none()
    );
    assert_eq!(net.server.counters().naks, 3);
    assert_eq!(net.server.counters().dropped(DropReason::UnknownLease), 1);
}

#[test]
fn only_a_reply_for_the_client_is_taken_and_one_dropped_unseen_leaves_nothing_to_poll() {
    let mut server = server();
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let mut ours = Client::new(ClientConfig::default(), AdapterFacts::ready(mac(1)), 0);
    let mut other = Client::new(ClientConfig::default(), AdapterFacts::ready(mac(2)), 0);
    ours.start(Duration::ZERO, &mut rng);
    other.start(Duration::ZERO, &mut rng);
    server.handle(Duration::ZERO, received(&ours.poll_transmit().expect("d")));
    let our_offer = server.poll_transmit().expect("our offer");
    server.handle(Duration::ZERO, received(&other.poll_transmit().expect("d")));
    let their_offer = server.poll_transmit().expect("their offer");
    while ours.poll_event().is_some() {}
    let deadline = ours.poll_timeout();
    // Another client's offer (the same segment's broadcast): dropped unseen.
    assert!(!ours.handle(Duration::ZERO, received(&their_offer), &mut rng));
    assert!(ours.poll_transmit().is_none() && ours.poll_event().is_none());
    assert_eq!(ours.poll_timeout(), deadline);
    // A reply on another interface, likewise.
    let mut elsewhere = received(&our_offer);
    elsewhere.interface = 1;
    assert!(!ours.handle(Duration::ZERO, elsewhere, &mut rng));
    assert!(ours.poll_transmit().is_none() && ours.poll_event().is_none());
    // Its own: taken, with an event and the REQUEST to show for it.
    assert!(ours.handle(Duration::ZERO, received(&our_offer), &mut rng));
    let events: Vec<ClientEvent> = std::iter::from_fn(|| ours.poll_event()).collect();
    assert!(matches!(events.first(), Some(ClientEvent::Offered { .. })));
    assert_eq!(
        kind(&ours.poll_transmit().expect("request").payload),
        Some(MessageType::Request)
    );
    assert!(ours.poll_transmit().is_none());
    // The same offer again, now that the client is requesting: nothing to do, not taken.
    assert!(!ours.handle(Duration::ZERO, received(&our_offer), &mut rng));
    assert!(ours.poll_transmit().is_none() && ours.poll_event().is_none());
}

#[test]
fn a_nak_ends_the_client_with_its_reason() {
    let mut server = server();
    let mut client = Client::new(ClientConfig::default(), AdapterFacts::ready(mac(1)), 0);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    client.start(Duration::ZERO, &mut rng);
    let discover = client.poll_transmit().expect("discover");
    server.handle(Duration::ZERO, received(&discover));
    let offer = server.poll_transmit().expect("offer");
    client.handle(Duration::ZERO, received(&offer), &mut rng);
    let request = client.poll_transmit().expect("request");
    // Before the REQUEST arrives, the offer lapses and another client takes the address.
    server.handle_timeout(Duration::from_secs(61));
    let mut other = Client::new(ClientConfig::default(), AdapterFacts::ready(mac(2)), 0);
    other.start(Duration::from_secs(61), &mut rng);
    server.handle(
        Duration::from_secs(61),
        received(&other.poll_transmit().expect("d")),
    );
    server.poll_transmit().expect("offer to the other");
    server.handle(Duration::from_secs(62), received(&request));
    let nak = server.poll_transmit().expect("nak");
    client.handle(Duration::from_secs(62), received(&nak), &mut rng);
    assert!(matches!(
        client.failure(),
        Some(Failure::Nak { server, message: Some(_) }) if *server == Ipv4Addr::new(10, 0, 0, 1)
    ));
}

#[test]
fn renewing_is_acked_by_unicast_and_extends_the_lease() {
    let mut net = Net::new(1);
    net.start();
    net.run_until(Duration::from_secs(1));
    let held = net.clients[0].lease().expect("bound").address;
    let (reply, dst) = handle(
        &mut net.server,
        &request(1, |m| {
            m.set_ciaddr(held);
            m.opts_mut()
                .insert(DhcpOption::ClientIdentifier([&[1u8][..], &mac(1)].concat()));
        }),
    )
    .expect("an ACK");
    assert_eq!(reply.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(dst, SocketAddr::V4(SocketAddrV4::new(held, CLIENT_PORT)));
    assert_eq!(
        net.server.leases()[0].expires,
        Duration::from_secs(10 + 600)
    );
}

#[test]
fn a_declined_address_is_not_offered_again() {
    let mut net = Net::new(1);
    net.start();
    net.run_until(Duration::from_secs(1));
    let held = net.clients[0].lease().expect("bound").address;
    let mut decline = Message::default();
    decline.set_xid(9).set_chaddr(&mac(1));
    decline
        .opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Decline));
    decline
        .opts_mut()
        .insert(DhcpOption::ClientIdentifier([&[1u8][..], &mac(1)].concat()));
    decline
        .opts_mut()
        .insert(DhcpOption::RequestedIpAddress(held));
    assert!(handle(&mut net.server, &decline.to_vec().expect("encodes")).is_none());
    assert!(net.server.leases().is_empty());
    net.clients[0].start(net.now, &mut net.rng);
    net.run_until(Duration::from_secs(20));
    let again = net.clients[0].lease().expect("bound again").address;
    assert_ne!(again, held);
}

#[test]
fn inform_gets_configuration_without_a_lease() {
    let mut server = server();
    let mut inform = Message::default();
    inform
        .set_xid(5)
        .set_chaddr(&mac(4))
        .set_ciaddr(Ipv4Addr::new(10, 0, 0, 42));
    inform
        .opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Inform));
    let (reply, dst) = handle(&mut server, &inform.to_vec().expect("encodes")).expect("ack");
    assert_eq!(reply.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(reply.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(reply.opts().get(OptionCode::AddressLeaseTime).is_none());
    assert!(reply.opts().get(OptionCode::Router).is_some());
    assert_eq!(dst, "10.0.0.42:68".parse().expect("literal"));
    assert!(server.leases().is_empty());
}

#[test]
fn a_request_for_another_server_frees_our_offer() {
    let mut server = server();
    let mut client = Client::new(ClientConfig::default(), AdapterFacts::ready(mac(1)), 0);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    client.start(Duration::ZERO, &mut rng);
    server.handle(
        Duration::ZERO,
        received(&client.poll_transmit().expect("d")),
    );
    let offer = server.poll_transmit().expect("offer");
    let offered = Message::decode(&mut Decoder::new(&offer.payload))
        .expect("decodes")
        .yiaddr();
    let chose_other = request(1, |m| {
        m.opts_mut()
            .insert(DhcpOption::ClientIdentifier([&[1u8][..], &mac(1)].concat()));
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 2)));
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(offered));
    });
    assert!(handle(&mut server, &chose_other).is_none());
    assert_eq!(server.counters().dropped(DropReason::OtherServer), 1);
    assert_eq!(server.poll_timeout(), None, "the offer is no longer held");
}

fn network_unlock_request_from_capture() -> Vec<u8> {
    let hex: String = std::fs::read_to_string(testkit::fixture(
        "windows-captures/windows10-nkpu-request-v4.frame.hex",
    ))
    .expect("fixture")
    .split_whitespace()
    .collect();
    let frame: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    frame[14 + ihl + 8..].to_vec()
}

#[test]
fn network_unlock_requests_are_ignored_and_counted() {
    let mut server = server();
    let payload = network_unlock_request_from_capture();
    assert!(handle(&mut server, &payload).is_none());
    assert_eq!(server.counters().network_unlock_ignored, 1);
    assert!(
        server.counters().dropped.is_empty(),
        "not counted as malformed"
    );
    assert_eq!(
        server.poll_event(),
        Some(ServerEvent::NetworkUnlockIgnored { interface: 0 })
    );
    // The same packet without its vendor class would be an ordinary (malformed: no type) one.
    let mut other = payload.clone();
    let at = other
        .windows(9)
        .position(|w| w == b"BITLOCKER")
        .expect("vendor class in the capture");
    other[at] = b'X';
    assert!(handle(&mut server, &other).is_none());
    assert_eq!(server.counters().network_unlock_ignored, 1);
    assert_eq!(server.counters().dropped(DropReason::NoMessageType), 1);
}

#[test]
fn malformed_and_foreign_packets_are_dropped_by_reason() {
    let mut server = server();
    assert!(handle(&mut server, &[1, 2, 3]).is_none());
    let mut reply = Message::default();
    reply
        .set_opcode(dhcproto::v4::Opcode::BootReply)
        .set_chaddr(&mac(1));
    reply
        .opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Offer));
    assert!(handle(&mut server, &reply.to_vec().expect("encodes")).is_none());
    let c = server.counters();
    assert_eq!(c.dropped(DropReason::Malformed), 1);
    assert_eq!(c.dropped(DropReason::NotARequest), 1);
    assert_eq!(c.received, 2);
}

#[test]
fn the_same_seed_gives_the_same_exchange() {
    let run = || {
        let mut net = Net::new(3);
        net.lose_first = 2;
        net.start();
        net.run_until(Duration::from_secs(30));
        (
            net.sent_at.clone(),
            net.clients
                .iter()
                .map(|c| c.lease().cloned())
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(run(), run());
}

proptest! {
    /// Any client, any seed, any amount of early loss up to what four attempts survive: the
    /// client's lease and the server's record agree, and the address is in the pool.
    #[test]
    fn client_and_server_agree_on_every_lease(
        mac_bytes in any::<[u8; 6]>(),
        seed in any::<u64>(),
        lost in 0usize..4,
    ) {
        let mut net = Net::new(0);
        net.rng = ChaCha20Rng::seed_from_u64(seed);
        net.clients.push(Client::new(ClientConfig::default(), AdapterFacts::ready(mac_bytes), 0));
        net.lose_first = lost;
        net.start();
        net.run_until(Duration::from_secs(300));
        let lease = net.clients[0].lease().expect("four attempts survive the loss").clone();
        prop_assert!(pools()[0].first <= lease.address && lease.address <= pools()[0].last);
        let records = net.server.leases();
        prop_assert_eq!(records.len(), 1);
        prop_assert_eq!(records[0].addr, lease.address);
        let mut id = vec![1u8];
        id.extend_from_slice(&mac_bytes);
        prop_assert_eq!(records[0].client.as_bytes(), &id[..]);
        prop_assert_eq!(records[0].expires, lease.acquired_at + Duration::from_secs(600));
    }

    /// Offers held and let go, leases bound, renewed and expired, under loss: the server's
    /// expiry index always matches its bindings, so its next timeout is the earliest expiry.
    #[test]
    fn the_expiry_index_follows_every_binding(
        clients in 1usize..12,
        seed in any::<u64>(),
        lost in 0usize..6,
        checkpoints in proptest::collection::vec(1u64..4000, 1..6),
    ) {
        let mut net = Net::new(clients);
        net.rng = ChaCha20Rng::seed_from_u64(seed);
        net.lose_first = lost;
        net.start();
        let mut checkpoints = checkpoints;
        checkpoints.sort_unstable();
        for at in checkpoints {
            net.run_until(Duration::from_secs(at));
            prop_assert!(net.server.expiry_index_matches_bindings());
            let earliest = net.server.leases().iter().map(|l| l.expires).min();
            if let (Some(earliest), Some(next)) = (earliest, net.server.poll_timeout()) {
                prop_assert!(next <= earliest);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_server_or_the_client(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        interface in 0usize..3,
    ) {
        let mut server = server();
        let rx = Received {
            interface,
            src: "0.0.0.0:68".parse().expect("literal"),
            dst: "255.255.255.255:67".parse().expect("literal"),
            payload: &bytes,
        };
        server.handle(Duration::ZERO, rx);
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut client = Client::new(ClientConfig::default(), AdapterFacts::ready(mac(1)), 0);
        client.start(Duration::ZERO, &mut rng);
        client.handle(Duration::ZERO, rx, &mut rng);
        prop_assert!(client.lease().is_none());
    }

    #[test]
    fn mutated_replies_never_panic_the_client(
        flips in proptest::collection::vec((0usize..400, any::<u8>()), 1..8),
    ) {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let mut server = server();
        let mut client = Client::new(ClientConfig::default(), AdapterFacts::ready(mac(1)), 0);
        client.start(Duration::ZERO, &mut rng);
        server.handle(Duration::ZERO, received(&client.poll_transmit().expect("discover")));
        let mut offer = server.poll_transmit().expect("offer");
        for (at, byte) in flips {
            if let Some(b) = offer.payload.get_mut(at) {
                *b = byte;
            }
        }
        while client.poll_event().is_some() {}
        let deadline = client.poll_timeout();
        let taken = client.handle(Duration::ZERO, received(&offer), &mut rng);
        if !taken {
            // Not taken: nothing changed that a caller could poll.
            prop_assert!(client.poll_event().is_none());
            prop_assert!(client.poll_transmit().is_none());
            prop_assert_eq!(client.poll_timeout(), deadline);
        }
        if let Some(request) = client.poll_transmit() {
            server.handle(Duration::ZERO, received(&request));
        }
    }
}
