//! The unlock exchange across the deterministic simulator: the provider as a WDS service on one
//! host, a client on another, on one segment and across a DHCP relay; what a relay that does not
//! forward to WDS and a stopped WDS service do to it. (The client's address is static here; the
//! lease from a separate DHCP server joins with the DHCP crate.)

// Test code may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::rc::Rc;

use boot_client::exchange::{
    ExchangeOutcome, Secrets, Timers, Transport, UnlockExchange, V4Lease, V6Link,
};
use netsim::{
    AdapterConfig, Bytes, Datagram, HostStack, SegmentConfig, Service, SimTime, Simulation,
};
use nkpu::{ClientKey, KeyProtector, ProviderKey, SessionKey, Thumbprint};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rsa::pkcs8::DecodePrivateKey;
use unlock_server::provider::Provider;
use unlock_server::service::UnlockService;

const THUMB: Thumbprint = Thumbprint::from_bytes([0x4a; 20]);

fn der() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/keys/test-a-rsa2048.pk8"
    ))
    .unwrap()
}

/// A client that runs one exchange on its adapter 0 from boot and records the outcome.
struct ExchangeClient {
    order: Vec<Transport>,
    secrets: Secrets,
    exchange: Option<UnlockExchange>,
    outcome: Rc<RefCell<Option<ExchangeOutcome>>>,
}

impl ExchangeClient {
    fn pump(&mut self, stack: &mut dyn HostStack) {
        let Some(exchange) = &mut self.exchange else {
            return;
        };
        while let Some(t) = exchange.poll_transmit() {
            let _ = stack.send(0, t.source, t.destination, Bytes::from(t.payload));
        }
        if let Some(outcome) = exchange.outcome() {
            *self.outcome.borrow_mut() = Some(outcome.clone());
        } else if let Some(at) = exchange.poll_timeout() {
            stack.set_timer(SimTime::ZERO.saturating_add(at), 0);
        }
    }
}

impl Service for ExchangeClient {
    fn on_start(&mut self, stack: &mut dyn HostStack) {
        stack.bind(68).unwrap();
        stack.bind(546).unwrap();
        let adapter = stack.adapters()[0].clone();
        let v4 = adapter.ipv4.map(|net| V4Lease {
            client_mac: adapter.mac.0,
            address: net.addr(),
            dhcp_server: Ipv4Addr::new(10, 0, 4, 97),
            options: vec![],
        });
        let v6 = Some(V6Link {
            link_local: adapter.ipv6_link_local,
            client_duid: vec![0, 4, 1],
        });
        let mut seed = [0u8; 32];
        stack.rng().fill_bytes(&mut seed);
        self.exchange = Some(UnlockExchange::start(
            stack.now().since_start(),
            self.order.clone(),
            Timers::default(),
            v4,
            v6,
            self.secrets.clone(),
            Box::new(ChaCha20Rng::from_seed(seed)),
        ));
        self.pump(stack);
    }

    fn on_datagram(&mut self, stack: &mut dyn HostStack, datagram: Datagram) {
        if let Some(exchange) = &mut self.exchange {
            exchange.handle_datagram(stack.now().since_start(), &datagram.payload);
        }
        self.pump(stack);
    }

    fn on_timer(&mut self, stack: &mut dyn HostStack, _: u64) {
        if let Some(exchange) = &mut self.exchange {
            exchange.handle_timeout(stack.now().since_start());
        }
        self.pump(stack);
    }
}

struct Lab {
    sim: Simulation,
    wds: netsim::HostId,
    provider: Rc<RefCell<Provider>>,
    outcome: Rc<RefCell<Option<ExchangeOutcome>>>,
    ck: ClientKey,
}

fn net(s: &str) -> netsim::Ipv4Net {
    s.parse().unwrap()
}

/// WDS at 10.0.4.98 on "servers"; the client on "servers" too, or behind a relay on "branch".
fn lab(seed: u64, behind_relay: Option<Vec<Ipv4Addr>>, order: Vec<Transport>) -> Lab {
    let mut sim = Simulation::new(seed);
    sim.enable_trace();
    let servers = sim.add_segment("servers", SegmentConfig::default().ipv4(net("10.0.4.0/24")));
    let wds = sim.add_host("wds");
    sim.add_adapter(
        wds,
        "eth0",
        servers,
        AdapterConfig::static_ipv4(net("10.0.4.98/24")),
    )
    .unwrap();
    let der = der();
    let mut provider = Provider::new(vec![0, 3, 0, 1, 0, 0, 0, 0, 0, 0x98]);
    provider.add_certificate(THUMB, ProviderKey::from_pkcs8_der(&der).unwrap());
    let provider = Rc::new(RefCell::new(provider));
    let shared = provider.clone();
    sim.add_service(wds, "WDSServer", move || {
        Box::new(UnlockService::new(shared.clone()))
    })
    .unwrap();

    let client_segment = match &behind_relay {
        None => servers,
        Some(helpers) => {
            let branch =
                sim.add_segment("branch", SegmentConfig::default().ipv4(net("10.0.9.0/24")));
            let router = sim.add_router("router");
            let relay = sim
                .add_router_interface(router, branch, net("10.0.9.1/24"))
                .unwrap();
            sim.add_router_interface(router, servers, net("10.0.4.1/24"))
                .unwrap();
            sim.set_relay(relay, helpers.clone()).unwrap();
            branch
        }
    };
    let client_addr = if behind_relay.is_some() {
        "10.0.9.20/24"
    } else {
        "10.0.4.110/24"
    };
    let client = sim.add_host("client");
    sim.add_adapter(
        client,
        "eth0",
        client_segment,
        AdapterConfig::static_ipv4(net(client_addr)),
    )
    .unwrap();

    let public = rsa::RsaPrivateKey::from_pkcs8_der(&der)
        .unwrap()
        .to_public_key();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let ck = ClientKey::random(&mut rng);
    let sk = SessionKey::random(&mut rng);
    let kp = KeyProtector::encrypt(&public, &ck, &sk, &mut rng).unwrap();
    let secrets = Secrets {
        thumbprint: THUMB,
        key_protector: kp,
        session_key: sk,
    };
    let outcome = Rc::new(RefCell::new(None));
    let recorded = outcome.clone();
    sim.add_service(client, "bootmgr", move || {
        Box::new(ExchangeClient {
            order: order.clone(),
            secrets: secrets.clone(),
            exchange: None,
            outcome: recorded.clone(),
        })
    })
    .unwrap();
    Lab {
        sim,
        wds,
        provider,
        outcome,
        ck,
    }
}

#[test]
fn unlocks_over_dhcpv4_on_one_segment() {
    let mut lab = lab(1, None, vec![Transport::DhcpV4]);
    lab.sim.run_until(SimTime::from_secs(30));
    let outcome = lab.outcome.borrow().clone().unwrap();
    assert!(
        matches!(outcome, ExchangeOutcome::Unlocked { transport: Transport::DhcpV4, ref client_key, .. } if *client_key == lab.ck),
        "{outcome:?}"
    );
    assert_eq!(lab.provider.borrow().counter("replied"), 1);
}

#[test]
fn unlocks_over_dhcpv6_link_local_first() {
    let mut lab = lab(2, None, vec![Transport::DhcpV6, Transport::DhcpV4]);
    lab.sim.run_until(SimTime::from_secs(30));
    let outcome = lab.outcome.borrow().clone().unwrap();
    assert!(
        matches!(
            outcome,
            ExchangeOutcome::Unlocked {
                transport: Transport::DhcpV6,
                ..
            }
        ),
        "{outcome:?}"
    );
}

#[test]
fn unlocks_across_a_relay_that_forwards_to_wds() {
    let mut lab = lab(
        3,
        Some(vec![Ipv4Addr::new(10, 0, 4, 98)]),
        vec![Transport::DhcpV4],
    );
    lab.sim.run_until(SimTime::from_secs(30));
    let outcome = lab.outcome.borrow().clone().unwrap();
    assert!(
        matches!(outcome, ExchangeOutcome::Unlocked { .. }),
        "{outcome:?}\n{}",
        lab.sim.trace_text()
    );
    // The provider saw the relayed request and answered through the relay.
    let log = lab
        .provider
        .borrow()
        .log_lines()
        .iter()
        .map(|l| l.message.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(log.contains("key returned to 10.0.9.1:67"), "{log}");
}

#[test]
fn a_relay_that_forwards_only_to_the_dhcp_server_fails_the_exchange() {
    // The classic misconfiguration: the helper list names the DHCP server, not WDS.
    let mut lab = lab(
        4,
        Some(vec![Ipv4Addr::new(10, 0, 4, 97)]),
        vec![Transport::DhcpV4],
    );
    lab.sim.run_until(SimTime::from_secs(30));
    let outcome = lab.outcome.borrow().clone().unwrap();
    assert!(matches!(outcome, ExchangeOutcome::Failed(_)), "{outcome:?}");
    assert_eq!(lab.provider.borrow().counter("replied"), 0);
}

#[test]
fn a_stopped_wds_service_answers_nothing() {
    let mut lab = lab(5, None, vec![Transport::DhcpV4]);
    let wds = lab.wds;
    lab.sim
        .stop_service_at(SimTime::ZERO, wds, "WDSServer")
        .unwrap();
    lab.sim.run_until(SimTime::from_secs(30));
    let outcome = lab.outcome.borrow().clone().unwrap();
    assert!(matches!(outcome, ExchangeOutcome::Failed(_)), "{outcome:?}");
    assert!(
        lab.sim.trace_text().contains("no listener"),
        "{}",
        lab.sim.trace_text()
    );
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let run = |seed| {
        let mut lab = lab(
            seed,
            Some(vec![Ipv4Addr::new(10, 0, 4, 98)]),
            vec![Transport::DhcpV6, Transport::DhcpV4],
        );
        lab.sim.run_until(SimTime::from_secs(30));
        lab.sim.trace_text()
    };
    let first = run(7);
    assert!(first.contains("wds/eth0"), "{first}");
    assert_eq!(first, run(7));
}
