//! The modelled server processor ([`ServerCpu`]) in the simulator: requests wait for a free
//! core, each reply leaves `decrypt_time` after its operation starts, a bounded queue sheds
//! (and counts) what does not fit, and the replies' bytes are those the instant provider sends.

// Test code may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use netsim::{
    AdapterConfig, Bytes, Datagram, HostStack, SegmentConfig, Service, SimTime, Simulation,
};
use nkpu::{ClientKey, KeyProtector, ProviderKey, SessionKey, Thumbprint, v4};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rsa::pkcs8::DecodePrivateKey;
use unlock_processor::{DecryptPool, ModelledCpu, ServerCpu};
use unlock_server::provider::Provider;
use unlock_server::service::UnlockService;

const THUMB: Thumbprint = Thumbprint::from_bytes([0xaa; 20]);
const REQUESTS: u8 = 5;

fn key_der() -> Vec<u8> {
    std::fs::read(format!(
        "{}/../../fixtures/keys/test-a-rsa2048.pk8",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Replies as they arrived: when, and the bytes.
type Replies = Vec<(Duration, Vec<u8>)>;

/// Sends `REQUESTS` Network Unlock requests at start, all at the same instant, and keeps what
/// comes back with its arrival time.
struct Burst {
    requests: Vec<Vec<u8>>,
    replies: Rc<RefCell<Replies>>,
}

impl Service for Burst {
    fn on_start(&mut self, stack: &mut dyn HostStack) {
        stack.bind(68).unwrap();
        let src: SocketAddr = "10.0.4.110:68".parse().unwrap();
        let dst: SocketAddr = "10.0.4.10:67".parse().unwrap();
        for request in &self.requests {
            stack
                .send(0, src, dst, Bytes::from(request.clone()))
                .unwrap();
        }
    }
    fn on_datagram(&mut self, stack: &mut dyn HostStack, datagram: Datagram) {
        self.replies
            .borrow_mut()
            .push((stack.now().since_start(), datagram.payload.to_vec()));
    }
    fn on_timer(&mut self, _: &mut dyn HostStack, _: u64) {}
}

fn requests() -> Vec<Vec<u8>> {
    let public = rsa::RsaPrivateKey::from_pkcs8_der(&key_der())
        .unwrap()
        .to_public_key();
    (0..REQUESTS)
        .map(|i| {
            let mut rng = ChaCha20Rng::seed_from_u64(u64::from(i));
            let ck = ClientKey::random(&mut rng);
            let sk = SessionKey::random(&mut rng);
            let kp = KeyProtector::encrypt(&public, &ck, &sk, &mut rng).unwrap();
            v4::Request::after_lease(
                u32::from(i) + 1,
                [2, 0, 0, 0, 0, i],
                Ipv4Addr::new(10, 0, 4, 110),
                Ipv4Addr::new(10, 0, 4, 2),
                vec![],
                THUMB,
                kp,
            )
            .encode()
        })
        .collect()
}

struct Run {
    replies: Replies,
    provider: Rc<RefCell<Provider>>,
}

/// One WDS server and one burst of requests; `cpu` is `None` for the instant provider.
fn run(cpu: Option<ServerCpu>) -> Run {
    let mut sim = Simulation::new(1);
    let lan = sim.add_segment(
        "lan",
        SegmentConfig::default().ipv4("10.0.4.0/24".parse().unwrap()),
    );
    let wds = sim.add_host("wds");
    let client = sim.add_host("client");
    sim.add_adapter(
        wds,
        "eth0",
        lan,
        AdapterConfig::static_ipv4("10.0.4.10/24".parse().unwrap()),
    )
    .unwrap();
    sim.add_adapter(
        client,
        "eth0",
        lan,
        AdapterConfig::static_ipv4("10.0.4.110/24".parse().unwrap()),
    )
    .unwrap();
    let mut provider = Provider::new(vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 1]);
    provider.add_certificate(THUMB, ProviderKey::from_pkcs8_der(&key_der()).unwrap());
    let provider = Rc::new(RefCell::new(provider));
    let shared = Rc::clone(&provider);
    let pool = DecryptPool::new(2);
    sim.add_service(wds, "WDSServer", move || match cpu {
        Some(cpu) => Box::new(UnlockService::with_processor(
            Rc::clone(&shared),
            Box::new(ModelledCpu::new(cpu, Arc::clone(&pool))),
        )),
        None => Box::new(UnlockService::new(Rc::clone(&shared))),
    })
    .unwrap();
    let replies = Rc::new(RefCell::new(Vec::new()));
    let seen = Rc::clone(&replies);
    let requests = requests();
    sim.add_service(client, "burst", move || {
        Box::new(Burst {
            requests: requests.clone(),
            replies: Rc::clone(&seen),
        })
    })
    .unwrap();
    sim.run_until(SimTime::from_secs(5));
    let replies = replies.borrow().clone();
    Run { replies, provider }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn requests_wait_for_a_free_core_and_replies_leave_when_their_operation_ends() {
    let cpu = ServerCpu {
        cores: 2,
        decrypt_time: ms(10),
        queue: None,
    };
    let instant = run(None);
    let modelled = run(Some(cpu));
    assert_eq!(instant.replies.len(), usize::from(REQUESTS));
    assert_eq!(modelled.replies.len(), usize::from(REQUESTS));
    // Two cores, five requests at once: 10, 10, 20, 20, 30 ms after the requests arrived.
    let arrived = instant.replies[0].0;
    let offsets: Vec<Duration> = modelled
        .replies
        .iter()
        .map(|(at, _)| *at - arrived)
        .collect();
    assert_eq!(offsets, [ms(10), ms(10), ms(20), ms(20), ms(30)]);
    // Same bytes, same order: the pool changes when a reply leaves, never what it says.
    let bytes = |run: &Run| {
        run.replies
            .iter()
            .map(|(_, b)| b.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(bytes(&instant), bytes(&modelled));
    assert_eq!(
        modelled.provider.borrow().counter("replied"),
        u64::from(REQUESTS)
    );
}

#[test]
fn a_full_queue_sheds_and_counts_the_request() {
    let cpu = ServerCpu {
        cores: 1,
        decrypt_time: ms(10),
        queue: Some(2),
    };
    let run = run(Some(cpu));
    // One on the core, two waiting; the other two are shed.
    assert_eq!(run.replies.len(), 3);
    let provider = run.provider.borrow();
    assert_eq!(provider.counter("replied"), 3);
    assert_eq!(provider.counter("drop.overloaded"), 2);
}

#[test]
fn the_same_burst_gives_the_same_replies_at_the_same_times() {
    let cpu = ServerCpu {
        cores: 3,
        decrypt_time: ms(7),
        queue: None,
    };
    assert_eq!(run(Some(cpu)).replies, run(Some(cpu)).replies);
}
