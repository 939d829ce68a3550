//! The DHCP relay agent: requests forwarded to each helper with giaddr set, replies brought
//! back to the client's segment, per-interface helper lists.

use std::net::{Ipv4Addr, SocketAddr};

use dhcproto::v4::{
    Decodable, Decoder, DhcpOption, Encodable, Flags, Message, MessageType, Opcode,
};
use netsim::{AdapterConfig, Bytes, Datagram, HostStack, SegmentConfig, Service, Simulation};

use crate::{Log, Probe, millis, net, secs};

fn discover(broadcast: bool) -> Vec<u8> {
    let mut msg = Message::default();
    msg.set_opcode(Opcode::BootRequest)
        .set_xid(0xfeed)
        .set_chaddr(&[0x02, 0xaa, 0, 0, 0, 1])
        .set_flags(if broadcast {
            Flags::default().set_broadcast()
        } else {
            Flags::default()
        });
    msg.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Discover));
    msg.to_vec().expect("encode")
}

/// Answers every BOOTREQUEST on port 67 with an OFFER of 10.0.1.50 sent to giaddr:67, as a
/// DHCP server behind a relay does. Not a DHCP server: just enough to exercise the relay.
#[derive(Clone, Default)]
struct Offerer {
    log: Log,
}

impl Service for Offerer {
    fn on_start(&mut self, stack: &mut dyn HostStack) {
        stack.bind(67).expect("port free");
    }
    fn on_datagram(&mut self, stack: &mut dyn HostStack, d: Datagram) {
        self.log.0.borrow_mut().push(crate::Got {
            at: stack.now(),
            host: stack.host_name().to_owned(),
            adapter: d.adapter,
            src: d.src,
            dst: d.dst,
            payload: d.payload.to_vec(),
        });
        let Ok(request) = Message::decode(&mut Decoder::new(&d.payload)) else {
            return;
        };
        let mut offer = Message::default();
        offer
            .set_opcode(Opcode::BootReply)
            .set_xid(request.xid())
            .set_flags(request.flags())
            .set_giaddr(request.giaddr())
            .set_yiaddr(Ipv4Addr::new(10, 0, 1, 50))
            .set_chaddr(request.chaddr());
        offer
            .opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Offer));
        let own = stack.adapters()[d.adapter]
            .ipv4
            .map(|n| n.addr())
            .expect("static server");
        let src = SocketAddr::from((own, 67));
        let dst = SocketAddr::from((request.giaddr(), 67));
        let bytes = offer.to_vec().expect("encode");
        stack
            .send(d.adapter, src, dst, Bytes::from(bytes))
            .expect("valid");
    }
    fn on_timer(&mut self, _: &mut dyn HostStack, _: u64) {}
}

struct Network {
    sim: Simulation,
    client: Probe,
    dhcp: Offerer,
    wds: Probe,
}

/// client (segment "clients", 10.0.1.0/24) -- router (relay on 10.0.1.1) -- servers segment
/// (10.0.0.0/24) with the DHCP server at 10.0.0.2 and the WDS server at 10.0.0.3.
fn network(helpers: Vec<Ipv4Addr>, broadcast_flag: bool) -> Network {
    let mut sim = Simulation::new(10);
    sim.enable_trace();
    let clients = sim.add_segment("clients", SegmentConfig::default().ipv4(net("10.0.1.0/24")));
    let servers = sim.add_segment("servers", SegmentConfig::default().ipv4(net("10.0.0.0/24")));
    let router = sim.add_router("router");
    let relay = sim
        .add_router_interface(router, clients, net("10.0.1.1/24"))
        .expect("iface");
    sim.add_router_interface(router, servers, net("10.0.0.1/24"))
        .expect("iface");
    sim.set_relay(relay, helpers).expect("iface");

    let client_host = sim.add_host("client");
    sim.add_adapter(
        client_host,
        "eth0",
        clients,
        AdapterConfig::dhcp().mac("02:aa:00:00:00:01".parse().expect("mac")),
    )
    .expect("adapter");
    let client = Probe::listening(&[68]).sending(
        millis(1),
        "0.0.0.0:68",
        "255.255.255.255:67",
        &discover(broadcast_flag),
    );
    sim.add_service(client_host, "client", client.install())
        .expect("service");

    let dhcp_host = sim.add_host("dhcp");
    sim.add_adapter(
        dhcp_host,
        "eth0",
        servers,
        AdapterConfig::static_ipv4(net("10.0.0.2/24")),
    )
    .expect("adapter");
    let dhcp = Offerer::default();
    let d = dhcp.clone();
    sim.add_service(dhcp_host, "dhcp", move || Box::new(d.clone()))
        .expect("service");

    let wds_host = sim.add_host("wds");
    sim.add_adapter(
        wds_host,
        "eth0",
        servers,
        AdapterConfig::static_ipv4(net("10.0.0.3/24")),
    )
    .expect("adapter");
    let wds = Probe::listening(&[67]);
    sim.add_service(wds_host, "wds", wds.install())
        .expect("service");
    Network {
        sim,
        client,
        dhcp,
        wds,
    }
}

#[test]
fn relay_forwards_with_giaddr_and_brings_the_broadcast_reply_back() {
    let mut n = network(vec![Ipv4Addr::new(10, 0, 0, 2)], true);
    n.sim.run_until(secs(1));

    let seen = n.dhcp.log.all();
    assert_eq!(seen.len(), 1, "{}", n.sim.trace_text());
    assert_eq!(
        seen[0].src.to_string(),
        "10.0.1.1:67",
        "relays send from their own address, port 67"
    );
    assert_eq!(seen[0].dst.to_string(), "10.0.0.2:67");
    let relayed = Message::decode(&mut Decoder::new(&seen[0].payload)).expect("valid DHCP");
    assert_eq!(relayed.giaddr(), Ipv4Addr::new(10, 0, 1, 1));
    assert_eq!(relayed.hops(), 1);
    assert_eq!(relayed.xid(), 0xfeed);
    assert_eq!(
        n.wds.log.len(),
        0,
        "the relay does not forward to WDS, and broadcasts stay local"
    );

    let replies = n.client.log.all();
    assert_eq!(replies.len(), 1, "{}", n.sim.trace_text());
    assert_eq!(
        replies[0].dst.to_string(),
        "255.255.255.255:68",
        "the broadcast flag was set"
    );
    assert_eq!(replies[0].src.to_string(), "10.0.1.1:67");
    let offer = Message::decode(&mut Decoder::new(&replies[0].payload)).expect("valid DHCP");
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 0, 1, 50));
    let trace = n.sim.trace_text();
    assert!(
        trace.contains("router/clients relayed DHCPv4 request to 10.0.0.2:67 (giaddr 10.0.1.1)"),
        "{trace}"
    );
    assert!(
        trace.contains("router/clients relayed DHCPv4 reply to 255.255.255.255:68"),
        "{trace}"
    );
}

#[test]
fn without_the_broadcast_flag_the_reply_is_unicast_to_yiaddr_at_the_client_mac() {
    let mut n = network(vec![Ipv4Addr::new(10, 0, 0, 2)], false);
    n.sim.run_until(secs(1));
    let replies = n.client.log.all();
    assert_eq!(replies.len(), 1, "{}", n.sim.trace_text());
    assert_eq!(replies[0].dst.to_string(), "10.0.1.50:68");
}

#[test]
fn each_helper_gets_a_copy() {
    let mut n = network(
        vec![Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)],
        true,
    );
    n.sim.run_until(secs(1));
    assert_eq!(n.dhcp.log.len(), 1);
    let wds = n.wds.log.all();
    assert_eq!(wds.len(), 1);
    let relayed = Message::decode(&mut Decoder::new(&wds[0].payload)).expect("valid DHCP");
    assert_eq!(relayed.giaddr(), Ipv4Addr::new(10, 0, 1, 1));
}

#[test]
fn an_interface_without_helpers_relays_nothing() {
    let mut n = network(Vec::new(), true);
    n.sim.run_until(secs(1));
    assert_eq!(n.dhcp.log.len(), 0);
    assert_eq!(n.wds.log.len(), 0);
    assert_eq!(n.client.log.len(), 0);
}

#[test]
fn a_relay_refuses_what_is_not_a_dhcp_request() {
    let mut sim = Simulation::new(11);
    sim.enable_trace();
    let clients = sim.add_segment("clients", SegmentConfig::default().ipv4(net("10.0.1.0/24")));
    let servers = sim.add_segment("servers", SegmentConfig::default().ipv4(net("10.0.0.0/24")));
    let router = sim.add_router("router");
    let relay = sim
        .add_router_interface(router, clients, net("10.0.1.1/24"))
        .expect("iface");
    sim.add_router_interface(router, servers, net("10.0.0.1/24"))
        .expect("iface");
    sim.set_relay(relay, vec![Ipv4Addr::new(10, 0, 0, 2)])
        .expect("iface");
    let client = sim.add_host("client");
    sim.add_adapter(client, "eth0", clients, AdapterConfig::dhcp())
        .expect("adapter");
    let mut reply_not_request = discover(true);
    reply_not_request[0] = 2;
    let junk = Probe::default()
        .sending(
            millis(1),
            "0.0.0.0:68",
            "255.255.255.255:67",
            b"not DHCP at all",
        )
        .sending(
            millis(2),
            "0.0.0.0:68",
            "255.255.255.255:67",
            &reply_not_request,
        );
    sim.add_service(client, "junk", junk.install())
        .expect("service");
    let server = sim.add_host("dhcp");
    sim.add_adapter(
        server,
        "eth0",
        servers,
        AdapterConfig::static_ipv4(net("10.0.0.2/24")),
    )
    .expect("adapter");
    let dhcp = Probe::listening(&[67]);
    sim.add_service(server, "dhcp", dhcp.install())
        .expect("service");
    sim.run_until(secs(1));

    assert_eq!(dhcp.log.len(), 0);
    let trace = sim.trace_text();
    assert_eq!(trace.matches("relay refused").count(), 2, "{trace}");
}
