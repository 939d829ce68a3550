//! The performance target of the simulator: at least one million datagram deliveries per
//! second on one core, on a broadcast segment of 1,000 hosts; and the memory of an idle host.
//!
//! One host broadcasts 100 datagrams per simulated millisecond; the 999 others listen. Each
//! criterion iteration runs one simulated millisecond: 99,900 deliveries. Tracing and capture
//! are off, as in a large scenario that only wants its outcome.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use netsim::{
    AdapterConfig, Bytes, Datagram, HostId, HostStack, SegmentConfig, Service, Simulation,
};

const HOSTS: usize = 1_000;
const BURST: u64 = 100;
const PORT: u16 = 9_000;

struct Broadcaster;

impl Service for Broadcaster {
    fn on_start(&mut self, stack: &mut dyn HostStack) {
        stack.set_timer(stack.now(), 0);
    }
    fn on_datagram(&mut self, _: &mut dyn HostStack, _: Datagram) {}
    fn on_timer(&mut self, stack: &mut dyn HostStack, _: u64) {
        let src = SocketAddr::from(([10, 0, 0, 1], PORT));
        let dst = SocketAddr::from(([255, 255, 255, 255], PORT));
        let payload = Bytes::from_static(&[0u8; 300]);
        for _ in 0..BURST {
            stack
                .send(0, src, dst, payload.clone())
                .expect("adapter 0 exists");
        }
        stack.set_timer(stack.now() + Duration::from_millis(1), 0);
    }
}

struct Counter(Rc<Cell<u64>>);

impl Service for Counter {
    fn on_start(&mut self, stack: &mut dyn HostStack) {
        stack.bind(PORT).expect("free port");
    }
    fn on_datagram(&mut self, _: &mut dyn HostStack, d: Datagram) {
        self.0.set(self.0.get() + d.payload.len() as u64 / 300);
    }
    fn on_timer(&mut self, _: &mut dyn HostStack, _: u64) {}
}

fn network(count: Rc<Cell<u64>>) -> (Simulation, HostId) {
    let mut sim = Simulation::new(1);
    let mut listener = None;
    let lan = sim.add_segment(
        "lan",
        SegmentConfig::default().ipv4("10.0.0.0/16".parse().expect("net")),
    );
    for i in 0..HOSTS {
        let host = sim.add_host(&format!("host-{i}"));
        let addr = format!("10.0.{}.{}/16", (i + 1) / 256, (i + 1) % 256);
        sim.add_adapter(
            host,
            "eth0",
            lan,
            AdapterConfig::static_ipv4(addr.parse().expect("addr")),
        )
        .expect("host and segment exist");
        if i == 0 {
            sim.add_service(host, "broadcaster", || Box::new(Broadcaster))
                .expect("new name");
        } else {
            listener.get_or_insert(host);
            let count = count.clone();
            sim.add_service(host, "counter", move || Box::new(Counter(count.clone())))
                .expect("new name");
        }
    }
    (sim, listener.expect("more than one host"))
}

fn broadcast(c: &mut Criterion) {
    let count = Rc::new(Cell::new(0));
    let (mut sim, listener) = network(count.clone());
    sim.run_for(Duration::from_millis(1));
    let before = count.get();
    sim.run_for(Duration::from_millis(1));
    let per_ms = count.get() - before;
    assert_eq!(
        per_ms,
        BURST * (HOSTS as u64 - 1),
        "every listener hears every broadcast"
    );

    let footprint = sim.host_footprint(listener).expect("host 1 exists");
    println!(
        "idle host footprint (struct, name, service slot and instance, ports; adapters \
         excluded): {footprint} bytes"
    );

    let mut group = c.benchmark_group("broadcast");
    group.throughput(Throughput::Elements(per_ms));
    group.bench_function("1000 hosts, deliveries per simulated ms", |b| {
        b.iter(|| sim.run_for(Duration::from_millis(1)));
    });
    group.finish();
}

criterion_group!(benches, broadcast);
criterion_main!(benches);
