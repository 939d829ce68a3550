//! How many complete DORA exchanges per second the two cores sustain on one core, through
//! encoding and decoding with dhcproto and the server's lease database (a pool of 60,000
//! addresses filling up as the bench runs).

use std::net::Ipv4Addr;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dhcp::{AdapterFacts, Client, ClientConfig, Pool, Received, Server, ServerConfig, Transmit};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn rx(t: &Transmit) -> Received<'_> {
    Received {
        interface: 0,
        src: t.src,
        dst: t.dst,
        payload: &t.payload,
    }
}

fn dora(c: &mut Criterion) {
    let mut group = c.benchmark_group("dhcp");
    group.throughput(Throughput::Elements(1));
    group.bench_function("dora exchange (4 messages, both cores)", |b| {
        let new_server = || {
            Server::new(ServerConfig::new(
                vec!["10.0.0.1/16".parse().expect("literal")],
                vec![Pool::new(
                    "10.0.0.0/16".parse().expect("literal"),
                    Ipv4Addr::new(10, 0, 1, 0),
                    Ipv4Addr::new(10, 0, 240, 255),
                )],
            ))
        };
        let mut server = new_server();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut n: u64 = 0;
        b.iter(|| {
            n += 1;
            if n.is_multiple_of(50_000) {
                server = new_server();
            }
            let b = n.to_be_bytes();
            let mut client = Client::new(
                ClientConfig::default(),
                AdapterFacts::ready([2, b[3], b[4], b[5], b[6], b[7]]),
                0,
            );
            client.start(Duration::ZERO, &mut rng);
            while client.lease().is_none() {
                let t = client
                    .poll_transmit()
                    .expect("the client always has a next step");
                server.handle(Duration::ZERO, rx(&t));
                let reply = server.poll_transmit().expect("the server answers");
                client.handle(Duration::ZERO, rx(&reply), &mut rng);
            }
            while server.poll_event().is_some() {}
        });
    });
    group.finish();
}

criterion_group!(benches, dora);
criterion_main!(benches);
