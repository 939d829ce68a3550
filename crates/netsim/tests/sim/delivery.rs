//! Broadcast, unicast, routing, several adapters per host, IPv6 link-local multicast and
//! directed broadcast.

use netsim::{AdapterConfig, SegmentConfig, Simulation};

use crate::{Probe, millis, net, secs};

#[test]
fn broadcast_reaches_every_bound_host_on_its_segment_and_nothing_else() {
    let mut sim = Simulation::new(1);
    sim.enable_trace();
    let a = sim.add_segment("a", SegmentConfig::default().ipv4(net("10.0.1.0/24")));
    let b = sim.add_segment("b", SegmentConfig::default().ipv4(net("10.0.2.0/24")));
    let router = sim.add_router("router");
    sim.add_router_interface(router, a, net("10.0.1.1/24"))
        .expect("iface");
    sim.add_router_interface(router, b, net("10.0.2.1/24"))
        .expect("iface");

    let sender = sim.add_host("sender");
    sim.add_adapter(
        sender,
        "eth0",
        a,
        AdapterConfig::static_ipv4(net("10.0.1.10/24")),
    )
    .expect("adapter");
    let probe = Probe::listening(&[9000]).sending(
        millis(10),
        "10.0.1.10:9000",
        "255.255.255.255:9000",
        b"hi",
    );
    sim.add_service(sender, "probe", probe.install())
        .expect("service");

    let mut logs = Vec::new();
    for (name, segment, port) in [
        ("l1", a, 9000),
        ("l2", a, 9000),
        ("other-port", a, 9001),
        ("far", b, 9000),
    ] {
        let host = sim.add_host(name);
        sim.add_adapter(host, "eth0", segment, AdapterConfig::dhcp())
            .expect("adapter");
        let p = Probe::listening(&[port]);
        sim.add_service(host, "probe", p.install())
            .expect("service");
        logs.push(p.log);
    }
    sim.run_until(secs(1));

    assert_eq!(probe.log.len(), 0, "the sender does not hear itself");
    for (i, got) in logs.iter().enumerate() {
        let expected = if i < 2 { 1 } else { 0 };
        assert_eq!(got.len(), expected, "listener {i}");
    }
    let got = &logs[0].all()[0];
    assert_eq!(got.dst.to_string(), "255.255.255.255:9000");
    assert_eq!(got.src.to_string(), "10.0.1.10:9000");
    assert_eq!(got.adapter, 0);
    assert_eq!(
        got.at,
        millis(10) + std::time::Duration::from_micros(50),
        "segment latency"
    );
    assert_eq!(sim.stats().delivered, 2);
}

#[test]
fn unicast_crosses_a_router_and_comes_back() {
    let mut sim = Simulation::new(2);
    sim.enable_trace();
    let a = sim.add_segment("a", SegmentConfig::default().ipv4(net("10.0.1.0/24")));
    let b = sim.add_segment("b", SegmentConfig::default().ipv4(net("10.0.2.0/24")));
    sim.capture(b).expect("segment");
    let router = sim.add_router("router");
    sim.add_router_interface(router, a, net("10.0.1.1/24"))
        .expect("iface");
    sim.add_router_interface(router, b, net("10.0.2.1/24"))
        .expect("iface");

    let client = sim.add_host("client");
    sim.add_adapter(
        client,
        "eth0",
        a,
        AdapterConfig::static_ipv4(net("10.0.1.10/24")),
    )
    .expect("adapter");
    let ping =
        Probe::listening(&[5000]).sending(millis(1), "10.0.1.10:5000", "10.0.2.20:7", b"ping");
    sim.add_service(client, "ping", ping.install())
        .expect("service");
    let server = sim.add_host("server");
    sim.add_adapter(
        server,
        "eth0",
        b,
        AdapterConfig::static_ipv4(net("10.0.2.20/24")),
    )
    .expect("adapter");
    let echo = Probe::echoing(&[7]);
    sim.add_service(server, "echo", echo.install())
        .expect("service");
    sim.run_until(secs(1));

    assert_eq!(echo.log.payloads(), vec![b"ping".to_vec()]);
    assert_eq!(echo.log.all()[0].src.to_string(), "10.0.1.10:5000");
    assert_eq!(ping.log.payloads(), vec![b"pong:ping".to_vec()]);
    assert_eq!(ping.log.all()[0].src.to_string(), "10.0.2.20:7");
    let trace = sim.trace_text();
    assert!(
        trace.contains("router/b forwarded 10.0.1.10:5000 -> 10.0.2.20:7, 4 bytes"),
        "{trace}"
    );
    // On segment b, the forwarded ping has lost one TTL; the server's pong has not yet.
    let frames = sim.captured(b).expect("captured");
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].ttl, 63);
    assert_eq!(frames[1].ttl, 64);
}

#[test]
fn a_host_hears_each_segment_on_its_own_adapter() {
    let mut sim = Simulation::new(3);
    let a = sim.add_segment("a", SegmentConfig::default().ipv4(net("10.0.1.0/24")));
    let b = sim.add_segment("b", SegmentConfig::default().ipv4(net("10.0.2.0/24")));
    let server = sim.add_host("server");
    let eth0 = sim
        .add_adapter(
            server,
            "eth0",
            a,
            AdapterConfig::static_ipv4(net("10.0.1.5/24")),
        )
        .expect("adapter");
    let eth1 = sim
        .add_adapter(
            server,
            "eth1",
            b,
            AdapterConfig::static_ipv4(net("10.0.2.5/24")),
        )
        .expect("adapter");
    assert_ne!(
        sim.adapter(eth0).map(|i| i.mac),
        sim.adapter(eth1).map(|i| i.mac)
    );
    let listener = Probe::echoing(&[67]);
    sim.add_service(server, "listener", listener.install())
        .expect("service");
    let mut clients = Vec::new();
    for (name, segment) in [("on-a", a), ("on-b", b)] {
        let host = sim.add_host(name);
        sim.add_adapter(host, "eth0", segment, AdapterConfig::dhcp())
            .expect("adapter");
        let p = Probe::listening(&[68]).sending(
            millis(5),
            "0.0.0.0:68",
            "255.255.255.255:67",
            name.as_bytes(),
        );
        sim.add_service(host, "client", p.install())
            .expect("service");
        clients.push(p);
    }
    sim.run_until(secs(1));

    let got = listener.log.all();
    assert_eq!(got.len(), 2);
    let by_payload = |p: &[u8]| got.iter().find(|g| g.payload == p).map(|g| g.adapter);
    assert_eq!(by_payload(b"on-a"), Some(0));
    assert_eq!(by_payload(b"on-b"), Some(1));
    // The echo went back out of the adapter it came in on, from that adapter's address.
    assert_eq!(clients[0].log.all()[0].src.to_string(), "10.0.1.5:67");
    assert_eq!(clients[1].log.all()[0].src.to_string(), "10.0.2.5:67");
}

#[test]
fn undeliverable_unicast_says_why() {
    let mut sim = Simulation::new(4);
    sim.enable_trace();
    let a = sim.add_segment("a", SegmentConfig::default().ipv4(net("10.0.1.0/24")));
    let sender = sim.add_host("sender");
    sim.add_adapter(
        sender,
        "eth0",
        a,
        AdapterConfig::static_ipv4(net("10.0.1.10/24")),
    )
    .expect("adapter");
    let probe = Probe::default()
        .sending(millis(1), "10.0.1.10:1000", "10.0.1.99:7", b"nobody")
        .sending(millis(2), "10.0.1.10:1000", "10.0.1.20:8", b"closed port")
        .sending(
            millis(3),
            "10.0.1.10:1000",
            "192.0.2.1:7",
            b"off-link, no router",
        );
    sim.add_service(sender, "probe", probe.install())
        .expect("service");
    let target = sim.add_host("target");
    sim.add_adapter(
        target,
        "eth0",
        a,
        AdapterConfig::static_ipv4(net("10.0.1.20/24")),
    )
    .expect("adapter");
    sim.run_until(secs(1));

    let trace = sim.trace_text();
    assert!(
        trace.contains("sender/eth0 dropped 10.0.1.10:1000 -> 10.0.1.99:7, 6 bytes: unreachable"),
        "{trace}"
    );
    assert!(
        trace.contains("target/eth0 dropped 10.0.1.10:1000 -> 10.0.1.20:8, 11 bytes: no listener"),
        "{trace}"
    );
    assert!(
        trace.contains("-> 192.0.2.1:7, 19 bytes: no route"),
        "{trace}"
    );
    assert_eq!(sim.stats().dropped, 3);
    assert_eq!(sim.stats().delivered, 0);
}

#[test]
fn ipv6_link_local_multicast_reaches_port_547_listeners() {
    let mut sim = Simulation::new(5);
    let a = sim.add_segment("a", SegmentConfig::default());
    let client = sim.add_host("client");
    let eth0 = sim
        .add_adapter(
            client,
            "eth0",
            a,
            AdapterConfig::dhcp().mac("00:11:22:33:44:55".parse().expect("mac")),
        )
        .expect("adapter");
    assert_eq!(
        sim.adapter(eth0).map(|i| i.ipv6_link_local.to_string()),
        Some("fe80::211:22ff:fe33:4455".to_owned())
    );
    let ask = Probe::listening(&[546]).sending(
        millis(1),
        "[fe80::211:22ff:fe33:4455]:546",
        "[ff02::1:2]:547",
        b"info-request",
    );
    sim.add_service(client, "client", ask.install())
        .expect("service");
    let mut servers = Vec::new();
    for (name, port) in [("wds", 547), ("dhcp6", 547), ("bystander", 9)] {
        let host = sim.add_host(name);
        sim.add_adapter(host, "eth0", a, AdapterConfig::dhcp())
            .expect("adapter");
        let p = Probe::echoing(&[port]);
        sim.add_service(host, "server", p.install())
            .expect("service");
        servers.push(p);
    }
    sim.run_until(secs(1));

    assert_eq!(servers[0].log.len(), 1);
    assert_eq!(servers[1].log.len(), 1);
    assert_eq!(servers[2].log.len(), 0);
    // The replies come back by link-local unicast.
    let replies = ask.log.all();
    assert_eq!(replies.len(), 2);
    assert!(
        replies
            .iter()
            .all(|g| g.dst.to_string() == "[fe80::211:22ff:fe33:4455]:546")
    );
    assert!(
        replies
            .iter()
            .all(|g| g.src.ip().to_string().starts_with("fe80::"))
    );
}

#[test]
fn directed_broadcast_reaches_only_adapters_in_that_subnet() {
    let mut sim = Simulation::new(6);
    let a = sim.add_segment("a", SegmentConfig::default().ipv4(net("10.0.1.0/24")));
    let sender = sim.add_host("sender");
    sim.add_adapter(
        sender,
        "eth0",
        a,
        AdapterConfig::static_ipv4(net("10.0.1.10/24")),
    )
    .expect("adapter");
    let probe = Probe::default().sending(millis(1), "10.0.1.10:1000", "10.0.1.255:9", b"directed");
    sim.add_service(sender, "probe", probe.install())
        .expect("service");
    let configured = sim.add_host("configured");
    sim.add_adapter(
        configured,
        "eth0",
        a,
        AdapterConfig::static_ipv4(net("10.0.1.11/24")),
    )
    .expect("adapter");
    let yes = Probe::listening(&[9]);
    sim.add_service(configured, "p", yes.install())
        .expect("service");
    let unconfigured = sim.add_host("unconfigured");
    sim.add_adapter(unconfigured, "eth0", a, AdapterConfig::dhcp())
        .expect("adapter");
    let no = Probe::listening(&[9]);
    sim.add_service(unconfigured, "p", no.install())
        .expect("service");
    sim.run_until(secs(1));

    assert_eq!(yes.log.len(), 1);
    assert_eq!(no.log.len(), 0);
}

#[test]
fn an_address_set_by_a_service_becomes_reachable() {
    let mut sim = Simulation::new(7);
    sim.enable_trace();
    let a = sim.add_segment("a", SegmentConfig::default().ipv4(net("10.0.1.0/24")));
    let leased = sim.add_host("leased");
    let eth0 = sim
        .add_adapter(leased, "eth0", a, AdapterConfig::dhcp())
        .expect("adapter");
    let target = Probe {
        assign: Some((0, net("10.0.1.50/24"))),
        ..Probe::listening(&[7])
    };
    sim.add_service(leased, "p", target.install())
        .expect("service");
    let sender = sim.add_host("sender");
    sim.add_adapter(
        sender,
        "eth0",
        a,
        AdapterConfig::static_ipv4(net("10.0.1.10/24")),
    )
    .expect("adapter");
    let probe =
        Probe::default().sending(millis(1), "10.0.1.10:1000", "10.0.1.50:7", b"to the lease");
    sim.add_service(sender, "probe", probe.install())
        .expect("service");
    sim.run_until(secs(1));

    assert_eq!(
        sim.adapter(eth0).and_then(|i| i.ipv4),
        Some(net("10.0.1.50/24"))
    );
    assert_eq!(target.log.payloads(), vec![b"to the lease".to_vec()]);
    assert!(
        sim.trace_text()
            .contains("leased/eth0 address set to 10.0.1.50/24")
    );
}

#[test]
fn static_routes_cross_two_routers_and_broadcasts_nobody_hears_are_reported() {
    // a (10.0.1.0/24) -- r1 -- transit (10.0.9.0/24) -- r2 -- c (10.0.3.0/24)
    let mut sim = Simulation::new(8);
    sim.enable_trace();
    let a = sim.add_segment("a", SegmentConfig::default().ipv4(net("10.0.1.0/24")));
    let transit = sim.add_segment("transit", SegmentConfig::default().ipv4(net("10.0.9.0/24")));
    let c = sim.add_segment("c", SegmentConfig::default().ipv4(net("10.0.3.0/24")));
    let r1 = sim.add_router("r1");
    sim.add_router_interface(r1, a, net("10.0.1.1/24"))
        .expect("iface");
    sim.add_router_interface(r1, transit, net("10.0.9.1/24"))
        .expect("iface");
    sim.add_route(r1, net("10.0.3.0/24"), "10.0.9.2".parse().expect("ip"))
        .expect("router");
    let r2 = sim.add_router("r2");
    sim.add_router_interface(r2, transit, net("10.0.9.2/24"))
        .expect("iface");
    sim.add_router_interface(r2, c, net("10.0.3.1/24"))
        .expect("iface");
    sim.add_route(r2, net("10.0.1.0/24"), "10.0.9.1".parse().expect("ip"))
        .expect("router");

    let near = sim.add_host("near");
    sim.add_adapter(
        near,
        "eth0",
        a,
        AdapterConfig::static_ipv4(net("10.0.1.10/24")),
    )
    .expect("adapter");
    let ping = Probe::listening(&[5000])
        .sending(millis(1), "10.0.1.10:5000", "10.0.3.30:7", b"far away")
        .sending(
            millis(2),
            "10.0.1.10:5000",
            "255.255.255.255:4444",
            b"anyone?",
        );
    sim.add_service(near, "ping", ping.install())
        .expect("service");
    let far = sim.add_host("far");
    sim.add_adapter(
        far,
        "eth0",
        c,
        AdapterConfig::static_ipv4(net("10.0.3.30/24")),
    )
    .expect("adapter");
    let echo = Probe::echoing(&[7]);
    sim.add_service(far, "echo", echo.install())
        .expect("service");
    sim.run_until(secs(1));

    assert_eq!(echo.log.payloads(), vec![b"far away".to_vec()]);
    assert_eq!(ping.log.payloads(), vec![b"pong:far away".to_vec()]);
    let trace = sim.trace_text();
    assert!(
        trace.contains("r1/transit forwarded 10.0.1.10:5000 -> 10.0.3.30:7"),
        "{trace}"
    );
    assert!(
        trace.contains("r2/c forwarded 10.0.1.10:5000 -> 10.0.3.30:7"),
        "{trace}"
    );
    // The router on segment a relays nothing, so it does not count as a listener.
    assert!(
        trace.contains(
            "near/eth0 dropped 10.0.1.10:5000 -> 255.255.255.255:4444, 7 bytes: no listener"
        ),
        "{trace}"
    );
}
