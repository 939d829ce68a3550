//! The DHCP cores inside the deterministic simulator: thin adapters from `dhcp::Server` and
//! `dhcp::Client` to `netsim::Service`, then DORA on one segment and across a relay, loss,
//! partition and link failures, determinism (the same seed gives the same trace) and a pcap
//! of DORA that tshark dissects as Discover, Offer, Request, ACK.

use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::time::Duration;

use dhcp::service::DhcpServerService;
use dhcp::{
    AdapterFacts, Client, ClientConfig, ClientEvent, Failure, Lease, Pool, Received, Server,
    ServerConfig, Transmit,
};
use netsim::{
    AdapterConfig, Bytes, Datagram, FaultRule, HostId, HostStack, Probability, SegmentConfig,
    SegmentId, Service, SimTime, Simulation,
};

fn net(s: &str) -> netsim::Ipv4Net {
    s.parse().expect("literal network")
}

fn send_all(stack: &mut dyn HostStack, transmits: impl Iterator<Item = Transmit>) {
    for t in transmits {
        // A refused send (adapter gone) is lost like any datagram; the core's timers cope.
        let _ = stack.send(t.interface, t.src, t.dst, Bytes::from(t.payload));
    }
}

fn received(d: &Datagram) -> Received<'_> {
    Received {
        interface: d.adapter,
        src: d.src,
        dst: d.dst,
        payload: &d.payload,
    }
}

/// `dhcp::Client` on the host's first adapter, as firmware runs it at boot. Its events are
/// shared with the test; a lease is applied to the adapter.
struct DhcpClientService {
    config: ClientConfig,
    client: Option<Client>,
    events: Rc<RefCell<Vec<(SimTime, ClientEvent)>>>,
}

impl DhcpClientService {
    fn flush(&mut self, stack: &mut dyn HostStack) {
        let Some(client) = self.client.as_mut() else {
            return;
        };
        send_all(stack, std::iter::from_fn(|| client.poll_transmit()));
        while let Some(event) = client.poll_event() {
            if let ClientEvent::Bound(lease) = &event {
                let _ = stack.set_ipv4(0, Some(lease.network()));
            }
            self.events.borrow_mut().push((stack.now(), event));
        }
        if let Some(at) = client.poll_timeout() {
            stack.set_timer(SimTime::from_nanos(nanos(at)), 0);
        }
    }
}

impl Service for DhcpClientService {
    fn on_start(&mut self, stack: &mut dyn HostStack) {
        let adapter = stack.adapters()[0].clone();
        let facts = AdapterFacts {
            mac: adapter.mac.octets(),
            link_up: adapter.link_up,
            dhcp_enabled: adapter.dhcp_enabled,
            uefi_driver: adapter.uefi_driver,
        };
        stack.bind(dhcp::CLIENT_PORT).expect("port 68 free");
        let mut client = Client::new(self.config.clone(), facts, 0);
        let now = stack.now().since_start();
        client.start(now, stack.rng());
        self.client = Some(client);
        self.flush(stack);
    }
    fn on_datagram(&mut self, stack: &mut dyn HostStack, d: Datagram) {
        let now = stack.now().since_start();
        if let Some(client) = self.client.as_mut() {
            client.handle(now, received(&d), stack.rng());
        }
        self.flush(stack);
    }
    fn on_timer(&mut self, stack: &mut dyn HostStack, _: u64) {
        let now = stack.now().since_start();
        if let Some(client) = self.client.as_mut() {
            client.handle_timeout(now, stack.rng());
        }
        self.flush(stack);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

type Events = Rc<RefCell<Vec<(SimTime, ClientEvent)>>>;

struct Lab {
    sim: Simulation,
    server: Rc<RefCell<Server>>,
    clients: Vec<(HostId, Events)>,
    lan: SegmentId,
    server_host: HostId,
}

impl Lab {
    fn lease(&self, i: usize) -> Option<Lease> {
        self.clients[i]
            .1
            .borrow()
            .iter()
            .find_map(|(_, e)| match e {
                ClientEvent::Bound(lease) => Some((**lease).clone()),
                _ => None,
            })
    }

    fn failure(&self, i: usize) -> Option<Failure> {
        self.clients[i]
            .1
            .borrow()
            .iter()
            .find_map(|(_, e)| match e {
                ClientEvent::Failed(f) => Some(f.clone()),
                _ => None,
            })
    }
}

fn pools() -> Vec<Pool> {
    vec![
        Pool::new(
            net("10.0.0.0/24"),
            Ipv4Addr::new(10, 0, 0, 100),
            Ipv4Addr::new(10, 0, 0, 199),
        )
        .router(Ipv4Addr::new(10, 0, 0, 1))
        .dns(vec![Ipv4Addr::new(10, 0, 0, 2)]),
        Pool::new(
            net("10.0.1.0/24"),
            Ipv4Addr::new(10, 0, 1, 100),
            Ipv4Addr::new(10, 0, 1, 199),
        )
        .router(Ipv4Addr::new(10, 0, 1, 1)),
    ]
}

/// The DHCP server at 10.0.0.2 on "servers"; `clients` DHCP clients either on the same
/// segment or (relayed) on "clients" behind a router whose relay forwards to 10.0.0.2.
fn lab(seed: u64, clients: usize, relayed: bool, adapter: AdapterConfig) -> Lab {
    lab_with(seed, clients, relayed, adapter, DhcpServerService::new)
}

/// [`lab`] with the server's service made by `service` (`DhcpServerService::new` or
/// `discarding_events`).
fn lab_with(
    seed: u64,
    clients: usize,
    relayed: bool,
    adapter: AdapterConfig,
    service: fn(Rc<RefCell<Server>>) -> DhcpServerService,
) -> Lab {
    let mut sim = Simulation::new(seed);
    sim.enable_trace();
    // The trace names DHCP messages with the one wire reader.
    sim.set_summariser(dhcp_wire::summarise);
    let servers = sim.add_segment("servers", SegmentConfig::default().ipv4(net("10.0.0.0/24")));
    let client_segment = if relayed {
        let lan = sim.add_segment("clients", SegmentConfig::default().ipv4(net("10.0.1.0/24")));
        let router = sim.add_router("router");
        let relay = sim
            .add_router_interface(router, lan, net("10.0.1.1/24"))
            .expect("interface");
        sim.add_router_interface(router, servers, net("10.0.0.1/24"))
            .expect("interface");
        sim.set_relay(relay, vec![Ipv4Addr::new(10, 0, 0, 2)])
            .expect("relay");
        lan
    } else {
        servers
    };
    sim.capture(client_segment).expect("segment exists");

    let server_host = sim.add_host("dhcp-server");
    sim.add_adapter(
        server_host,
        "eth0",
        servers,
        AdapterConfig::static_ipv4(net("10.0.0.2/24")),
    )
    .expect("adapter");
    let server = Rc::new(RefCell::new(Server::new(ServerConfig::new(
        vec![net("10.0.0.2/24")],
        pools(),
    ))));
    let shared = server.clone();
    sim.add_service(server_host, "dhcpd", move || {
        Box::new(service(shared.clone()))
    })
    .expect("service");

    let mut hosts = Vec::new();
    for i in 0..clients {
        let host = sim.add_host(&format!("pc-{i}"));
        sim.add_adapter(host, "eth0", client_segment, adapter.clone())
            .expect("adapter");
        let events: Events = Rc::default();
        let shared = events.clone();
        sim.add_service(host, "uefi-dhcp", move || {
            Box::new(DhcpClientService {
                config: ClientConfig::default(),
                client: None,
                events: shared.clone(),
            })
        })
        .expect("service");
        hosts.push((host, events));
    }
    Lab {
        sim,
        server,
        clients: hosts,
        lan: client_segment,
        server_host,
    }
}

#[test]
fn dora_on_one_segment_applies_the_lease_to_the_adapter() {
    let mut lab = lab(1, 2, false, AdapterConfig::dhcp());
    lab.sim.run_until(SimTime::from_secs(5));
    let a = lab.lease(0).expect("pc-0 bound");
    let b = lab.lease(1).expect("pc-1 bound");
    assert_ne!(a.address, b.address);
    assert_eq!(a.router, Some(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(a.server_id, Ipv4Addr::new(10, 0, 0, 2));
    let adapter = lab
        .sim
        .adapter(netsim::AdapterId {
            host: lab.clients[0].0,
            index: 0,
        })
        .expect("adapter");
    assert_eq!(adapter.ipv4, Some(a.network()));
    assert_eq!(lab.server.borrow().leases().len(), 2);
    let trace = lab.sim.trace_text();
    for kind in ["DISCOVER", "OFFER", "REQUEST", "ACK"] {
        assert!(trace.contains(kind), "{kind} in the trace:\n{trace}");
    }
}

/// The scenario runner reads no server events: with `discarding_events` none are left queued
/// after the DORAs (a storm's 100,000 piled up before), and the leases are the same.
#[test]
fn a_service_discarding_events_leaves_none_queued_and_leases_alike() {
    let mut kept = lab(1, 2, false, AdapterConfig::dhcp());
    let mut discarded = lab_with(
        1,
        2,
        false,
        AdapterConfig::dhcp(),
        DhcpServerService::discarding_events,
    );
    for lab in [&mut kept, &mut discarded] {
        lab.sim.run_until(SimTime::from_secs(5));
    }
    assert!(
        kept.server.borrow_mut().poll_event().is_some(),
        "new: the events wait for their reader"
    );
    assert_eq!(discarded.server.borrow_mut().poll_event(), None);
    assert_eq!(kept.lease(0), discarded.lease(0));
    assert_eq!(kept.lease(1), discarded.lease(1));
    assert_eq!(
        kept.server.borrow().counters(),
        discarded.server.borrow().counters()
    );
}

#[test]
fn dora_across_a_relay_leases_from_the_relays_subnet() {
    let mut lab = lab(2, 1, true, AdapterConfig::dhcp());
    lab.sim.run_until(SimTime::from_secs(5));
    let lease = lab.lease(0).expect("bound through the relay");
    assert_eq!(lease.address, Ipv4Addr::new(10, 0, 1, 100));
    assert_eq!(lease.router, Some(Ipv4Addr::new(10, 0, 1, 1)));
    assert_eq!(lease.network().to_string(), "10.0.1.100/24");
    // The server answered giaddr, never the client's segment directly.
    let trace = lab.sim.trace_text();
    assert!(
        trace.contains("10.0.0.2:67 -> 10.0.1.1:67"),
        "reply through giaddr:\n{trace}"
    );
}

#[test]
fn loss_is_survived_by_retransmission() {
    let mut lab = lab(3, 1, false, AdapterConfig::dhcp());
    // Everything on the segment is lost for the first 10 s: DISCOVERs at 0 and ~4 s vanish.
    lab.sim.add_fault(
        FaultRule::loss(Probability::percent(100))
            .on_segment(lab.lan)
            .during(SimTime::ZERO, SimTime::from_secs(10)),
    );
    lab.sim.run_until(SimTime::from_secs(60));
    let lease = lab.lease(0).expect("bound after the loss window");
    assert!(lease.acquired_at >= Duration::from_secs(10));
    assert!(lease.acquired_at <= Duration::from_secs(13));
    let sent = lab.clients[0]
        .1
        .borrow()
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                ClientEvent::Sent {
                    kind: "DISCOVER",
                    ..
                }
            )
        })
        .count();
    assert_eq!(sent, 3);
}

#[test]
fn a_partition_that_never_heals_ends_in_no_offer() {
    let mut lab = lab(4, 1, false, AdapterConfig::dhcp());
    for rule in FaultRule::partition(lab.clients[0].0, lab.server_host) {
        lab.sim.add_fault(rule);
    }
    lab.sim.run_until(SimTime::from_secs(120));
    assert_eq!(lab.failure(0), Some(Failure::NoOffer { attempts: 4 }));
    assert!(lab.lease(0).is_none());
    assert!(lab.server.borrow().leases().is_empty());
}

#[test]
fn an_unplugged_cable_or_a_static_adapter_is_a_clear_reason() {
    let mut unplugged = lab(5, 1, false, AdapterConfig::dhcp().link_up(false));
    unplugged.sim.run_until(SimTime::from_secs(5));
    assert_eq!(unplugged.failure(0), Some(Failure::NoLink));

    let mut lom = lab(5, 1, false, AdapterConfig::static_ipv4(net("10.0.0.50/24")));
    lom.sim.run_until(SimTime::from_secs(5));
    assert_eq!(lom.failure(0), Some(Failure::NotConfiguredForDhcp));

    let mut no_driver = lab(5, 1, false, AdapterConfig::dhcp().uefi_driver(false));
    no_driver.sim.run_until(SimTime::from_secs(5));
    assert_eq!(no_driver.failure(0), Some(Failure::NoUefiDriver));
}

#[test]
fn link_down_during_dora_delays_the_lease_until_the_link_is_back() {
    let mut lab = lab(6, 1, false, AdapterConfig::dhcp());
    // 5 ms per hop, so the cable can be pulled while the first OFFER is on its way.
    lab.sim
        .add_fault(FaultRule::latency(Duration::from_millis(5), Duration::ZERO));
    let adapter = netsim::AdapterId {
        host: lab.clients[0].0,
        index: 0,
    };
    lab.sim
        .link_down_at(SimTime::from_millis(1), adapter)
        .expect("adapter");
    lab.sim
        .link_up_at(SimTime::from_secs(6), adapter)
        .expect("adapter");
    lab.sim.run_until(SimTime::from_secs(60));
    let lease = lab.lease(0).expect("bound once the link is back");
    // The DISCOVER at ~4 s went nowhere; the one at ~12 s succeeded.
    assert!(lease.acquired_at >= Duration::from_secs(10), "{lease:?}");
    assert!(lease.acquired_at <= Duration::from_secs(14), "{lease:?}");
    let trace = lab.sim.trace_text();
    assert!(trace.contains("link down") && trace.contains("link up"));
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let run = |seed| {
        let mut lab = lab(seed, 5, true, AdapterConfig::dhcp());
        lab.sim.add_fault(
            FaultRule::loss(Probability::percent(30)).during(SimTime::ZERO, SimTime::from_secs(20)),
        );
        lab.sim.run_until(SimTime::from_secs(120));
        (
            lab.sim.trace_text(),
            lab.sim.pcap(lab.lan).expect("captured"),
        )
    };
    let (trace, pcap) = run(77);
    assert!(trace.lines().count() > 20);
    assert_eq!((trace.clone(), pcap), run(77));
    assert_ne!(trace, run(78).0, "another seed, another run");
}

#[test]
fn tshark_dissects_the_dora_capture() {
    if !testkit::require_tool("tshark") {
        return;
    }
    let mut lab = lab(9, 1, false, AdapterConfig::dhcp());
    lab.sim.run_until(SimTime::from_secs(5));
    assert!(lab.lease(0).is_some());
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("dora.pcap");
    lab.sim.write_pcap(lab.lan, &file).expect("pcap written");
    let out = std::process::Command::new("tshark")
        .arg("-r")
        .arg(&file)
        .args(["-T", "fields", "-e", "dhcp.option.dhcp"])
        .output()
        .expect("tshark runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let types: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    // 1 Discover, 2 Offer, 3 Request, 5 ACK.
    assert_eq!(types, ["1", "2", "3", "5"]);
}
