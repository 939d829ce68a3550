//! Host crash and restart, service stop and start: state is lost, stale timers never fire,
//! leased addresses go and static ones stay.

use netsim::{AdapterConfig, SegmentConfig, Simulation};

use crate::{Probe, millis, net, secs};

#[test]
fn a_crashed_host_drops_traffic_and_restarts_fresh() {
    let mut sim = Simulation::new(20);
    sim.enable_trace();
    let lan = sim.add_segment("lan", SegmentConfig::default().ipv4(net("10.0.0.0/24")));
    let server = sim.add_host("server");
    let eth0 = sim
        .add_adapter(
            server,
            "eth0",
            lan,
            AdapterConfig::static_ipv4(net("10.0.0.2/24")),
        )
        .expect("adapter");
    let eth1 = sim
        .add_adapter(server, "eth1", lan, AdapterConfig::dhcp())
        .expect("adapter");
    // The server's own script: a send at 1.5 s, which the crash at 1 s must cancel for the
    // first instance; the restarted instance schedules it again at 1.5 s, already past.
    let listener = Probe {
        assign: Some((1, net("10.0.0.77/24"))),
        ..Probe::listening(&[7])
    }
    .sending(millis(1_500), "10.0.0.2:7", "255.255.255.255:9", b"timer");
    sim.add_service(server, "listener", listener.install())
        .expect("service");
    let client = sim.add_host("client");
    sim.add_adapter(
        client,
        "eth0",
        lan,
        AdapterConfig::static_ipv4(net("10.0.0.1/24")),
    )
    .expect("adapter");
    let mut sender = Probe::listening(&[9]);
    for t in [500, 1_200, 2_500] {
        sender = sender.sending(
            millis(t),
            "10.0.0.1:5000",
            "10.0.0.2:7",
            format!("{t}").as_bytes(),
        );
    }
    sim.add_service(client, "sender", sender.install())
        .expect("service");
    sim.crash_at(secs(1), server).expect("host");
    sim.restart_at(secs(2), server).expect("host");

    sim.run_until(millis(1_100));
    assert!(!sim.host_is_up(server));
    assert_eq!(
        sim.adapter(eth0).and_then(|i| i.ipv4),
        Some(net("10.0.0.2/24")),
        "static stays"
    );
    assert_eq!(
        sim.adapter(eth1).and_then(|i| i.ipv4),
        None,
        "the lease is gone"
    );
    sim.run_until(secs(3));

    assert_eq!(listener.starts.get(), 2);
    assert_eq!(
        listener.log.payloads(),
        vec![b"500".to_vec(), b"2500".to_vec()]
    );
    // The first instance's 1.5 s timer went stale with the crash; the second instance set it
    // again for 1.5 s, in its past, so it fired at once on restart (2 s).
    let heard: Vec<_> = sender.log.all().iter().map(|g| g.at).collect();
    assert_eq!(heard, vec![secs(2) + std::time::Duration::from_micros(50)]);
    let trace = sim.trace_text();
    assert!(trace.contains("server crashed"));
    assert!(
        trace.contains("server/eth0 dropped 10.0.0.1:5000 -> 10.0.0.2:7, 4 bytes: host down"),
        "{trace}"
    );
    assert!(trace.contains("server/eth1 address cleared"));
}

#[test]
fn a_stopped_service_loses_its_port_until_started_again() {
    let mut sim = Simulation::new(21);
    sim.enable_trace();
    let lan = sim.add_segment("lan", SegmentConfig::default().ipv4(net("10.0.0.0/24")));
    let server = sim.add_host("server");
    sim.add_adapter(
        server,
        "eth0",
        lan,
        AdapterConfig::static_ipv4(net("10.0.0.2/24")),
    )
    .expect("adapter");
    let wds = Probe::listening(&[4011]);
    sim.add_service(server, "wds", wds.install())
        .expect("service");
    let client = sim.add_host("client");
    sim.add_adapter(
        client,
        "eth0",
        lan,
        AdapterConfig::static_ipv4(net("10.0.0.1/24")),
    )
    .expect("adapter");
    let mut sender = Probe::default();
    for t in [500, 1_500, 2_500] {
        sender = sender.sending(
            millis(t),
            "10.0.0.1:5000",
            "10.0.0.2:4011",
            format!("{t}").as_bytes(),
        );
    }
    sim.add_service(client, "sender", sender.install())
        .expect("service");
    sim.stop_service_at(secs(1), server, "wds")
        .expect("service");
    sim.start_service_at(secs(2), server, "wds")
        .expect("service");
    assert!(sim.stop_service_at(secs(1), server, "nope").is_err());

    sim.run_until(millis(1_600));
    assert!(!sim.service_is_running(server, "wds"));
    sim.run_until(secs(3));
    assert!(sim.service_is_running(server, "wds"));
    assert_eq!(wds.starts.get(), 2);
    assert_eq!(wds.log.payloads(), vec![b"500".to_vec(), b"2500".to_vec()]);
    let trace = sim.trace_text();
    assert!(trace.contains("server service wds stopped"));
    assert!(
        trace.contains("server/eth0 dropped 10.0.0.1:5000 -> 10.0.0.2:4011, 4 bytes: no listener")
    );
}
