//! Same seed, same run: identical traces and captures. A different seed, with random faults,
//! gives a different run.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use netsim::{AdapterConfig, FaultRule, Probability, SegmentConfig, SimTime, Simulation};

use crate::{Probe, millis, net, secs};

struct Run {
    trace: String,
    pcap: Vec<u8>,
    drawn: Vec<u64>,
    events: u64,
}

/// A writer whose bytes the test reads after the run.
#[derive(Clone, Default)]
struct SharedBytes(Rc<RefCell<Vec<u8>>>);

impl std::io::Write for SharedBytes {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn run(seed: u64) -> Run {
    run_capturing(seed, None)
}

/// The busy run, its segment `a` captured in memory, or streamed into `stream` when given.
fn run_capturing(seed: u64, stream: Option<SharedBytes>) -> Run {
    let mut sim = Simulation::new(seed);
    sim.enable_trace();
    let a = sim.add_segment("a", SegmentConfig::default().ipv4(net("10.0.1.0/24")));
    let b = sim.add_segment("b", SegmentConfig::default().ipv4(net("10.0.2.0/24")));
    match &stream {
        Some(out) => sim.capture_to(a, Box::new(out.clone())).expect("segment"),
        None => sim.capture(a).expect("segment"),
    }
    let router = sim.add_router("router");
    let relay = sim
        .add_router_interface(router, a, net("10.0.1.1/24"))
        .expect("iface");
    sim.add_router_interface(router, b, net("10.0.2.1/24"))
        .expect("iface");
    sim.set_relay(relay, vec!["10.0.2.2".parse().expect("ip")])
        .expect("iface");
    let server = sim.add_host("server");
    sim.add_adapter(
        server,
        "eth0",
        b,
        AdapterConfig::static_ipv4(net("10.0.2.2/24")),
    )
    .expect("adapter");
    let echo = Probe::echoing(&[7, 67]);
    sim.add_service(server, "echo", echo.install())
        .expect("service");
    let mut drawn = echo.drawn.clone();
    for i in 0..5u64 {
        let host = sim.add_host(&format!("client-{i}"));
        let addr = net(&format!("10.0.1.{}/24", 10 + i));
        sim.add_adapter(host, "eth0", a, AdapterConfig::static_ipv4(addr))
            .expect("adapter");
        let src = format!("{}:5000", addr.addr());
        let mut p = Probe::echoing(&[5000]);
        for k in 0..20u64 {
            let at = millis(100 * k + 7 * i);
            p = p.sending(at, &src, "10.0.2.2:7", format!("{i}/{k}").as_bytes());
            p = p.sending(at, &src, "255.255.255.255:5000", b"hello neighbours");
        }
        sim.add_service(host, "client", p.install())
            .expect("service");
        drawn = p.drawn.clone();
    }
    sim.add_fault(FaultRule::loss(Probability::percent(20)));
    sim.add_fault(FaultRule::latency(
        Duration::from_millis(1),
        Duration::from_millis(5),
    ));
    sim.add_fault(FaultRule::duplicate(Probability::percent(10)));
    sim.add_fault(FaultRule::corrupt(Probability::percent(5)).during(secs(1), SimTime::MAX));
    sim.run_until(secs(5));
    let pcap = match stream {
        Some(out) => {
            sim.finish_capture(a).expect("flushed");
            out.0.borrow().clone()
        }
        None => sim.pcap(a).expect("captured"),
    };
    Run {
        trace: sim.trace_text(),
        pcap,
        drawn: drawn.borrow().clone(),
        events: sim.stats().events,
    }
}

#[test]
fn the_same_seed_gives_the_same_trace_and_capture() {
    let first = run(0x5eed);
    let second = run(0x5eed);
    assert!(first.events > 500, "a busy run: {} events", first.events);
    assert!(first.trace.contains("lost (fault 0: loss 20%)"));
    assert!(first.trace.contains("duplicated"));
    assert!(first.trace.contains("corrupted"));
    assert_eq!(first.trace, second.trace);
    assert_eq!(first.pcap, second.pcap);
    assert_eq!(first.drawn, second.drawn);
}

#[test]
fn a_streamed_capture_is_the_same_pcap_and_reads_back_as_the_frames() {
    let kept = run(0x5eed);
    let streamed = run_capturing(0x5eed, Some(SharedBytes::default()));
    assert_eq!(
        streamed.trace, kept.trace,
        "capturing does not change the run"
    );
    assert_eq!(streamed.pcap, kept.pcap);
    let frames = netsim::wire::read_pcap(&streamed.pcap[..])
        .expect("header")
        .collect::<Result<Vec<_>, _>>()
        .expect("frames");
    assert!(frames.len() > 100, "{} frames", frames.len());
    assert_eq!(netsim::wire::pcap_bytes(&frames).expect("pcap"), kept.pcap);
}

#[test]
fn another_seed_gives_another_run() {
    let first = run(1);
    let second = run(2);
    assert_ne!(first.trace, second.trace);
    assert_ne!(
        first.drawn, second.drawn,
        "services draw from the run's seed"
    );
}
