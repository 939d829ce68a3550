//! The little of DHCPv6 that the Network Unlock path needs (RFC 8415 §18.2.6 and §18.3.6):
//! a client that sends an Information-Request from its link-local address to
//! `ff02::1:2` and accepts the first Reply carrying a server identifier, and a server that
//! answers Information-Requests with a Reply carrying its DUID (and DNS servers if it has any).
//!
//! Link-local addressing is the shell's (the simulator derives `fe80::/64` from the MAC).
//! Network Unlock's own DHCPv6 request is an Information-Request too, with vendor class
//! `BITLOCKER`: the server here leaves those to the WDS server and counts them.

use std::collections::VecDeque;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use dhcproto::v6::{DhcpOption, Message, MessageType, ORO, OptionCode};
use dhcproto::{Decodable, Decoder};
use rand_core::RngCore;

use crate::{Interface, Received, Transmit, V6_CLIENT_PORT, V6_SERVER_PORT, raw};

/// All_DHCP_Relay_Agents_and_Servers.
pub const ALL_DHCP_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

/// A DUID-LL (type 3, hardware type 1) from a MAC address.
pub fn duid_ll(mac: [u8; 6]) -> Vec<u8> {
    let mut duid = vec![0, 3, 0, 1];
    duid.extend_from_slice(&mac);
    duid
}

/// The Information-Request timers. RFC 8415 uses INF_TIMEOUT 1 s and INF_MAX_RT 3600 s with
/// no attempt limit; firmware on a boot path gives up after a few, so the count is a parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequestConfig {
    pub initial_timeout: Duration,
    pub max_timeout: Duration,
    pub attempts: u32,
}

impl Default for InfoRequestConfig {
    fn default() -> Self {
        InfoRequestConfig {
            initial_timeout: Duration::from_secs(1),
            max_timeout: Duration::from_secs(8),
            attempts: 4,
        }
    }
}

/// What a Reply told the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoReply {
    pub server: SocketAddr,
    pub server_duid: Vec<u8>,
    pub dns: Vec<Ipv6Addr>,
}

/// What the Information-Request client reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InfoEvent {
    Replied(InfoReply),
    /// No Reply after every attempt.
    NoReply {
        attempts: u32,
    },
}

/// A DHCPv6 Information-Request exchange on one interface.
pub struct InfoRequester {
    config: InfoRequestConfig,
    interface: Interface,
    link_local: Ipv6Addr,
    client_duid: Vec<u8>,
    xid: [u8; 3],
    started_at: Duration,
    attempt: u32,
    timeout: Duration,
    deadline: Option<Duration>,
    reply: Option<InfoReply>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<InfoEvent>,
}

impl InfoRequester {
    pub fn new(
        config: InfoRequestConfig,
        interface: Interface,
        mac: [u8; 6],
        link_local: Ipv6Addr,
    ) -> InfoRequester {
        InfoRequester {
            timeout: config.initial_timeout,
            config,
            interface,
            link_local,
            client_duid: duid_ll(mac),
            xid: [0; 3],
            started_at: Duration::ZERO,
            attempt: 0,
            deadline: None,
            reply: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn start(&mut self, now: Duration, rng: &mut dyn RngCore) {
        let mut xid = [0u8; 3];
        rng.fill_bytes(&mut xid);
        self.xid = xid;
        self.started_at = now;
        self.attempt = 0;
        self.timeout = self.config.initial_timeout;
        self.send(now, rng);
    }

    pub fn reply(&self) -> Option<&InfoReply> {
        self.reply.as_ref()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<InfoEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Duration> {
        self.deadline
    }

    pub fn handle_timeout(&mut self, now: Duration, rng: &mut dyn RngCore) {
        if self.deadline.is_none_or(|d| now < d) {
            return;
        }
        if self.attempt >= self.config.attempts {
            self.deadline = None;
            self.events.push_back(InfoEvent::NoReply {
                attempts: self.attempt,
            });
            return;
        }
        // RFC 8415 §15: RT = 2·RTprev + RAND·RTprev, capped at MRT.
        self.timeout = (self.timeout * 2).min(self.config.max_timeout);
        self.send(now, rng);
    }

    pub fn handle(&mut self, now: Duration, received: Received<'_>) {
        let _ = now;
        if received.interface != self.interface || self.deadline.is_none() {
            return;
        }
        if !raw::v6_safe_for_dhcproto(received.payload) {
            return;
        }
        let Ok(message) = Message::decode(&mut Decoder::new(received.payload)) else {
            return;
        };
        if message.msg_type() != MessageType::Reply || message.xid() != self.xid {
            return;
        }
        let Some(DhcpOption::ServerId(server_duid)) = message.opts().get(OptionCode::ServerId)
        else {
            return;
        };
        // A Reply for another client (RFC 8415 §16.10) is not ours.
        if let Some(DhcpOption::ClientId(id)) = message.opts().get(OptionCode::ClientId)
            && *id != self.client_duid
        {
            return;
        }
        let dns = match message.opts().get(OptionCode::DomainNameServers) {
            Some(DhcpOption::DomainNameServers(dns)) => dns.clone(),
            _ => Vec::new(),
        };
        let reply = InfoReply {
            server: received.src,
            server_duid: server_duid.clone(),
            dns,
        };
        self.deadline = None;
        self.reply = Some(reply.clone());
        self.events.push_back(InfoEvent::Replied(reply));
    }

    fn send(&mut self, now: Duration, rng: &mut dyn RngCore) {
        let mut message = Message::new_with_id(MessageType::InformationRequest, self.xid);
        let elapsed_cs =
            u16::try_from(now.saturating_sub(self.started_at).as_millis() / 10).unwrap_or(u16::MAX);
        let opts = message.opts_mut();
        opts.insert(DhcpOption::ClientId(self.client_duid.clone()));
        opts.insert(DhcpOption::ElapsedTime(elapsed_cs));
        opts.insert(DhcpOption::ORO(ORO {
            opts: vec![OptionCode::DomainNameServers],
        }));
        let Ok(payload) = dhcp_wire::encode_exact(&message) else {
            return;
        };
        self.transmits.push_back(Transmit {
            interface: self.interface,
            src: SocketAddr::V6(SocketAddrV6::new(self.link_local, V6_CLIENT_PORT, 0, 0)),
            dst: SocketAddr::V6(SocketAddrV6::new(ALL_DHCP_SERVERS, V6_SERVER_PORT, 0, 0)),
            payload,
        });
        self.attempt += 1;
        // RAND in -0.1..=+0.1 of the timeout (RFC 8415 §15), drawn in permille.
        let permille = 900 + rng.next_u32() % 201;
        let wait = self.timeout * permille / 1000;
        self.deadline = Some(now + wait);
    }
}

/// Counters of the DHCPv6 information server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InfoServerCounters {
    pub replies: u64,
    pub network_unlock_ignored: u64,
    pub dropped: u64,
}

/// Answers Information-Requests with a Reply carrying the server's DUID.
pub struct InfoServer {
    duid: Vec<u8>,
    /// The server's link-local address on each interface.
    interfaces: Vec<Ipv6Addr>,
    dns: Vec<Ipv6Addr>,
    transmits: VecDeque<Transmit>,
    counters: InfoServerCounters,
}

impl InfoServer {
    pub fn new(duid: Vec<u8>, interfaces: Vec<Ipv6Addr>, dns: Vec<Ipv6Addr>) -> InfoServer {
        InfoServer {
            duid,
            interfaces,
            dns,
            transmits: VecDeque::new(),
            counters: InfoServerCounters::default(),
        }
    }

    pub fn counters(&self) -> &InfoServerCounters {
        &self.counters
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn handle(&mut self, _now: Duration, received: Received<'_>) {
        if raw::v6_is_network_unlock(received.payload) {
            self.counters.network_unlock_ignored += 1;
            return;
        }
        let (Some(&local), SocketAddr::V6(client)) =
            (self.interfaces.get(received.interface), received.src)
        else {
            self.counters.dropped += 1;
            return;
        };
        if !raw::v6_safe_for_dhcproto(received.payload) {
            self.counters.dropped += 1;
            return;
        }
        let Ok(request) = Message::decode(&mut Decoder::new(received.payload)) else {
            self.counters.dropped += 1;
            return;
        };
        // RFC 8415 §16.12: an Information-Request naming another server is not ours.
        let for_another = matches!(
            request.opts().get(OptionCode::ServerId),
            Some(DhcpOption::ServerId(id)) if *id != self.duid
        );
        if request.msg_type() != MessageType::InformationRequest || for_another {
            self.counters.dropped += 1;
            return;
        }
        let mut reply = Message::new_with_id(MessageType::Reply, request.xid());
        let opts = reply.opts_mut();
        opts.insert(DhcpOption::ServerId(self.duid.clone()));
        if let Some(DhcpOption::ClientId(id)) = request.opts().get(OptionCode::ClientId) {
            opts.insert(DhcpOption::ClientId(id.clone()));
        }
        if !self.dns.is_empty() {
            opts.insert(DhcpOption::DomainNameServers(self.dns.clone()));
        }
        let Ok(payload) = dhcp_wire::encode_exact(&reply) else {
            self.counters.dropped += 1;
            return;
        };
        self.counters.replies += 1;
        self.transmits.push_back(Transmit {
            interface: received.interface,
            src: SocketAddr::V6(SocketAddrV6::new(local, V6_SERVER_PORT, 0, 0)),
            dst: SocketAddr::V6(client),
            payload,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const CLIENT_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0xff, 0xfe00, 1);
    const SERVER_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0xff, 0xfe00, 2);
    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn rx(t: &Transmit) -> Received<'_> {
        Received {
            interface: 0,
            src: t.src,
            dst: t.dst,
            payload: &t.payload,
        }
    }

    fn server() -> InfoServer {
        InfoServer::new(
            duid_ll([2, 0, 0, 0, 0, 0x53]),
            vec![SERVER_LL],
            vec!["fd00::53".parse().expect("literal")],
        )
    }

    #[test]
    fn information_request_gets_a_reply_with_the_server_duid() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut client = InfoRequester::new(InfoRequestConfig::default(), 0, MAC, CLIENT_LL);
        let mut server = server();
        client.start(Duration::ZERO, &mut rng);
        let request = client.poll_transmit().expect("information-request");
        assert_eq!(request.dst, "[ff02::1:2]:547".parse().expect("literal"));
        assert_eq!(
            request.src,
            SocketAddr::V6(SocketAddrV6::new(CLIENT_LL, 546, 0, 0))
        );
        assert_eq!(request.payload[0], 11, "Information-Request");
        server.handle(Duration::ZERO, rx(&request));
        let reply = server.poll_transmit().expect("reply");
        assert_eq!(reply.dst, request.src);
        assert_eq!(reply.payload[0], 7, "Reply");
        client.handle(Duration::ZERO, rx(&reply));
        let got = client.reply().expect("replied");
        assert_eq!(got.server_duid, duid_ll([2, 0, 0, 0, 0, 0x53]));
        assert_eq!(
            got.dns,
            vec!["fd00::53".parse::<Ipv6Addr>().expect("literal")]
        );
        assert_eq!(client.poll_timeout(), None);
        assert_eq!(server.counters().replies, 1);
    }

    #[test]
    fn a_reply_to_another_transaction_is_ignored_and_the_client_gives_up_on_time() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let mut client = InfoRequester::new(InfoRequestConfig::default(), 0, MAC, CLIENT_LL);
        client.start(Duration::ZERO, &mut rng);
        let mut request = client.poll_transmit().expect("sent");
        request.payload[1] ^= 0xff;
        let mut server = server();
        server.handle(Duration::ZERO, rx(&request));
        client.handle(Duration::ZERO, rx(&server.poll_transmit().expect("reply")));
        assert!(client.reply().is_none());
        // 1, 2, 4, 8 s (each ±10 %) then give up.
        let mut sends = 1;
        let mut now = Duration::ZERO;
        while let Some(at) = client.poll_timeout() {
            now = at;
            client.handle_timeout(now, &mut rng);
            sends += usize::from(client.poll_transmit().is_some());
        }
        assert_eq!(sends, 4);
        assert!(now >= Duration::from_millis(13_500) && now <= Duration::from_millis(16_500));
        assert_eq!(
            std::iter::from_fn(|| client.poll_event()).last(),
            Some(InfoEvent::NoReply { attempts: 4 })
        );
    }

    #[test]
    fn network_unlock_information_requests_are_left_to_wds() {
        let hex: String = std::fs::read_to_string(testkit::fixture(
            "windows-captures/windows10-nkpu-request-v6.frame.hex",
        ))
        .expect("fixture")
        .split_whitespace()
        .collect();
        let frame: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
            .collect();
        // Ethernet (14) + IPv6 (40) + UDP (8).
        let payload = &frame[62..];
        assert_eq!(payload[0], 11);
        let mut server = server();
        server.handle(
            Duration::ZERO,
            Received {
                interface: 0,
                src: "[fe80::1]:546".parse().expect("literal"),
                dst: "[ff02::1:2]:547".parse().expect("literal"),
                payload,
            },
        );
        assert!(server.poll_transmit().is_none());
        assert_eq!(server.counters().network_unlock_ignored, 1);
        assert_eq!(server.counters().dropped, 0);
    }

    proptest! {
        #[test]
        fn mutated_messages_never_panic_either_side(
            flips in proptest::collection::vec((0usize..80, any::<u8>()), 1..6),
            truncate in 0usize..80,
        ) {
            let mut rng = ChaCha20Rng::seed_from_u64(3);
            let mut client = InfoRequester::new(InfoRequestConfig::default(), 0, MAC, CLIENT_LL);
            let mut server = server();
            client.start(Duration::ZERO, &mut rng);
            let mut request = client.poll_transmit().expect("sent");
            let pristine = request.clone();
            for &(at, byte) in &flips {
                if let Some(b) = request.payload.get_mut(at) {
                    *b = byte;
                }
            }
            request.payload.truncate(truncate.max(1));
            server.handle(Duration::ZERO, rx(&request));
            server.handle(Duration::ZERO, rx(&pristine));
            // The mutated request may or may not have been answered; the pristine one was.
            let mut replies: Vec<Transmit> = std::iter::from_fn(|| server.poll_transmit()).collect();
            let mut reply = replies.pop().expect("a reply to the pristine request");
            for (at, byte) in flips {
                if let Some(b) = reply.payload.get_mut(at) {
                    *b = byte;
                }
            }
            client.handle(Duration::ZERO, rx(&reply));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let rx = Received {
                interface: 0,
                src: "[fe80::1]:546".parse().expect("literal"),
                dst: "[ff02::1:2]:547".parse().expect("literal"),
                payload: &bytes,
            };
            let mut server = server();
            server.handle(Duration::ZERO, rx);
            let mut rng = ChaCha20Rng::seed_from_u64(1);
            let mut client = InfoRequester::new(InfoRequestConfig::default(), 0, MAC, CLIENT_LL);
            client.start(Duration::ZERO, &mut rng);
            client.handle(Duration::ZERO, rx);
        }
    }
}
