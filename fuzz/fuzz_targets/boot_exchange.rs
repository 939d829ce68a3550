//! Any datagram into the boot client's Network Unlock exchange while it waits for a reply, on
//! DHCPv4 or DHCPv6 (the first input byte picks the transport). The transaction id of the input
//! is replaced by the one the client sent, so that the fuzzer reaches the reply's parsing and
//! the AES-CCM tag check (which a fuzzer cannot forge: no input may make it accept a reply).
#![no_main]

use std::net::Ipv4Addr;
use std::time::Duration;

use boot_client::exchange::{
    ExchangeOutcome, Secrets, Timers, Transport, UnlockExchange, V4Lease, V6Link,
};
use libfuzzer_sys::fuzz_target;
use nkpu::{KeyProtector, SessionKey, Thumbprint, v4};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let order = if selector & 1 == 0 {
        vec![Transport::DhcpV4, Transport::DhcpV6]
    } else {
        vec![Transport::DhcpV6, Transport::DhcpV4]
    };
    let v4 = V4Lease {
        client_mac: [2, 0, 0, 0, 0, 1],
        address: Ipv4Addr::new(10, 0, 4, 110),
        dhcp_server: Ipv4Addr::new(10, 0, 4, 97),
        options: vec![v4::LeaseOption::new(54, vec![10, 0, 4, 97]).expect("literal")],
    };
    let v6 = V6Link {
        link_local: "fe80::1".parse().expect("literal"),
        client_duid: vec![0, 4, 1, 2, 3],
    };
    let secrets = Secrets {
        thumbprint: Thumbprint::from_bytes([0x4a; 20]),
        key_protector: KeyProtector::from_halves(&[7; 128], &[9; 128]),
        session_key: SessionKey::from_bytes([5; 32]),
    };
    let mut exchange = UnlockExchange::start(
        Duration::ZERO,
        order,
        Timers::default(),
        Some(v4),
        Some(v6),
        secrets,
        Box::new(ChaCha20Rng::seed_from_u64(99)),
    );
    let Some(request) = exchange.poll_transmit() else {
        return;
    };
    let mut reply = payload.to_vec();
    let xid = match request.transport {
        Transport::DhcpV4 => 4..8,
        Transport::DhcpV6 => 1..4,
    };
    if let (Some(into), Some(sent)) = (reply.get_mut(xid.clone()), request.payload.get(xid)) {
        into.copy_from_slice(sent);
    }
    exchange.handle_datagram(Duration::from_millis(3), &reply);
    // Nobody holds SK but the client: no fuzzed reply can carry a tag that verifies.
    assert!(
        !matches!(exchange.outcome(), Some(ExchangeOutcome::Unlocked { .. })),
        "a reply forged without SK was accepted"
    );
    while exchange.poll_event().is_some() {}
    exchange.handle_timeout(Duration::from_secs(30));
});
