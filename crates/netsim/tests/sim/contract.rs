//! The simulator keeps each ordering guarantee of the host contract (`host_contract::stack`),
//! one test per guarantee, named after it. `realnet`'s `tests/contract.rs` checks the same
//! guarantees on real interfaces.

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use netsim::{
    AdapterConfig, AdapterId, Bytes, Datagram, FaultRule, HostStack, SegmentConfig, Service,
    SimTime, Simulation,
};

use crate::{Probe, millis, net, secs};

/// A service driven by closures, recording what it saw.
type OnTimer = Box<dyn FnMut(&mut dyn HostStack, u64)>;
type OnStart = Box<dyn FnMut(&mut dyn HostStack)>;
struct Scripted {
    start: OnStart,
    timer: OnTimer,
    got: Rc<RefCell<Vec<(SimTime, Datagram)>>>,
}

impl Service for Scripted {
    fn on_start(&mut self, stack: &mut dyn HostStack) {
        (self.start)(stack);
    }
    fn on_datagram(&mut self, stack: &mut dyn HostStack, datagram: Datagram) {
        self.got.borrow_mut().push((stack.now(), datagram));
    }
    fn on_timer(&mut self, stack: &mut dyn HostStack, token: u64) {
        (self.timer)(stack, token);
    }
}

/// `a` (DHCP adapter, no address) and `b` (10.0.0.2, echoing on 7) on one segment.
fn lan(latency: Duration) -> (Simulation, netsim::HostId, netsim::HostId, Probe) {
    let mut sim = Simulation::new(7);
    sim.enable_trace();
    let lan = sim.add_segment(
        "lan",
        SegmentConfig::default()
            .ipv4(net("10.0.0.0/24"))
            .latency(latency),
    );
    let a = sim.add_host("a");
    sim.add_adapter(a, "eth0", lan, AdapterConfig::dhcp())
        .expect("adapter");
    let b = sim.add_host("b");
    sim.add_adapter(
        b,
        "eth0",
        lan,
        AdapterConfig::static_ipv4(net("10.0.0.2/24")),
    )
    .expect("adapter");
    let echo = Probe::echoing(&[7]);
    sim.add_service(b, "echo", echo.install()).expect("service");
    (sim, a, b, echo)
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

#[test]
fn guarantee_1_an_address_set_is_in_effect_for_every_datagram_sent_after_it() {
    let (mut sim, a, _, echo) = lan(Duration::from_micros(50));
    let got = Rc::new(RefCell::new(Vec::new()));
    let seen = Rc::new(RefCell::new(None));
    let (got2, seen2) = (got.clone(), seen.clone());
    sim.add_service(a, "client", move || {
        let seen = seen2.clone();
        Box::new(Scripted {
            start: Box::new(|stack| {
                stack.bind(5000).expect("port");
                stack.set_timer(SimTime::from_millis(10), 0);
            }),
            timer: Box::new(move |stack, _| {
                stack
                    .set_ipv4(0, Some(net("10.0.0.5/24")))
                    .expect("adapter");
                // In effect at once: the adapter shows it, and a datagram sent from it is
                // answered by unicast to it.
                let now = stack.adapters()[0].ipv4;
                *seen.borrow_mut() = now;
                let src = SocketAddr::from((now.map_or(Ipv4Addr::UNSPECIFIED, |n| n.addr()), 5000));
                stack
                    .send(0, src, addr("10.0.0.2:7"), Bytes::from_static(b"first"))
                    .expect("send");
            }),
            got: got2.clone(),
        })
    })
    .expect("service");
    sim.run_until(secs(1));
    assert_eq!(*seen.borrow(), Some(net("10.0.0.5/24")));
    let heard = echo.log.all();
    assert_eq!(heard.len(), 1);
    assert_eq!(
        heard[0].src,
        addr("10.0.0.5:5000"),
        "the first datagram's source"
    );
    let replies = got.borrow();
    assert_eq!(
        replies.len(),
        1,
        "the unicast reply to the new address arrived"
    );
    assert_eq!(replies[0].1.dst, addr("10.0.0.5:5000"));
    let trace = sim.trace_text();
    let changed = trace
        .find("a/eth0 address set to 10.0.0.5/24")
        .expect("address line");
    let sent = trace.find("a/eth0 sent").expect("sent line");
    assert!(changed < sent, "{trace}");
}

#[test]
fn guarantee_2_sends_leave_in_call_order() {
    let (mut sim, a, _, echo) = lan(Duration::from_micros(50));
    let script = (0..20u8).fold(Probe::listening(&[5000]), |p, i| {
        p.sending(millis(10), "0.0.0.0:5000", "255.255.255.255:7", &[i])
    });
    sim.add_service(a, "sender", script.install())
        .expect("service");
    sim.run_until(secs(1));
    let order: Vec<u8> = echo.log.payloads().iter().map(|p| p[0]).collect();
    assert_eq!(order, (0..20).collect::<Vec<u8>>());
}

#[test]
fn guarantee_3_and_4_timers_fire_in_deadline_order_never_early_and_time_never_goes_back() {
    let (mut sim, a, _, _) = lan(Duration::from_micros(50));
    let fired = Rc::new(RefCell::new(Vec::new()));
    let fired2 = fired.clone();
    // (deadline in ms, token): set out of order, with ties and one already past.
    let plan = [(30u64, 0u64), (10, 1), (20, 2), (10, 3), (0, 4)];
    sim.add_service(a, "timers", move || {
        let fired = fired2.clone();
        Box::new(Scripted {
            start: Box::new(move |stack| {
                for (ms, token) in plan {
                    stack.set_timer(SimTime::from_millis(ms), token);
                }
            }),
            timer: Box::new(move |stack, token| {
                let before = stack.now();
                assert_eq!(stack.now(), before, "now is fixed inside a callback");
                fired.borrow_mut().push((token, stack.now()));
            }),
            got: Rc::default(),
        })
    })
    .expect("service");
    sim.run_until(secs(1));
    let fired = fired.borrow();
    let tokens: Vec<u64> = fired.iter().map(|(t, _)| *t).collect();
    assert_eq!(tokens, [4, 1, 3, 2, 0]);
    for (token, at) in fired.iter() {
        let deadline = plan.iter().find(|(_, t)| t == token).map(|(ms, _)| *ms);
        assert!(
            *at >= SimTime::from_millis(deadline.expect("planned")),
            "never early"
        );
    }
    assert!(
        fired.windows(2).all(|w| w[0].1 <= w[1].1),
        "time never goes back"
    );
}

#[test]
fn guarantee_5_a_datagram_is_never_held_past_a_link_coming_back() {
    // 100 ms on the wire; b's link goes down and up again while the first datagram travels.
    let (mut sim, a, b, echo) = lan(Duration::from_millis(100));
    let sender = Probe::listening(&[5000])
        .sending(
            millis(10),
            "0.0.0.0:5000",
            "255.255.255.255:7",
            b"in flight",
        )
        .sending(millis(300), "0.0.0.0:5000", "255.255.255.255:7", b"after");
    sim.add_service(a, "sender", sender.install())
        .expect("service");
    let b_eth0 = AdapterId { host: b, index: 0 };
    sim.link_down_at(millis(50), b_eth0).expect("adapter");
    sim.link_up_at(millis(60), b_eth0).expect("adapter");
    sim.run_until(secs(1));
    assert_eq!(echo.log.payloads(), [b"after".to_vec()]);
    let trace = sim.trace_text();
    assert!(
        trace.contains("b/eth0 dropped 0.0.0.0:5000 -> 255.255.255.255:7, 9 bytes: link down"),
        "{trace}"
    );
}

#[test]
fn guarantee_5_a_delayed_datagram_is_not_held_either() {
    // The same with the delay from a latency fault instead of the segment.
    let (mut sim, a, b, echo) = lan(Duration::from_micros(50));
    sim.add_fault(FaultRule::latency(
        Duration::from_millis(100),
        Duration::ZERO,
    ));
    let sender = Probe::listening(&[5000]).sending(
        millis(10),
        "0.0.0.0:5000",
        "255.255.255.255:7",
        b"in flight",
    );
    sim.add_service(a, "sender", sender.install())
        .expect("service");
    let b_eth0 = AdapterId { host: b, index: 0 };
    sim.link_down_at(millis(50), b_eth0).expect("adapter");
    sim.link_up_at(millis(60), b_eth0).expect("adapter");
    sim.run_until(secs(1));
    assert_eq!(echo.log.len(), 0);
}

#[test]
fn guarantee_6_nothing_arrives_on_an_unbound_port() {
    let (mut sim, a, b, _) = lan(Duration::from_micros(50));
    let got = Rc::new(RefCell::new(Vec::new()));
    let got2 = got.clone();
    sim.add_service(b, "late", move || {
        Box::new(Scripted {
            start: Box::new(|stack| {
                stack.set_timer(SimTime::from_millis(100), 1);
                stack.set_timer(SimTime::from_millis(200), 2);
            }),
            timer: Box::new(|stack, token| match token {
                1 => stack.bind(9).expect("port"),
                _ => stack.unbind(9),
            }),
            got: got2.clone(),
        })
    })
    .expect("service");
    let sender = [50u64, 150, 250]
        .iter()
        .fold(Probe::listening(&[5000]), |p, ms| {
            p.sending(
                millis(*ms),
                "0.0.0.0:5000",
                "255.255.255.255:9",
                &ms.to_be_bytes(),
            )
        });
    sim.add_service(a, "sender", sender.install())
        .expect("service");
    sim.run_until(secs(1));
    let payloads: Vec<Vec<u8>> = got
        .borrow()
        .iter()
        .map(|(_, d)| d.payload.to_vec())
        .collect();
    assert_eq!(payloads, [150u64.to_be_bytes().to_vec()]);
}
