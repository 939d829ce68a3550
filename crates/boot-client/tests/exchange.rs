//! The client's exchange against the real provider core, in a tiny in-memory loop that advances
//! time to the next timer (like quinn's tests): timers, transport order, losses, forgeries.

// Test code may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::time::Duration;

use boot_client::exchange::{
    ExchangeEvent, ExchangeOutcome, Secrets, Timers, Transport, TransportFailure, UnlockExchange,
    V4Lease, V6Link,
};
use nkpu::{ClientKey, KeyProtector, KeyProtectorReply, ProviderKey, SessionKey, Thumbprint, v4};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rsa::pkcs8::DecodePrivateKey;
use unlock_server::provider::{Outcome, Provider, Received};

const THUMB: Thumbprint = Thumbprint::from_bytes([0x4a; 20]);

struct Setup {
    provider: Provider,
    ck: ClientKey,
    secrets: Secrets,
}

fn setup(seed: u64) -> Setup {
    let der = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/keys/test-a-rsa2048.pk8"
    ))
    .unwrap();
    let public = rsa::RsaPrivateKey::from_pkcs8_der(&der)
        .unwrap()
        .to_public_key();
    let mut provider = Provider::new(vec![0, 3, 0, 1, 9, 9, 9, 9, 9, 9]);
    provider.add_certificate(THUMB, ProviderKey::from_pkcs8_der(&der).unwrap());
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let ck = ClientKey::random(&mut rng);
    let sk = SessionKey::random(&mut rng);
    let kp = KeyProtector::encrypt(&public, &ck, &sk, &mut rng).unwrap();
    Setup {
        provider,
        ck,
        secrets: Secrets {
            thumbprint: THUMB,
            key_protector: kp,
            session_key: sk,
        },
    }
}

fn lease() -> V4Lease {
    V4Lease {
        client_mac: [2, 0, 0, 0, 0, 1],
        address: Ipv4Addr::new(10, 0, 4, 110),
        dhcp_server: Ipv4Addr::new(10, 0, 4, 97),
        options: vec![v4::LeaseOption::new(54, vec![10, 0, 4, 97]).unwrap()],
    }
}

fn link() -> V6Link {
    V6Link {
        link_local: "fe80::1".parse().unwrap(),
        client_duid: vec![0, 4, 1, 2, 3],
    }
}

/// Runs the exchange to its end. `deliver(transport, n)` says whether the n-th request (1-based,
/// per transport) reaches the provider.
fn run(
    setup: &mut Setup,
    order: Vec<Transport>,
    v4: Option<V4Lease>,
    v6: Option<V6Link>,
    deliver: impl Fn(Transport, u32) -> bool,
    mut before_reply: impl FnMut(&mut UnlockExchange, Duration, &[u8]),
) -> (ExchangeOutcome, Vec<ExchangeEvent>) {
    let mut exchange = UnlockExchange::start(
        Duration::ZERO,
        order,
        Timers::default(),
        v4,
        v6,
        setup.secrets.clone(),
        Box::new(ChaCha20Rng::seed_from_u64(99)),
    );
    let mut now = Duration::ZERO;
    let mut sent = std::collections::BTreeMap::new();
    let mut events = Vec::new();
    for _ in 0..100 {
        while let Some(t) = exchange.poll_transmit() {
            let n = sent.entry(t.transport).or_insert(0u32);
            *n += 1;
            if !deliver(t.transport, *n) {
                continue;
            }
            if let Outcome::Replied { transmit, .. } = setup.provider.handle(
                now,
                Received {
                    source: t.source,
                    payload: &t.payload,
                },
            ) {
                before_reply(&mut exchange, now, &transmit.payload);
                exchange.handle_datagram(now, &transmit.payload);
            }
        }
        events.extend(std::iter::from_fn(|| exchange.poll_event()));
        if let Some(outcome) = exchange.outcome() {
            return (outcome.clone(), events);
        }
        now = exchange
            .poll_timeout()
            .expect("a running exchange has a timer");
        exchange.handle_timeout(now);
    }
    panic!("the exchange never ended")
}

#[test]
fn dhcpv4_unlocks_at_once() {
    let mut s = setup(1);
    let (outcome, events) = run(
        &mut s,
        vec![Transport::DhcpV4],
        Some(lease()),
        None,
        |_, _| true,
        |_, _, _| {},
    );
    assert_eq!(
        outcome,
        ExchangeOutcome::Unlocked {
            transport: Transport::DhcpV4,
            client_key: s.ck.clone(),
            at: Duration::ZERO
        }
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, ExchangeEvent::Sent { .. }))
            .count(),
        1
    );
}

#[test]
fn a_lost_first_request_is_retransmitted_after_two_seconds() {
    let mut s = setup(2);
    let (outcome, _) = run(
        &mut s,
        vec![Transport::DhcpV4],
        Some(lease()),
        None,
        |_, n| n > 1,
        |_, _, _| {},
    );
    assert!(
        matches!(outcome, ExchangeOutcome::Unlocked { at, .. } if at == Duration::from_secs(2))
    );
}

#[test]
fn dhcpv6_first_then_dhcpv4_when_no_server_answers_v6() {
    let mut s = setup(3);
    let (outcome, events) = run(
        &mut s,
        vec![Transport::DhcpV6, Transport::DhcpV4],
        Some(lease()),
        Some(link()),
        |t, _| t == Transport::DhcpV4,
        |_, _, _| {},
    );
    // DHCPv6: IRT 2 s (±10%), MRD 4 s: two sends, failed at exactly 4 s; then DHCPv4 at once.
    let v6_sends: Vec<Duration> = events
        .iter()
        .filter_map(|e| match e {
            ExchangeEvent::Sent {
                at,
                transport: Transport::DhcpV6,
                ..
            } => Some(*at),
            _ => None,
        })
        .collect();
    assert_eq!(v6_sends.len(), 2, "{events:?}");
    assert!(
        v6_sends[1] >= Duration::from_millis(1800) && v6_sends[1] <= Duration::from_millis(2200),
        "{v6_sends:?}"
    );
    assert!(events.contains(&ExchangeEvent::TransportFailed {
        at: Duration::from_secs(4),
        transport: Transport::DhcpV6,
        failure: TransportFailure::NoValidReply {
            sends: 2,
            ignored_replies: 0
        },
    }));
    assert!(
        matches!(outcome, ExchangeOutcome::Unlocked { transport: Transport::DhcpV4, at, .. } if at == Duration::from_secs(4))
    );
}

#[test]
fn every_transport_fails_when_nobody_answers() {
    let mut s = setup(4);
    let (outcome, events) = run(
        &mut s,
        vec![Transport::DhcpV6, Transport::DhcpV4],
        Some(lease()),
        Some(link()),
        |_, _| false,
        |_, _, _| {},
    );
    assert_eq!(
        outcome,
        ExchangeOutcome::Failed(vec![
            (
                Transport::DhcpV6,
                TransportFailure::NoValidReply {
                    sends: 2,
                    ignored_replies: 0
                }
            ),
            (
                Transport::DhcpV4,
                TransportFailure::NoValidReply {
                    sends: 2,
                    ignored_replies: 0
                }
            ),
        ])
    );
    let last = events.last().unwrap();
    assert!(
        matches!(last, ExchangeEvent::TransportFailed { at, transport: Transport::DhcpV4, .. } if *at == Duration::from_secs(8)),
        "{last:?}"
    );
}

#[test]
fn a_transport_without_an_address_is_skipped() {
    let mut s = setup(5);
    let (outcome, _) = run(
        &mut s,
        vec![Transport::DhcpV4, Transport::DhcpV6],
        None,
        Some(link()),
        |_, _| true,
        |_, _, _| {},
    );
    assert!(matches!(
        outcome,
        ExchangeOutcome::Unlocked {
            transport: Transport::DhcpV6,
            ..
        }
    ));
}

#[test]
fn forged_and_foreign_replies_are_ignored_and_the_real_one_kept() {
    let mut s = setup(6);
    let (outcome, events) = run(
        &mut s,
        vec![Transport::DhcpV4],
        Some(lease()),
        None,
        |_, _| true,
        |exchange, now, real| {
            let nkpu::Message::V4Reply(real) = v4::decode(real).unwrap() else {
                panic!("the provider replies")
            };
            // Same transaction, sealed under a session key the client never chose: the tag fails.
            let mut forged = real.clone();
            forged.reply = KeyProtectorReply::seal(
                &SessionKey::from_bytes([0x66; 32]),
                &ClientKey::from_bytes([0x66; 32]),
            );
            assert!(
                exchange.handle_datagram(now, &forged.encode()),
                "taken: an event"
            );
            // Another client's transaction.
            let mut foreign = real;
            foreign.xid ^= 1;
            assert!(
                exchange.handle_datagram(now, &foreign.encode()),
                "taken: an event"
            );
            // Ordinary DHCP traffic (a BOOTP reply with no Network Unlock option): dropped
            // unseen, not taken.
            let mut plain = vec![0u8; 240];
            plain[0] = 2;
            plain[236..240].copy_from_slice(&[99, 130, 83, 99]);
            plain.extend_from_slice(&[53, 1, 2, 255]);
            assert!(
                !exchange.handle_datagram(now, &plain),
                "ordinary DHCP is not taken"
            );
        },
    );
    assert!(
        matches!(outcome, ExchangeOutcome::Unlocked { ref client_key, .. } if *client_key == s.ck)
    );
    let ignored: Vec<&Box<str>> = events
        .iter()
        .filter_map(|e| match e {
            ExchangeEvent::Ignored { why, .. } => Some(why),
            _ => None,
        })
        .collect();
    assert_eq!(ignored.len(), 2, "{events:?}");
    assert!(ignored[0].contains("tag does not verify"), "{ignored:?}");
    assert!(ignored[1].contains("another transaction"), "{ignored:?}");
}

proptest! {
    #[test]
    fn arbitrary_datagrams_never_unlock_and_never_panic(
        datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..400), 0..8)
    ) {
        let s = setup(7);
        let mut exchange = UnlockExchange::start(
            Duration::ZERO,
            vec![Transport::DhcpV6, Transport::DhcpV4],
            Timers::default(),
            Some(lease()),
            Some(link()),
            s.secrets.clone(),
            Box::new(ChaCha20Rng::seed_from_u64(1)),
        );
        while exchange.poll_transmit().is_some() {}
        while exchange.poll_event().is_some() {}
        for d in &datagrams {
            let deadline = exchange.poll_timeout();
            let taken = exchange.handle_datagram(Duration::ZERO, d);
            if !taken {
                // Not taken: nothing changed that a caller could poll.
                prop_assert!(exchange.poll_event().is_none());
                prop_assert!(exchange.poll_transmit().is_none());
                prop_assert!(exchange.outcome().is_none());
                prop_assert_eq!(exchange.poll_timeout(), deadline);
            }
            while exchange.poll_event().is_some() {}
        }
        let unlocked = matches!(exchange.outcome(), Some(ExchangeOutcome::Unlocked { .. }));
        prop_assert!(!unlocked);
    }
}
