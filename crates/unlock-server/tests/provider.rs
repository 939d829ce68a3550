//! The provider end to end at the byte level: a client's real request in, a real reply out (or a
//! counted drop), for every rule of the processing order.

// Test code may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use dhcproto::Encodable;
use nkpu::{ClientKey, KeyProtector, Message, ProviderKey, SessionKey, Thumbprint, v4, v6};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rsa::pkcs8::DecodePrivateKey;
use unlock_server::provider::{DropReason, Level, Outcome, Provider, Received};

const T0: Duration = Duration::ZERO;

fn key(name: &str) -> (ProviderKey, rsa::RsaPublicKey) {
    let der = std::fs::read(format!(
        "{}/../../fixtures/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    (
        ProviderKey::from_pkcs8_der(&der).unwrap(),
        rsa::RsaPrivateKey::from_pkcs8_der(&der)
            .unwrap()
            .to_public_key(),
    )
}

const THUMB_A: Thumbprint = Thumbprint::from_bytes([0xaa; 20]);

struct Client {
    ck: ClientKey,
    sk: SessionKey,
    kp: KeyProtector,
}

fn client(public: &rsa::RsaPublicKey, seed: u64) -> Client {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let ck = ClientKey::random(&mut rng);
    let sk = SessionKey::random(&mut rng);
    let kp = KeyProtector::encrypt(public, &ck, &sk, &mut rng).unwrap();
    Client { ck, sk, kp }
}

fn v4_request(c: &Client, thumbprint: Thumbprint, addr: Ipv4Addr) -> v4::Request {
    v4::Request::after_lease(
        9,
        [2, 0, 0, 0, 0, 9],
        addr,
        Ipv4Addr::new(10, 0, 4, 97),
        vec![],
        thumbprint,
        c.kp.clone(),
    )
}

fn provider() -> (Provider, rsa::RsaPublicKey) {
    let (key, public) = key("test-a-rsa2048.pk8");
    let mut p = Provider::new(vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 1]);
    p.add_certificate(THUMB_A, key);
    (p, public)
}

fn from(addr: Ipv4Addr) -> SocketAddr {
    SocketAddr::new(addr.into(), 68)
}

#[test]
fn answers_a_v4_request_by_broadcast_with_the_sealed_key() {
    let (mut p, public) = provider();
    let c = client(&public, 1);
    let addr = Ipv4Addr::new(10, 0, 4, 110);
    let bytes = v4_request(&c, THUMB_A, addr).encode();
    let Outcome::Replied {
        transmit,
        client,
        thumbprint,
    } = p.handle(
        T0,
        Received {
            source: from(addr),
            payload: &bytes,
        },
    )
    else {
        panic!("no reply")
    };
    assert_eq!(thumbprint, THUMB_A);
    assert_eq!(client, IpAddr::V4(addr));
    assert_eq!(transmit.destination, "255.255.255.255:68".parse().unwrap());
    let Message::V4Reply(reply) = v4::decode(&transmit.payload).unwrap() else {
        panic!()
    };
    assert_eq!(reply.xid, 9);
    assert_eq!(reply.reply.open(&c.sk).unwrap(), c.ck);
    assert_eq!(p.counter("replied"), 1);
}

#[test]
fn a_relayed_request_is_answered_through_the_relay() {
    let (mut p, public) = provider();
    let c = client(&public, 2);
    let mut req = v4_request(&c, THUMB_A, Ipv4Addr::new(10, 0, 9, 20));
    req.giaddr = Ipv4Addr::new(10, 0, 9, 1);
    let bytes = req.encode();
    let out = p.handle(
        T0,
        Received {
            source: "10.0.9.1:67".parse().unwrap(),
            payload: &bytes,
        },
    );
    let Outcome::Replied {
        transmit, client, ..
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!(transmit.destination, "10.0.9.1:67".parse().unwrap());
    // The policy would check the client's own address, not the relay's.
    assert_eq!(client, IpAddr::V4(Ipv4Addr::new(10, 0, 9, 20)));
}

#[test]
fn answers_a_v6_request_with_a_server_identifier() {
    let (mut p, public) = provider();
    let c = client(&public, 3);
    let req = v6::Request {
        xid: [1, 2, 3],
        client_id: vec![0, 4, 7],
        elapsed: 0,
        thumbprint: THUMB_A,
        key_protector: c.kp.clone(),
    };
    let src: SocketAddr = "[fe80::1]:546".parse().unwrap();
    let bytes = req.encode();
    let Outcome::Replied { transmit, .. } = p.handle(
        T0,
        Received {
            source: src,
            payload: &bytes,
        },
    ) else {
        panic!()
    };
    assert_eq!(transmit.destination, src);
    let Message::V6Reply(reply) = v6::decode(&transmit.payload).unwrap() else {
        panic!()
    };
    assert_eq!(reply.server_id, vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 1]);
    assert_eq!(reply.reply.open(&c.sk).unwrap(), c.ck);
}

fn dropped(p: &mut Provider, bytes: &[u8], src: SocketAddr) -> DropReason {
    match p.handle(
        T0,
        Received {
            source: src,
            payload: bytes,
        },
    ) {
        Outcome::Dropped(reason) => reason,
        other => panic!("expected a drop, got {other:?}"),
    }
}

/// `DropReason::after_recognition` says what the provider does: a request it drops at step 5
/// was recognised (phase 4 logged) first; one it drops at a cheap check never was.
#[test]
fn only_drops_after_recognition_follow_a_phase_4_line() {
    let (mut p, _) = provider();
    let addr = Ipv4Addr::new(10, 0, 4, 110);
    let (_, other_public) = key("test-b-rsa2048.pk8");
    let foreign = v4_request(&client(&other_public, 8), THUMB_A, addr).encode();
    let late = dropped(&mut p, &foreign, from(addr));
    let early = dropped(&mut p, b"not dhcp", from(addr));
    let log = p.take_log();
    let phases: Vec<Option<u8>> = log.iter().map(|l| l.message.phase()).collect();
    let reasons: Vec<bool> = log
        .iter()
        .filter_map(|l| l.message.drop_reason().map(DropReason::after_recognition))
        .collect();
    assert_eq!(phases, [Some(4), None, None], "{log:?}");
    assert_eq!(reasons, [true, false]);
    assert!(late.after_recognition() && !early.after_recognition());
}

#[test]
fn unknown_and_removed_certificates_are_dropped_and_counted() {
    let (mut p, public) = provider();
    let c = client(&public, 4);
    let addr = Ipv4Addr::new(10, 0, 4, 110);
    let other = Thumbprint::from_bytes([0xbb; 20]);
    let bytes = v4_request(&c, other, addr).encode();
    assert_eq!(
        dropped(&mut p, &bytes, from(addr)),
        DropReason::UnknownCertificate(other)
    );
    assert_eq!(p.counter("drop.unknown-certificate"), 1);

    p.remove_certificate_store();
    let bytes = v4_request(&c, THUMB_A, addr).encode();
    assert_eq!(
        dropped(&mut p, &bytes, from(addr)),
        DropReason::CertificateRemoved(THUMB_A)
    );
    let last = p.log_lines().last().unwrap();
    assert_eq!(last.level, Level::Error);
    assert!(
        last.message.to_string().contains("error condition"),
        "{}",
        last.message
    );
}

#[test]
fn subnet_policy_allows_denies_disables_and_an_invalid_file_silences_everyone() {
    let (mut p, public) = provider();
    let c = client(&public, 5);
    let inside = Ipv4Addr::new(10, 185, 250, 7);
    let outside = Ipv4Addr::new(10, 185, 251, 7);
    p.load_policy(
        T0,
        Some(&format!(
            "[SUBNETS]\nOFFICE=10.185.250.0/24\n[{THUMB_A}]\nOFFICE\n"
        )),
    );
    assert!(matches!(
        p.handle(
            T0,
            Received {
                source: from(inside),
                payload: &v4_request(&c, THUMB_A, inside).encode()
            }
        ),
        Outcome::Replied { .. }
    ));
    assert!(matches!(
        dropped(
            &mut p,
            &v4_request(&c, THUMB_A, outside).encode(),
            from(outside)
        ),
        DropReason::SubnetDenied(_)
    ));
    assert_eq!(p.counter("drop.subnet-denied"), 1);

    p.load_policy(T0, Some(&format!("[{THUMB_A}]\nDISABLED\n")));
    assert_eq!(
        dropped(
            &mut p,
            &v4_request(&c, THUMB_A, inside).encode(),
            from(inside)
        ),
        DropReason::CertificateDisabled(THUMB_A)
    );

    p.load_policy(T0, Some("[SUBNETS]\nENABLED=10.0.0.0/8\n"));
    assert_eq!(
        dropped(
            &mut p,
            &v4_request(&c, THUMB_A, inside).encode(),
            from(inside)
        ),
        DropReason::PolicyInvalid
    );
    assert!(
        p.log_lines()
            .iter()
            .any(|l| l.level == Level::Error && l.message.to_string().contains("line 2"))
    );

    p.load_policy(T0, None);
    assert!(matches!(
        p.handle(
            T0,
            Received {
                source: from(outside),
                payload: &v4_request(&c, THUMB_A, outside).encode()
            }
        ),
        Outcome::Replied { .. }
    ));
}

#[test]
fn a_stopped_service_a_missing_feature_or_an_unregistered_provider_answers_nothing() {
    let (mut p, public) = provider();
    let c = client(&public, 6);
    let addr = Ipv4Addr::new(10, 0, 4, 110);
    let bytes = v4_request(&c, THUMB_A, addr).encode();
    p.set_service_running(T0, false);
    assert_eq!(
        dropped(&mut p, &bytes, from(addr)),
        DropReason::ServiceStopped
    );
    p.set_service_running(T0, true);
    p.set_feature_installed(T0, false);
    // The feature is checked before registration: without it there is nothing registered.
    p.set_registered(T0, false);
    assert_eq!(
        dropped(&mut p, &bytes, from(addr)),
        DropReason::FeatureNotInstalled
    );
    p.set_feature_installed(T0, true);
    assert_eq!(
        dropped(&mut p, &bytes, from(addr)),
        DropReason::ProviderUnregistered
    );
    p.set_registered(T0, true);
    assert_eq!(p.counter("drop.feature-not-installed"), 1);
    assert_eq!(p.counter("drop.provider-unregistered"), 1);
    assert!(matches!(
        p.handle(
            T0,
            Received {
                source: from(addr),
                payload: &bytes
            }
        ),
        Outcome::Replied { .. }
    ));
}

#[test]
fn ordinary_dhcp_malformed_requests_and_foreign_key_protectors() {
    let (mut p, public) = provider();
    let addr = Ipv4Addr::new(10, 0, 4, 110);
    // An ordinary DHCPDISCOVER: not ours.
    let mut discover = dhcproto::v4::Message::default();
    discover
        .opts_mut()
        .insert(dhcproto::v4::DhcpOption::MessageType(
            dhcproto::v4::MessageType::Discover,
        ));
    let bytes = discover.to_vec().unwrap();
    assert_eq!(
        dropped(&mut p, &bytes, from(addr)),
        DropReason::NotNetworkUnlock
    );

    // Malformed: truncated inside option 43.
    let c = client(&public, 7);
    let full = v4_request(&c, THUMB_A, addr).encode();
    let reason = dropped(&mut p, &full[..300], from(addr));
    assert!(matches!(reason, DropReason::Malformed(_)), "{reason:?}");
    assert!(
        p.counters()
            .keys()
            .any(|k| k.starts_with("drop.malformed."))
    );

    // A key protector made for another certificate's key.
    let (_, other_public) = key("test-b-rsa2048.pk8");
    let foreign = client(&other_public, 8);
    let bytes = v4_request(&foreign, THUMB_A, addr).encode();
    assert_eq!(
        dropped(&mut p, &bytes, from(addr)),
        DropReason::Undecryptable
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_are_dropped_never_answered_never_a_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        v6 in any::<bool>(),
    ) {
        let (mut p, _) = provider();
        let src: SocketAddr = if v6 { "[fe80::1]:546".parse().unwrap() } else { "10.0.0.1:68".parse().unwrap() };
        let outcome = p.handle(T0, Received { source: src, payload: &bytes });
        prop_assert!(matches!(outcome, Outcome::Dropped(_)));
    }
}

/// The split path a multi-core shell runs: classify on the provider, the private-key operation
/// on other threads with a shared key, then complete; a job the shell cannot queue is shed and
/// counted as overloaded. Same replies, same counters as `handle`.
#[test]
fn jobs_run_on_worker_threads_and_shed_jobs_are_counted_as_overloaded() {
    use unlock_server::provider::{Classified, DecryptJob};
    fn assert_send<T: Send>() {}
    assert_send::<Box<DecryptJob>>();

    let (mut p, public) = provider();
    let clients: Vec<Client> = (0..4).map(|seed| client(&public, 100 + seed)).collect();
    let addr = Ipv4Addr::new(10, 0, 4, 110);
    let mut jobs = Vec::new();
    for c in &clients {
        let bytes = v4_request(c, THUMB_A, addr).encode();
        let Classified::Decrypt(job) = p.classify(
            T0,
            Received {
                source: from(addr),
                payload: &bytes,
            },
        ) else {
            panic!("a valid request is a decrypt job")
        };
        assert_eq!(job.source(), from(addr));
        jobs.push(job);
    }
    // A cheap drop never becomes a job.
    assert!(matches!(
        p.classify(
            T0,
            Received {
                source: from(addr),
                payload: b"junk"
            }
        ),
        Classified::Dropped(_)
    ));
    // The last job finds the queue full.
    let shed = jobs.pop().unwrap();
    assert_eq!(p.shed(T0, &shed), Outcome::Dropped(DropReason::Overloaded));
    let done: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|job| scope.spawn(move || job.run()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (done, c) in done.into_iter().zip(&clients) {
        let Outcome::Replied { transmit, .. } = p.complete(T0, done) else {
            panic!("the worker's result is a reply")
        };
        let Message::V4Reply(reply) = v4::decode(&transmit.payload).unwrap() else {
            panic!()
        };
        assert_eq!(reply.reply.open(&c.sk).unwrap(), c.ck);
    }
    assert_eq!(p.counter("replied"), 3);
    assert_eq!(p.counter("drop.overloaded"), 1);
    let log = p.take_log();
    assert!(
        log.iter()
            .any(|l| l.message.to_string().contains("overloaded"))
    );
    assert!(
        p.take_log().is_empty(),
        "take_log hands the lines over once"
    );
    assert_eq!(p.counter("replied"), 3, "counters survive take_log");
}

#[test]
fn an_unreadable_policy_file_silences_the_provider_like_an_invalid_one() {
    let (mut p, public) = provider();
    let c = client(&public, 7);
    let addr = Ipv4Addr::new(10, 0, 4, 110);
    let bytes = v4_request(&c, THUMB_A, addr).encode();
    p.policy_unreadable(T0, "stream did not contain valid UTF-8".into());
    assert_eq!(
        dropped(&mut p, &bytes, from(addr)),
        DropReason::PolicyInvalid
    );
    assert!(
        p.log_lines()
            .iter()
            .any(|l| l.level == Level::Error && l.message.to_string().contains("valid UTF-8"))
    );
    // A valid file brings it back.
    p.load_policy(T0, Some("[SUBNETS]\nLAB=10.0.4.0/24\n"));
    assert!(matches!(
        p.handle(
            T0,
            Received {
                source: from(addr),
                payload: &bytes
            }
        ),
        Outcome::Replied { .. }
    ));
}

/// The provider logs phases 4, 5 and 6 itself (recognised, decrypted, replied), over DHCPv4 and
/// DHCPv6, with the keys it decrypted: the transcript reads them from this log.
#[test]
fn phases_4_to_6_are_logged_by_the_provider_over_v4_and_v6() {
    let (mut p, public) = provider();
    let c4 = client(&public, 11);
    let addr = Ipv4Addr::new(10, 0, 4, 110);
    let bytes = v4_request(&c4, THUMB_A, addr).encode();
    let at = Duration::from_millis(1500);
    assert!(matches!(
        p.handle(
            at,
            Received {
                source: from(addr),
                payload: &bytes
            }
        ),
        Outcome::Replied { .. }
    ));
    let c6 = client(&public, 12);
    let req = v6::Request {
        xid: [0xab, 0xcd, 0xef],
        client_id: vec![0, 4, 7],
        elapsed: 0,
        thumbprint: THUMB_A,
        key_protector: c6.kp.clone(),
    };
    let bytes = req.encode();
    assert!(matches!(
        p.handle(
            at,
            Received {
                source: "[fe80::1]:546".parse().unwrap(),
                payload: &bytes
            }
        ),
        Outcome::Replied { .. }
    ));
    let lines = p.take_log();
    assert!(lines.iter().all(|l| l.at == at));
    let log: Vec<String> = lines.iter().map(|l| l.message.to_string()).collect();
    let phases: Vec<&str> = log.iter().map(|l| &l[..9]).collect();
    assert_eq!(
        phases,
        [
            "[phase 4]",
            "[phase 5]",
            "[phase 6]",
            "[phase 4]",
            "[phase 5]",
            "[phase 6]"
        ]
    );
    assert!(log[0].contains("10.0.4.110") && log[0].contains("xid 00000009"));
    assert!(log[1].contains(&format!("CK {}", c4.ck.short())));
    assert!(log[1].contains(&format!("SK {}", c4.sk.short())));
    assert!(log[2].contains("key returned to 255.255.255.255:68"));
    assert!(log[3].contains("fe80::1") && log[3].contains("xid abcdef"));
    assert!(log[4].contains(&format!("CK {}", c6.ck.short())));
    assert!(log[5].contains("key returned to [fe80::1]:546"));
}

#[test]
fn the_debug_log_records_nothing_while_it_is_off_and_the_counters_still_count() {
    let (mut p, public) = provider();
    let c = client(&public, 7);
    let addr = Ipv4Addr::new(10, 0, 4, 110);
    let bytes = v4_request(&c, THUMB_A, addr).encode();
    p.set_debug_log(T0, false);
    let before = p.log_lines().len();
    assert!(!p.debug_log_enabled());
    let handled = p.handle(
        T0,
        Received {
            source: from(addr),
            payload: &bytes,
        },
    );
    assert!(matches!(handled, Outcome::Replied { .. }));
    assert_eq!(
        dropped(&mut p, b"not dhcp", from(addr)).label(),
        "malformed.truncated"
    );
    assert_eq!(p.log_lines().len(), before, "nothing logged while off");
    assert_eq!(p.counter("replied"), 1);
    assert_eq!(p.counter("drop.malformed.truncated"), 1);
    p.set_debug_log(Duration::from_secs(5), true);
    let enabled = p.log_lines().last().expect("the switch is logged");
    assert!(
        enabled.message.to_string().contains("/e:true"),
        "{}",
        enabled.message
    );
    p.handle(
        Duration::from_secs(6),
        Received {
            source: from(addr),
            payload: &bytes,
        },
    );
    assert!(
        p.log_lines().iter().any(|l| l.message.phase() == Some(6)),
        "logged once on"
    );
    assert_eq!(p.counter("replied"), 2);
}
