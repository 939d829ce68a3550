//! Faults change delivery exactly as configured: link down, partitions one-way and two-way,
//! loss, duplication, corruption, latency and jitter, time windows.

use std::time::Duration;

use netsim::{AdapterConfig, FaultRule, HostId, Probability, SegmentConfig, Simulation};

use crate::{Probe, millis, net, secs};

/// Two hosts on one segment: `a` (10.0.0.1) sends `count` datagrams to `b` (10.0.0.2:7),
/// one every 10 ms from 10 ms on, payload = the sequence number; `b` echoes when `echo`.
fn pair(seed: u64, count: u64, echo: bool) -> (Simulation, HostId, HostId, Probe, Probe) {
    let mut sim = Simulation::new(seed);
    sim.enable_trace();
    let lan = sim.add_segment("lan", SegmentConfig::default().ipv4(net("10.0.0.0/24")));
    let a = sim.add_host("a");
    sim.add_adapter(
        a,
        "eth0",
        lan,
        AdapterConfig::static_ipv4(net("10.0.0.1/24")),
    )
    .expect("adapter");
    let b = sim.add_host("b");
    sim.add_adapter(
        b,
        "eth0",
        lan,
        AdapterConfig::static_ipv4(net("10.0.0.2/24")),
    )
    .expect("adapter");
    let mut sender = Probe::listening(&[5000]);
    for i in 0..count {
        sender = sender.sending(
            millis(10 * (i + 1)),
            "10.0.0.1:5000",
            "10.0.0.2:7",
            &i.to_be_bytes(),
        );
    }
    sim.add_service(a, "sender", sender.install())
        .expect("service");
    let receiver = if echo {
        Probe::echoing(&[7])
    } else {
        Probe::listening(&[7])
    };
    sim.add_service(b, "receiver", receiver.install())
        .expect("service");
    (sim, a, b, sender, receiver)
}

fn seq(payload: &[u8]) -> u64 {
    let tail = &payload[payload.len() - 8..];
    u64::from_be_bytes(tail.try_into().expect("8 bytes"))
}

#[test]
fn link_down_drops_in_both_directions_until_link_up() {
    let (mut sim, a, b, sender, receiver) = pair(1, 30, true);
    let b_eth0 = netsim::AdapterId { host: b, index: 0 };
    sim.link_down_at(millis(95), b_eth0).expect("adapter");
    sim.link_up_at(millis(195), b_eth0).expect("adapter");
    let a_eth0 = netsim::AdapterId { host: a, index: 0 };
    sim.link_down_at(millis(245), a_eth0).expect("adapter");
    sim.run_until(secs(1));

    let got: Vec<u64> = receiver.log.payloads().iter().map(|p| seq(p)).collect();
    let expected: Vec<u64> = (0..30)
        .filter(|i| !(9..19).contains(i) && *i < 24)
        .collect();
    assert_eq!(got, expected);
    assert_eq!(
        sender.log.len(),
        expected.len(),
        "every reply arrived before a's link went down"
    );
    let trace = sim.trace_text();
    assert!(trace.contains("b/eth0 link down"), "{trace}");
    assert!(trace.contains("b/eth0 dropped 10.0.0.1:5000 -> 10.0.0.2:7, 8 bytes: link down"));
    assert!(trace.contains("a/eth0 dropped 10.0.0.1:5000 -> 10.0.0.2:7, 8 bytes: link down"));
}

#[test]
fn one_way_partition_blocks_one_direction_only() {
    let (mut sim, a, b, sender, receiver) = pair(2, 10, true);
    // b's replies cannot reach a; a's requests still reach b.
    sim.add_fault(FaultRule::partition_one_way(b, a));
    sim.run_until(secs(1));
    assert_eq!(receiver.log.len(), 10);
    assert_eq!(sender.log.len(), 0);
    assert!(sim.trace_text().contains(
        "a/eth0 dropped 10.0.0.2:7 -> 10.0.0.1:5000, 13 bytes: blocked (fault 0: partition)"
    ));
}

#[test]
fn two_way_partition_during_a_window() {
    let (mut sim, a, b, sender, receiver) = pair(3, 20, true);
    for rule in FaultRule::partition(a, b) {
        sim.add_fault(rule.during(millis(55), millis(105)));
    }
    sim.run_until(secs(1));
    let got: Vec<u64> = receiver.log.payloads().iter().map(|p| seq(p)).collect();
    let expected: Vec<u64> = (0..20).filter(|i| !(5..10).contains(i)).collect();
    assert_eq!(got, expected);
    assert_eq!(
        sender.log.len(),
        expected.len(),
        "every request that got through was answered"
    );
}

#[test]
fn loss_drops_about_the_configured_share() {
    let (mut sim, _, _, _, receiver) = pair(4, 1000, false);
    sim.add_fault(FaultRule::loss(Probability::percent(30)));
    sim.run_until(secs(20));
    let got = receiver.log.len();
    assert!(
        (620..780).contains(&got),
        "received {got} of 1000 at 30% loss"
    );
    assert!(sim.trace_text().contains("lost (fault 0: loss 30%)"));
    assert_eq!(sim.stats().dropped, 1000 - got as u64);
}

#[test]
fn duplication_delivers_twice() {
    let (mut sim, _, _, _, receiver) = pair(5, 10, false);
    sim.add_fault(FaultRule::duplicate(Probability::ALWAYS));
    sim.run_until(secs(1));
    let got: Vec<u64> = receiver.log.payloads().iter().map(|p| seq(p)).collect();
    let expected: Vec<u64> = (0..10).flat_map(|i| [i, i]).collect();
    assert_eq!(got, expected);
}

#[test]
fn corruption_changes_exactly_one_byte() {
    let (mut sim, _, _, _, receiver) = pair(6, 50, false);
    sim.add_fault(FaultRule::corrupt(Probability::ALWAYS));
    sim.run_until(secs(1));
    let got = receiver.log.payloads();
    assert_eq!(got.len(), 50);
    for (i, payload) in got.iter().enumerate() {
        let original = (i as u64).to_be_bytes();
        let differing = payload
            .iter()
            .zip(original)
            .filter(|(x, y)| **x != *y)
            .count();
        assert_eq!(differing, 1, "datagram {i}: {payload:?}");
    }
}

#[test]
fn latency_and_jitter_delay_within_bounds_and_can_reorder() {
    let (mut sim, _, _, _, receiver) = pair(7, 200, false);
    sim.add_fault(FaultRule::latency(
        Duration::from_millis(10),
        Duration::from_millis(30),
    ));
    sim.run_until(secs(5));
    let got = receiver.log.all();
    assert_eq!(got.len(), 200);
    let segment = Duration::from_micros(50);
    for g in &got {
        let sent = millis(10 * (seq(&g.payload) + 1));
        let delay = g.at - sent;
        assert!(delay >= Duration::from_millis(10) + segment, "{delay:?}");
        assert!(delay <= Duration::from_millis(40) + segment, "{delay:?}");
    }
    let order: Vec<u64> = got.iter().map(|g| seq(&g.payload)).collect();
    assert!(
        order.windows(2).any(|w| w[0] > w[1]),
        "30 ms of jitter at 10 ms spacing reorders"
    );
}

#[test]
fn a_rule_scoped_to_another_segment_changes_nothing() {
    let (mut sim, _, _, _, receiver) = pair(8, 100, false);
    let elsewhere = sim.add_segment("elsewhere", SegmentConfig::default());
    sim.add_fault(FaultRule::loss(Probability::ALWAYS).on_segment(elsewhere));
    sim.run_until(secs(2));
    assert_eq!(receiver.log.len(), 100);
}
